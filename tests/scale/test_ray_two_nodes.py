"""REER_WORKLOAD_RUNNER=ray on a two-node Ray cluster on this machine, with token authentication on.

The module's cluster: a head (``ray start --head``) and a second node (``ray start --address``), each
with its own loopback address (127.0.0.2, 127.0.0.3), ports and process group, one CPU each and a custom
resource that only it offers (``reer_head_node``, ``reer_worker_node``), both with ``RAY_AUTH_MODE=token``
and a token made for the module. They share the head's temporary folder, as the nodes of a real cluster
use the same path on their own machines (``start_ray_worker`` says why it matters: the job logs, and
with them the Pipes messages, of a job on the second node). A shard's Ray job reserves one CPU, so two shards in flight at once cannot share a node.
Both roles run on the tests' fault server (``MAX_IN_FLIGHT=1``: a shard's items go one after another).
A first test starts a head of its own with a token file in the home folder Ray starts from: the
conftest's explicit auth mode keeps it from enforcing that token. Every moment a test acts on is an
event, never a sleep: the fault server holds open a request whose body
holds a given item's query (``FaultServer.hold``), and the test acts once it has arrived.

* placement and token: both shards' first requests are held until both have arrived (so both jobs are
  running at once); Ray's job info then says each ran on another node. The runner took the token from
  ``RAY_AUTH_TOKEN`` in the step's environment (a client without it is refused), and the token is in no
  job's entrypoint, runtime env or metadata, no Dagster log line and no materialisation metadata.
* cancel: with both shards held mid-item, the Dagster run is terminated as Dagster terminates a run
  (marked CANCELING, then the run's process interrupted, which is what the code server does on
  "Terminate"): the run ends CANCELED, and both Ray jobs end STOPPED.
* node kill: with both shards held part-way (a shard's second item asked for, its first checkpointed),
  the second node's process group (raylet, agents, workers, the shard's workload) gets SIGKILL. The
  shard on that node fails (``ray_job_failed``), the other finishes; the step fails naming the shard, and
  the rerun (on the head alone, the token now read from ``RAY_AUTH_TOKEN_PATH``) completes with every
  item once in Parquet and lineage.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from reer_assets.runtime.runner import WorkloadRunner
from reer_assets.runtime.runners.ray import RayRunnerSettings
from reer_assets.workloads.refinement import shard_of
from tests.reliability.conftest import tiny_pieces
from tests.scale.conftest import (Project, RayHead, RayWorker, _tree, pipes_extras, refined_metadata,
                                  start_ray_head, start_ray_worker, stop_ray_head, workload_processes)
from tests.scale.test_ray_runner import _marker
from tests.support.fault_server import FaultServer

pytestmark = [pytest.mark.ray, pytest.mark.model, pytest.mark.slow]

ITEMS, SHARDS = 4, 2
HEAD_RESOURCE, WORKER_RESOURCE = "reer_head_node", "reer_worker_node"
# Ray turns 127.0.0.1 into the machine's address; other loopback addresses stay loopback, one per node
HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
# a dead node is noticed after 3 failed health checks a second apart, not Ray's default of about 30 s. A killed
# raylet's port refuses the check at once, so the 5 s answer timeout delays nothing here; it only spares a live
# raylet starved of CPU by the other test workers (a 1 s timeout could count it dead three seconds in a row)
FAST_HEALTH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "5000",
               "RAY_health_check_failure_threshold": "3"}
SMALL_STORE = ("--object-store-memory", "100000000")  # no object is stored; keep /dev/shm free
EVENT_BOUND_S = 300.0  # a bound on waiting for a held request or a job state; the test then fails


@dataclass
class Cluster:
    head: RayHead
    worker: RayWorker
    root: Path
    token: str

    def ensure_worker(self) -> None:
        """A live second node (a test that killed it leaves it dead)."""
        if self.worker.process.poll() is None:
            return
        self.worker = start_ray_worker(self.head, self.root, WORKER_RESOURCE, extra_env=FAST_HEALTH,
                                       extra_args=SMALL_STORE, node_ip=WORKER_IP)

    def node_of(self, resource: str) -> str:
        return next(n["node_id"] for n in self.head.nodes() if n["state"] == "ALIVE"
                    and resource in (n.get("resources_total") or {}))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray_two_nodes")
    token = secrets.token_urlsafe(32)
    started = time.monotonic()
    head = start_ray_head(root, num_cpus=1, resources={HEAD_RESOURCE: 1}, token=token, extra_env=FAST_HEALTH,
                          extra_args=SMALL_STORE, node_ip=HEAD_IP)
    try:
        worker = start_ray_worker(head, root, WORKER_RESOURCE, extra_env=FAST_HEALTH, extra_args=SMALL_STORE,
                                  node_ip=WORKER_IP)
    except BaseException:
        stop_ray_head(head)
        shutil.rmtree(head.temp_dir, ignore_errors=True)
        raise
    print(f"\ntwo-node Ray cluster at {head.address} (token auth) up in {time.monotonic() - started:.1f}s")
    state = Cluster(head, worker, root, token)
    try:
        yield state
    finally:
        for node in (state.worker, state.head):
            stop_ray_head(node)
        shutil.rmtree(head.temp_dir, ignore_errors=True)  # the second node's too


def _runner(cluster: Cluster) -> WorkloadRunner:
    # nothing about the token in the settings: the runner reads it from the step's environment
    return WorkloadRunner(mode="ray", ray=RayRunnerSettings(address=cluster.head.address, poll_interval_s=0.5))


def _prepared(root: Path, server: FaultServer, tokenizer: Path, attempts: int = 6):
    """A Project whose queries fall in both shards (ids depend on the instance folder, so a new folder
    gives a new split): raw documents and queries made in process, so only the search runs on Ray."""
    for attempt in range(attempts):
        (root / f"p{attempt}").mkdir()
        project = Project(root / f"p{attempt}", server, tokenizer, MAX_IN_FLIGHT="1")
        upstream = project.materialize(tiny_pieces(ITEMS), SHARDS, WorkloadRunner(mode="in_process"),
                                       names=("raw_documents", "synthesized_queries"))
        assert upstream.success
        ids = list(project.queries()["id"])
        by_shard = {s: [q for q in ids if shard_of(q, SHARDS) == s] for s in range(SHARDS)}
        if all(by_shard.values()):
            return project, by_shard
        project.close()
    raise AssertionError(f"no split with both shards non-empty in {attempts} instance folders")


def _hold_per_shard(server: FaultServer, project: Project, by_shard: dict, second: bool) -> dict:
    """One held request per shard: the first about its second item (``second`` and the shard has one;
    the shard is then part-way, its first item checkpointed), else about its first item."""
    queries = project.queries()
    texts = dict(zip(queries["id"], queries["query"]))
    holds = {}
    for s, items in by_shard.items():
        item = items[1] if second and len(items) > 1 else items[0]
        holds[s] = server.hold(marker=_marker(texts[item], [t for q, t in texts.items() if q != item]))
    return holds


def _wait_all(holds: dict, stop: threading.Event) -> bool:
    deadline = time.monotonic() + EVENT_BOUND_S
    while not stop.is_set() and time.monotonic() < deadline:
        if all(h.wait(timeout=0.5) for h in holds.values()):  # bounded waits, to see whether the run ended
            return True
    return False


def _running_shard_jobs(head: RayHead) -> dict[int, object]:
    """The refinement shards' jobs now RUNNING, by shard index (from the submission id ``...-shard<i>of<N>-``)."""
    out = {}
    for job in head.jobs():
        sid = job.submission_id or ""
        if str(job.status) == "RUNNING" and sid.startswith("reer-refinement-shard"):
            out[int(sid.split("-shard", 1)[1].split("of", 1)[0])] = job
    return out


