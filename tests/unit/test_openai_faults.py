"""The openai backends against a real HTTP server on 127.0.0.1 that injects faults on demand.

Retries with backoff for 429/5xx/timeouts/malformed bodies, none for a 400, a clear error
at configuration time for a server without prompt log-probs, a bound on requests in
flight, and a search run that records one item's failure without losing the others.
"""

from __future__ import annotations

import threading

import polars as pl
import pytest

from reer_assets.backends.config import BackendSpec
from reer_assets.backends.openai_compat import (
    BackendCallError,
    OpenAIClient,
    OpenAIGenerator,
    OpenAIScorer,
    ScorerConfigError,
)
from reer_assets.core.protocols import GenerationRequest, Sampling, ScoreRequest
from tests.support.fault_server import FaultServer

pytestmark = pytest.mark.model  # the scorer tokenizes with the embedded model's tokenizer


@pytest.fixture
def server():
    srv = FaultServer(slow_s=1.5).start()
    yield srv
    srv.stop()


def _client(server, **kw) -> OpenAIClient:
    settings = dict(base_url=server.base_url, max_attempts=3, backoff_s=0.01, backoff_max_s=0.05, timeout_s=5.0)
    settings.update(kw)
    return OpenAIClient(BackendSpec(**{"backend": "openai", **settings}))


def _request(marker: str = "plain", n: int = 1) -> GenerationRequest:
    return GenerationRequest([{"role": "user", "content": f"Write about rain. {marker}"}], "<think>\n", n,
                             Sampling(max_tokens=32), seed=1)


@pytest.mark.parametrize("fault", ["429", "500", "503", "408", "truncated"])
def test_transient_faults_are_retried_then_succeed(server, fault):
    server.on("FLAKY", fault, fault, "ok")
    client = _client(server)
    completions = OpenAIGenerator(client, "m").generate([_request("FLAKY", n=2)])[0]
    assert len(completions) == 2 and "</think>" in completions[0].text
    assert server.count(path="chat") == 3 and client.usage.retries == 2
    assert client.usage.completion_tokens == 150


def test_timeout_is_retried(server):
    server.on("STALL", "slow", "ok")
    client = _client(server, timeout_s=0.5)
    assert OpenAIGenerator(client, "m").generate([_request("STALL")])[0][0].text
    assert client.usage.errors == {"timeout": 1} and client.usage.retries == 1


def test_persistent_failure_raises_with_error_class_after_last_attempt(server):
    server.on("DOWN", "500")
    client = _client(server)
    with pytest.raises(BackendCallError) as info:
        OpenAIGenerator(client, "m").generate([_request("DOWN")])
    assert info.value.error_class == "http_500" and info.value.attempts == 3
    assert server.count(path="chat") == 3 and client.usage.failures == 1


def test_permanent_errors_are_not_retried(server):
    server.on("TOO-LONG", "400")
    client = _client(server)
    with pytest.raises(BackendCallError) as info:
        OpenAIGenerator(client, "m").generate([_request("TOO-LONG")])
    assert info.value.error_class == "http_400" and server.count(path="chat") == 1


def test_requests_in_flight_are_bounded(server):
    server.on("WAIT", "slow")
    server.slow_s = 0.3
    client = _client(server, max_in_flight=2)
    generator = OpenAIGenerator(client, "m")
    results = generator.generate([_request(f"WAIT {i}") for i in range(6)])
    assert len(results) == 6 and server.max_in_flight_seen == 2


