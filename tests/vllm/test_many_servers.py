"""Several model servers per role, against real vLLM servers on loopback.

* ``refined_trajectories`` of a small domain is searched through two servers (the session's and one
  more), and the second is killed (SIGKILL of its process group) while items are in flight: every item
  finishes, none is searched twice, and the outputs equal a run through one server with the same seed
  (ids, statuses, final thinkings; scores within ``SCORE_TOLERANCE``). The per-server counters in the
  asset's metadata show the traffic each server took and the set-aside.
* A list whose first server is dead from the start (a closed port): scoring goes through the second.

Starting a vLLM server costs half a minute or more on two cores: the session's ``vllm_server`` is one
of the two and only one more is started here.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import polars as pl
import pytest

from tests.support.tiny_domain import materializer, metadata, write_domains_file
from tests.support.traces import SCORE_TOLERANCE

pytestmark = [pytest.mark.model, pytest.mark.vllm, pytest.mark.slow]
PIECES = 8
RUN_CONFIG = {"refined_trajectories": {"max_step": 1, "item_concurrency": 4}}
KILL_AT = 4  # the second server is killed as the 4th request is routed to it (3 went out before)


@pytest.fixture(scope="module")
def second_server_starting(embedded_path, tmp_path_factory):
    """The second server, started in a thread, so that its start overlaps the session server's when
    that one is not up yet; :func:`second_server` waits for it."""
    from concurrent.futures import ThreadPoolExecutor

    from reer_assets.backends.vllm_server import start_vllm_server

    log_path = tmp_path_factory.mktemp("vllm_b") / "server.log"
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(start_vllm_server, str(embedded_path), None, log_path)
        try:
            yield future
        finally:
            future.result().stop()


@pytest.fixture(scope="module")
def second_server(second_server_starting, vllm_server, embedded_path):
    from reer_assets.backends.config import BackendSpec
    from reer_assets.backends.openai_compat import OpenAIClient, OpenAIGenerator, OpenAIScorer
    from reer_assets.core.protocols import GenerationRequest, Sampling, ScoreRequest

    server = second_server_starting.result()
    # a fresh server's first requests are slow; least-in-flight routing would send it almost nothing
    client = OpenAIClient(BackendSpec(backend="openai", base_url=server.base_url, tokenizer=str(embedded_path)))
    OpenAIGenerator(client, "warm-up").generate([GenerationRequest(
        [{"role": "user", "content": "Write about rain."}], "<think>\n", 2, Sampling(max_tokens=64), seed=1)])
    OpenAIScorer(client, "warm-up").score([ScoreRequest([{"role": "user", "content": "Rain."}], "", "It rains.")])
    return server


def search_domain(home, domains_file, base_url: str, model: str) -> dict:
    """raw_documents -> refined_trajectories of the small domain with both roles on ``base_url``."""
    from reer_assets.defs.resources import LineageResource, WorkloadRunner, backend_resource

    env = {"DAGSTER_HOME": str(home), "REER_DOMAINS_FILE": str(domains_file), "REER_PROFILE": "test"}
    for role in ("GENERATOR", "SCORER"):
        env.update({f"REER_{role}_BACKEND": "openai", f"REER_{role}_BASE_URL": base_url, f"REER_{role}_MODEL": model,
                    f"REER_{role}_MAX_IN_FLIGHT": "4", f"REER_{role}_BACKOFF_S": "0.2"})
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        for name in ("REER_LINEAGE_DB", "REER_STORAGE_ROOT", "REER_LINEAGE_MODE"):
            patch.delenv(name, raising=False)
        resources = {"generator": backend_resource("generator"), "scorer": backend_resource("scorer"),
                     "lineage": LineageResource(), "runner": WorkloadRunner(mode="in_process")}
        materialize = materializer(resources, run_config=RUN_CONFIG)
        materialize("raw_documents")
        materialize("synthesized_queries")
        started = time.perf_counter()
        meta = metadata(materialize("refined_trajectories"), "refined_trajectories")
        seconds = time.perf_counter() - started  # printed, never asserted
        frame = pl.read_parquet(home / "reer/assets/refined_trajectories/education/trajectories.parquet")
    return {"meta": meta, "frame": frame.sort("id"), "seconds": seconds}


@pytest.fixture(scope="module")
def runs(second_server, vllm_server, embedded_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("many_servers")
    domains = write_domains_file(root, pieces=PIECES)
    one = search_domain(root / "one", domains, vllm_server.base_url, str(embedded_path))
    killed: dict = {}
    from reer_assets.backends.openai_compat import OpenAIClient, _public_url

    route, once = OpenAIClient._acquire, threading.Lock()
    routed = {"second": 0}  # requests routed to the second server, by the generator's and the scorer's clients

    def route_then_kill(client):
        """Routing as usual; the KILL_AT-th request routed to the second server (counted over both roles'
        clients) is the moment: SIGKILL its process group before that request goes out, so it (and any
        other still in flight there) meets a dead server. An event in the request path, not a moment read
        off a clock; about a dozen of the run's two dozen requests go to the second server, so it comes."""
        server = route(client)
        url = second_server.base_url
        with once:
            if not killed and _public_url(server.url) == url:
                routed["second"] += 1
                if routed["second"] == KILL_AT:
                    killed.update(routed_before=KILL_AT - 1, answered_before=client.usage.servers[url]["requests"],
                                  in_flight=server.in_flight)
                    os.killpg(second_server.process.pid, signal.SIGKILL)
                    second_server.process.wait(timeout=30)
                    killed["at"] = time.perf_counter()
        return server

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(OpenAIClient, "_acquire", route_then_kill)
        two = search_domain(root / "two", domains, f"{vllm_server.base_url},{second_server.base_url}",
                            str(embedded_path))
    return {"one": one, "two": two, "killed": killed, "urls": (vllm_server.base_url, second_server.base_url)}