def _run_jobs(head: RayHead, logs: list[str]) -> list:
    text = "\n".join(logs)
    return [j for j in head.jobs() if j.submission_id and j.submission_id in text]


def _wait_status(head: RayHead, ids: list[str], wanted: str) -> dict[str, str]:
    deadline = time.monotonic() + EVENT_BOUND_S
    while True:
        status = {j.submission_id: str(j.status) for j in head.jobs() if j.submission_id in ids}
        if all(status.get(i) == wanted for i in ids) or time.monotonic() > deadline:
            return status
        time.sleep(0.5)  # wait: a polling interval of a bounded wait for Ray to record the jobs' end


def _failure_message(result) -> str:
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return failure.event_specific_data.error.message


@pytest.fixture
def fault_server():
    server = FaultServer().start()
    yield server
    server.stop()


def test_a_token_left_in_the_users_home_does_not_change_a_test_head(tmp_path):
    """A ``~/.ray/auth_token`` (what a plain ``ray.init()`` of Ray 2.60 leaves) makes a node whose auth mode
    is unset enforce that token, and every client without it fails (``Authentication required``). The
    conftest's heads set the mode explicitly, so with such a file in the home folder Ray starts from, a
    client without a token still gets in."""
    from ray.job_submission import JobSubmissionClient

    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_urlsafe(24))
    head = start_ray_head(tmp_path, num_cpus=1, extra_env={"HOME": str(home)}, extra_args=SMALL_STORE)
    try:
        assert JobSubmissionClient(head.address).list_jobs() == []
    finally:
        stop_ray_head(head)
        shutil.rmtree(head.temp_dir, ignore_errors=True)