def test_in_flight_bound_holds_across_threads(server):
    server.on("WAIT", "slow")
    server.slow_s = 0.3
    client = _client(server, max_in_flight=3)
    generator = OpenAIGenerator(client, "m")
    threads = [threading.Thread(target=generator.generate, args=([_request(f"WAIT {i}"), _request(f"WAIT x{i}")],))
               for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert server.count(path="chat") == 8 and server.max_in_flight_seen == 3


def test_scorer_refuses_a_server_without_prompt_logprobs(server, embedded_path):
    server.on('"prompt_logprobs"', "no_logprobs")
    with pytest.raises(ScorerConfigError, match="REER_SCORER_BASE_URL"):
        OpenAIScorer(_client(server, tokenizer=str(embedded_path)), "m")


def test_scorer_reads_prompt_logprobs_of_the_continuation_only(server, embedded_path):
    scorer = OpenAIScorer(_client(server, tokenizer=str(embedded_path)), "m")
    request = ScoreRequest([{"role": "user", "content": "Write about rain."}], "<think>\nplan\n</think>\n<answer>\n",
                           "Rain on the roof, all night long.")
    result = scorer.score([request, request])
    ids, first = __import__("reer_assets.backends.scored_span", fromlist=["x"]).score_tokens(scorer.tokenizer, request)
    assert result[0].context_tokens == first and len(result[0].token_logprobs) == len(ids) - first
    assert result[0].token_logprobs == result[1].token_logprobs
    assert server.count(path="/completions") == 2  # the config-time check, then one request for both


def test_search_records_a_failed_item_and_keeps_the_others(server, embedded_path, tmp_path, monkeypatch):
    from reer_assets.workloads import refinement as workload

    server.on("ITEM-DOWN", "500")
    server.on("ITEM-FLAKY", "429", "ok")
    for role in ("GENERATOR", "SCORER"):
        monkeypatch.setenv(f"REER_{role}_BACKEND", "openai")
        monkeypatch.setenv(f"REER_{role}_BASE_URL", server.base_url)
        monkeypatch.setenv(f"REER_{role}_TOKENIZER", str(embedded_path))
        monkeypatch.setenv(f"REER_{role}_MAX_ATTEMPTS", "2")
    reference = ("The rain came early that year, and the gutters sang all evening while we cooked.\n\n"
                 "By morning the street was a river of leaves, and the children walked to school barefoot.")
    queries = pl.DataFrame([
        {"id": f"q{i}", "document_id": f"d{i}", "domain": "test", "status": "accepted",
         "query": f"Write a short piece about rain. {marker}", "reference": reference}
        for i, marker in enumerate(["ITEM-OK", "ITEM-DOWN", "ITEM-FLAKY"])
    ])
    queries.write_parquet(tmp_path / "queries.parquet")
    outputs = {name: str(tmp_path / "out" / f"{name}.parquet") for name in ("trajectories", "search_steps", "candidates")}
    extras = {"queries": str(tmp_path / "queries.parquet"), "outputs": outputs,
              "work": str(tmp_path / "work"), "config_hash": "h", "generator_id": "openai:g", "scorer_id": "openai:s",
              "config": {"search": {"max_step": 1, "num_expansion": 2, "stop_thresh": 0.0, "max_tokens": 64,
                                    "num_rollouts": 1}, "seed": 0}}
    summary = workload.run(extras, lambda message: None)
    assert summary["failed"] == 1 and summary["made"] == 2
    rows = {r["query_id"]: r for r in pl.read_parquet(tmp_path / "out/trajectories.parquet").iter_rows(named=True)}
    assert rows["q1"]["status"] == "failed" and rows["q1"]["reject_reason"].startswith("http_500")
    for ok in ("q0", "q2"):
        assert rows[ok]["status"] == "ok" and rows[ok]["completion_tokens"] > 0 and rows[ok]["scored_tokens"] > 0  # > 0: the exact count depends on what the model writes
    # the server recovers: a re-run redoes only the failed item
    server.rules.clear()
    summary = workload.run(extras, lambda message: None)
    assert (summary["made"], summary["reused"], summary["failed"]) == (1, 2, 0)


def test_served_model_lookup_does_not_deadlock_with_one_slot(server, embedded_path):
    """With no model named, the client asks the server; that lookup must not wait for the slot the scorer holds."""
    client = _client(server, tokenizer=str(embedded_path), max_in_flight=1, model=None)
    result = {}
    thread = threading.Thread(target=lambda: result.update(scorer=OpenAIScorer(client, "m")), daemon=True)
    thread.start()
    thread.join(timeout=20)
    assert not thread.is_alive(), "the scorer hung waiting for its own in-flight slot"
    assert client.model == "fake-model"