def test_a_server_killed_mid_run_loses_no_item_and_changes_no_output(runs):
    one, two, killed = runs["one"], runs["two"], runs["killed"]
    print(f"one server: {one['seconds']:.1f}s, two servers (one killed): {two['seconds']:.1f}s; killed {killed}")
    assert killed.get("at"), ("the second server was never killed", runs["two"]["meta"]["workload"].get("servers"))
    assert one["frame"].height == two["frame"].height == PIECES
    # every item finished, once
    for run in (one, two):
        work = run["meta"]["workload"]
        assert work["made"] == PIECES and work["failed"] == 0 and work["reused"] == 0, work
        assert run["frame"]["id"].n_unique() == PIECES
        assert set(run["frame"]["status"]) <= {"ok", "rejected"}
    assert (two["frame"]["status"] == "ok").sum() >= 1
    # the same outputs as through one server
    a, b = one["frame"], two["frame"]
    assert a["id"].to_list() == b["id"].to_list()
    assert a["status"].to_list() == b["status"].to_list()
    assert a["final_thinking"].to_list() == b["final_thinking"].to_list()
    assert a["initial_thinking"].to_list() == b["initial_thinking"].to_list()
    for column in ("initial_score", "final_score"):
        for x, y in zip(a[column].to_list(), b[column].to_list()):
            assert (x is None and y is None) or abs(x - y) <= SCORE_TOLERANCE, (column, x, y)
    # both servers took traffic, the killed one was set aside, its requests in flight went to the other
    servers = two["meta"]["workload"]["servers"]
    first, second = (servers[url.rstrip("/")] for url in runs["urls"])
    # the three routed before the kill and the one that met the dead server, at least (retries count too)
    assert second["requests"] >= KILL_AT and killed["in_flight"] >= 1, (servers, killed)
    assert second["set_asides"] >= 1 and second["failures"] >= 1, servers
    assert first["requests"] > second["requests"] and first["set_asides"] == 0 and first["failures"] == 0, servers
    assert two["meta"]["workload"]["failovers"] >= 1, two["meta"]["workload"]


def test_a_dead_first_server_scoring_goes_through_the_second(vllm_server, embedded_path):
    from reer_assets.backends.config import BackendSpec
    from reer_assets.backends.openai_compat import OpenAIClient, OpenAIScorer
    from reer_assets.backends.vllm_server import free_port
    from reer_assets.core.objective import score_of
    from reer_assets.core.protocols import ScoreRequest

    dead = f"http://127.0.0.1:{free_port()}/v1"  # a closed port: nothing listens there
    request = ScoreRequest([{"role": "user", "content": "Write a short note about rain."}],
                           "<think>\nI will describe the sound first.\n</think>\n", "Rain taps on the roof all night.")
    both = OpenAIClient(BackendSpec(backend="openai", base_url=f"{dead},{vllm_server.base_url}",
                                    tokenizer=str(embedded_path), backoff_s=0.05))
    alone = OpenAIClient(BackendSpec(backend="openai", base_url=vllm_server.base_url, tokenizer=str(embedded_path)))
    through_second = OpenAIScorer(both, "openai").score([request] * 3)
    reference = OpenAIScorer(alone, "openai").score([request] * 3)
    assert [score_of(r) for r in through_second] == pytest.approx([score_of(r) for r in reference], abs=SCORE_TOLERANCE)
    assert len(through_second[0].token_logprobs) > 3
    servers = both.usage.servers
    assert servers[dead]["set_asides"] >= 1 and servers[dead]["requests"] == 0, servers
    assert servers[vllm_server.base_url]["requests"] >= 2 and servers[vllm_server.base_url]["failures"] == 0, servers
    # no retry (and so no back-off wait) was spent on the dead server: counted, not timed
    assert both.usage.failures == 0 and both.usage.retries == 0, both.usage