def test_shards_run_on_both_nodes_with_the_token_from_the_environment_and_nowhere_else(
        cluster, fault_server, tmp_path, embedded_path, monkeypatch):
    cluster.ensure_worker()
    monkeypatch.setenv("RAY_AUTH_TOKEN", cluster.token)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    project, by_shard = _prepared(tmp_path, fault_server, embedded_path)
    try:
        holds = _hold_per_shard(fault_server, project, by_shard, second=False)
        seen: dict = {}
        stop = threading.Event()

        def both_at_once():  # both shards mid-request: their jobs run at the same time
            try:
                if _wait_all(holds, stop):
                    seen["running"] = {s: j.driver_node_id for s, j in _running_shard_jobs(cluster.head).items()}
            finally:
                for hold in holds.values():
                    hold.release()

        watcher = threading.Thread(target=both_at_once, daemon=True)
        watcher.start()
        result = project.materialize(tiny_pieces(ITEMS), SHARDS, _runner(cluster))
        stop.set()
        watcher.join(timeout=10)
        assert result.success
        head_id, worker_id = cluster.node_of(HEAD_RESOURCE), cluster.node_of(WORKER_RESOURCE)
        assert head_id != worker_id
        # while both held a request, the two shards' jobs ran at once, one on each node
        assert sorted(seen.get("running", {})) == [0, 1], seen
        assert set(seen["running"].values()) == {head_id, worker_id}, (seen, head_id, worker_id)

        logs = project.logs(result.run_id)
        jobs = [j for j in _run_jobs(cluster.head, logs) if j.submission_id.startswith("reer-refinement-shard")]
        assert len(jobs) == SHARDS and all(str(j.status) == "SUCCEEDED" for j in jobs), jobs
        placed = {int(j.submission_id.split("-shard", 1)[1].split("of", 1)[0]): j.driver_node_id for j in jobs}
        assert placed == seen["running"], (placed, seen)
        nodes = {n["node_id"]: n for n in cluster.head.nodes()}
        where = {s: ("head" if nodes[n]["is_head_node"] else "worker",
                     [r for r in (HEAD_RESOURCE, WORKER_RESOURCE) if r in nodes[n]["resources_total"]])
                 for s, n in placed.items()}
        assert sorted(w[0] for w in where.values()) == ["head", "worker"], where
        assert sorted(r for w in where.values() for r in w[1]) == [HEAD_RESOURCE, WORKER_RESOURCE], where

        # every item once, all searched, in Parquet and in lineage; each shard searched its own items
        for table in (project.trajectories(), project.lineage()):
            assert table.height == ITEMS and table["id"].n_unique() == ITEMS
            assert (table["status"] == "ok").all()
        # each shard's log lines and summary came back through Pipes, from either node
        for s in range(SHARDS):
            assert f"shard {s + 1} of {SHARDS}: {len(by_shard[s])} items" in logs
        workload = refined_metadata(result)["workload"]
        assert [(s["status"], s["items"], s["made"]) for s in workload["shard_runs"]] == [
            ("ok", len(by_shard[s]), len(by_shard[s])) for s in range(SHARDS)]
        assert {n["node_ip"] for n in nodes.values()} == {HEAD_IP, WORKER_IP}

        # the token: enforced by the cluster, sent by the runner, written nowhere
        from ray.exceptions import AuthenticationError
        from ray.job_submission import JobSubmissionClient

        with pytest.raises(AuthenticationError, match="Authentication required"):
            JobSubmissionClient(cluster.head.address).list_jobs()
        for job in jobs:
            submitted = json.dumps({"entrypoint": job.entrypoint, "runtime_env": job.runtime_env,
                                    "metadata": job.metadata})
            assert cluster.token not in submitted and "RAY_AUTH" not in submitted
            assert job.runtime_env["env_vars"]["REER_GENERATOR_BACKEND"] == "openai"  # the env did travel
        assert not [line for line in logs if cluster.token in line]
        assert cluster.token not in json.dumps(refined_metadata(result), default=str)
        print(f"\nshards on nodes: { {s + 1: where[s][0] for s in sorted(where)} }; items per shard "
              f"{[len(by_shard[s]) for s in range(SHARDS)]}")
    finally:
        project.close()


def test_a_run_terminated_from_dagster_stops_its_ray_jobs(cluster, fault_server, tmp_path, embedded_path,
                                                        monkeypatch):
    import dagster as dg

    cluster.ensure_worker()
    monkeypatch.setenv("RAY_AUTH_TOKEN", cluster.token)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    project, by_shard = _prepared(tmp_path, fault_server, embedded_path)
    try:
        holds = _hold_per_shard(fault_server, project, by_shard, second=False)
        report: dict = {}
        stop = threading.Event()

        def terminate():
            """What Dagster does on "Terminate": the run launcher marks the run CANCELING, and the code server
            interrupts the run's process (SIGINT); here the run's process is this one."""
            try:
                if not _wait_all(holds, stop):
                    report["error"] = "the held requests never all arrived"
                    return
                report["jobs"] = {s: j.submission_id for s, j in _running_shard_jobs(cluster.head).items()}
                runs = project.instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
                assert len(runs) == 1, runs
                project.instance.report_run_canceling(runs[0])
                report["run_id"] = runs[0].run_id
                os.kill(os.getpid(), signal.SIGINT)
                report["stopped"] = _wait_status(cluster.head, list(report["jobs"].values()), "STOPPED")
            finally:
                for hold in holds.values():
                    hold.release()

        watcher = threading.Thread(target=terminate, daemon=True)
        watcher.start()
        result = project.materialize(tiny_pieces(ITEMS), SHARDS, _runner(cluster))
        watcher.join(timeout=EVENT_BOUND_S + 30)
        stop.set()
        assert "error" not in report and report.get("run_id") == result.run_id, report
        assert project.instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.CANCELED
        assert sorted(report["jobs"]) == [0, 1], report
        assert set(report["stopped"].values()) == {"STOPPED"}, report
        logs = "\n".join(project.logs(result.run_id))
        assert "interrupted while shards ran; stopped Ray jobs" in logs
        for job_id in report["jobs"].values():
            assert job_id in logs.split("stopped Ray jobs", 1)[1]
        # the stopped jobs' workloads are gone, and the shard threads have ended with their jobs
        home = str(project.root / "home")
        deadline = time.monotonic() + EVENT_BOUND_S
        while time.monotonic() < deadline and (
                [p for p in workload_processes() if pipes_extras(p).get("__home") == home]
                or [t for t in threading.enumerate() if t.name.startswith("reer-shard")]):
            time.sleep(0.5)  # wait: a polling interval of a bounded wait for processes and threads to end
        assert not [p for p in workload_processes() if pipes_extras(p).get("__home") == home]
        assert not [t for t in threading.enumerate() if t.name.startswith("reer-shard")]
        print(f"\nterminated run {result.run_id[:8]}: Ray jobs {report['stopped']}")
    finally:
        project.close()


def test_a_killed_node_fails_its_shard_and_the_rerun_completes_without_loss_or_duplicates(
        cluster, fault_server, tmp_path, embedded_path, monkeypatch):
    cluster.ensure_worker()
    token_file = tmp_path / "ray_token"
    token_file.write_text(cluster.token + "\n")
    token_file.chmod(0o600)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
    project, by_shard = _prepared(tmp_path, fault_server, embedded_path)
    try:
        holds = _hold_per_shard(fault_server, project, by_shard, second=True)
        worker_id = cluster.node_of(WORKER_RESOURCE)
        report: dict = {}
        stop = threading.Event()

        def kill_the_node():
            try:
                if not _wait_all(holds, stop):
                    report["error"] = "the held requests never all arrived"
                    return
                jobs = _running_shard_jobs(cluster.head)
                victim = next((s for s, j in jobs.items() if j.driver_node_id == worker_id), None)
                if victim is None:
                    report["error"] = f"no shard's job on the second node: {jobs}"
                    return
                report.update(victim=victim, job=jobs[victim].submission_id, finished_at_kill=project.finished())
                home = str(project.root / "home")
                node = {p.pid for p in _tree(cluster.worker.process.pid)}
                report["workload_on_node"] = [
                    p.pid in node for p in workload_processes()
                    if pipes_extras(p).get("__home") == home and (pipes_extras(p).get("shard") or {}).get("index") == victim]
                stop_ray_head(cluster.worker)  # SIGKILL to the node's process group and everything under it
                report["killed"] = True
            finally:
                for hold in holds.values():
                    hold.release()

        watcher = threading.Thread(target=kill_the_node, daemon=True)
        watcher.start()
        first = project.materialize(tiny_pieces(ITEMS), SHARDS, _runner(cluster), config={"max_failure_rate": 0.0})
        stop.set()
        watcher.join(timeout=30)
        assert report.get("killed") and "error" not in report, report
        victim, survivor = report["victim"], 1 - report["victim"]
        assert report["workload_on_node"] == [True], report  # the shard's workload ran on the killed node
        expected_done = set(by_shard[victim][:1]) if len(by_shard[victim]) > 1 else set()
        assert set(report["finished_at_kill"].values()) & set(by_shard[victim]) == expected_done, report
        lost = set(by_shard[victim]) - expected_done

        assert not first.success
        message = _failure_message(first)
        assert f"Shard {victim + 1} of {SHARDS} failed: ray_job_failed" in message, message
        assert "above max_failure_rate=0.0" in message, message
        status = {j.submission_id: str(j.status) for j in cluster.head.jobs()}
        assert status[report["job"]] == "FAILED", status
        frame, rows = project.trajectories(), project.lineage()
        for table in (frame, rows):  # every item once; the killed shard's unfinished items as failed rows
            assert table.height == ITEMS and table["id"].n_unique() == ITEMS
            by_status = dict(zip(table["query_id"], table["status"]))
            assert {q for q, s in by_status.items() if s == "failed"} == lost, by_status
            failed = table.filter(pl.col("status") == "failed")["reject_reason"]
            assert failed.str.starts_with(f"ray_job_failed: shard {victim + 1} of {SHARDS} (ray runner)").all()
        assert set(by_shard[survivor]) <= {q for q, s in zip(frame["query_id"], frame["status"]) if s == "ok"}

        # the rerun, on the head alone (the second node stays dead): nothing lost, nothing twice
        checkpointed = len(project.finished())
        second = project.materialize(tiny_pieces(ITEMS), SHARDS, _runner(cluster))
        assert second.success
        frame2, rows2 = project.trajectories(), project.lineage()
        for table in (frame2, rows2):
            assert table.height == ITEMS and table["id"].n_unique() == ITEMS
            assert (table["status"] == "ok").all()
        assert set(frame2["id"]) == set(rows2["id"]) == set(frame["id"])
        assert set(rows2["run_id"]) == {second.run_id}
        workload = refined_metadata(second)["workload"]
        assert (workload["reused"], workload["made"], workload["failed"]) == (checkpointed, ITEMS - checkpointed, 0)
        steps = project.lineage("search_steps")
        assert steps["id"].n_unique() == steps.height
        print(f"\nkilled the second node under shard {victim + 1} ({len(by_shard[victim])} items, "
              f"{len(expected_done)} checkpointed); rerun reused {workload['reused']}, made {workload['made']}")
    finally:
        project.close()
