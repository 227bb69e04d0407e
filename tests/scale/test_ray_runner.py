"""REER_WORKLOAD_RUNNER=ray for real: a local Ray head on 127.0.0.1, a tiny domain in two shards, each
shard's search one Ray job submitted by dagster-ray's PipesRayJobClient.

The first run has one shard's job driver (the Ray worker process running the workload) SIGKILLed
part-way, on an event, never after a sleep: the fault server holds open the first request of that
shard's second item (its prompt holds the item's query), and the kill comes once that request has
arrived, so the first item is surely checkpointed and the second surely unfinished. The other shard
finishes, the killed shard's finished items stay (outputs and lineage), the rest are recorded as failed
rows, and the partition fails naming the shard. The second run resumes:
only the items the killed driver had not finished are searched, and every item is in the Parquet
output and in lineage exactly once. Along the way: the jobs ran from the project folder with the
stage's environment (the Ray head's own environment has no REER_* variable, yet the workload reached
the fault server the stage's REER_GENERATOR_* variables name), and their logs and summaries came back
to Dagster. The assets run in this process (``dg.materialize``), which saves a Dagster start-up per run.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from reer_assets.runtime.runner import WorkloadRunner
from reer_assets.runtime.runners.ray import RayRunnerSettings
from reer_assets.workloads.refinement import shard_of
from tests.reliability.conftest import tiny_pieces
from tests.scale.conftest import Project, pipes_extras, refined_metadata, workload_processes
from tests.support.fault_server import FaultServer

pytestmark = [pytest.mark.ray, pytest.mark.model, pytest.mark.slow]

ITEMS, SHARDS = 4, 2
KILL_DEADLINE_S = 300.0  # a bound on waiting for the held request; the test then fails ("never killed")


def _marker(text: str, others: list[str], length: int = 24) -> str:
    """A run of ``length`` plain characters of ``text`` (nothing JSON would escape) that no other text holds:
    it is in the body of every chat request about that text's item and of no other."""
    for run in re.findall(rf"[A-Za-z0-9 ,.;:()-]{{{length},}}", text):
        for start in range(len(run) - length + 1):
            piece = run[start:start + length]
            if not any(piece in other for other in others):
                return piece
    raise AssertionError(f"no plain {length}-character run of {text!r} is unique to it")


def _kill_when_part_way(project: Project, hold, index: int, report: dict, stop: threading.Event):
    """Once the request that ``hold`` holds open has arrived (shard ``index``'s second item began, so its
    first item is checkpointed), SIGKILL that shard's workload process; then let the request go."""
    home = str(project.root / "home")
    deadline = time.monotonic() + KILL_DEADLINE_S
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            if not hold.wait(timeout=0.5):  # a bounded wait, to see whether the run ended without it
                continue
            report["finished_at_kill"] = project.finished()
            victim = next((p for p in workload_processes() if pipes_extras(p).get("__home") == home
                           and (pipes_extras(p).get("shard") or {}).get("index") == index), None)
            if victim is None:
                report["error"] = "the held request arrived but no workload process of the shard was found"
                return
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=30)
            report["killed_pid"] = victim.pid
            return
    finally:
        hold.release()


@pytest.fixture(scope="module")
def runs(ray_head, tmp_path_factory, embedded_path):
    server = FaultServer().start()
    # one request in flight: a shard's items go one after another, in query order
    project = Project(tmp_path_factory.mktemp("ray_runner"), server, embedded_path, MAX_IN_FLIGHT="1")
    runner = WorkloadRunner(mode="ray", ray=RayRunnerSettings(address=ray_head.address, poll_interval_s=0.5))
    pieces = tiny_pieces(ITEMS)
    try:
        t0 = time.monotonic()
        # which items each shard gets is known once the queries exist: the shard with more items is killed
        assert project.materialize(pieces, SHARDS, runner, names=("raw_documents", "synthesized_queries")).success
        queries = project.queries()
        by_shard = {s: [q for q in queries["id"] if shard_of(q, SHARDS) == s] for s in range(SHARDS)}
        target = max(by_shard, key=lambda s: len(by_shard[s]))
        assert len(by_shard[target]) >= 2, by_shard
        # hold the first request about the target shard's second item: the shard is then part-way
        texts = dict(zip(queries["id"], queries["query"]))
        item = by_shard[target][1]
        hold = server.hold(marker=_marker(texts[item], [t for q, t in texts.items() if q != item]))

        report: dict = {}
        stop = threading.Event()
        killer = threading.Thread(target=_kill_when_part_way, args=(project, hold, target, report, stop), daemon=True)
        killer.start()
        first = project.materialize(pieces, SHARDS, runner, config={"max_failure_rate": 0.0})
        stop.set()
        killer.join(timeout=5)
        t1 = time.monotonic()
        after_first = {"frame": project.trajectories(), "lineage": project.lineage(), "checkpoints": project.finished(),
                       "requests": len(server.requests)}
        second = project.materialize(pieces, SHARDS, runner)
        t2 = time.monotonic()
        yield {"project": project, "first": first, "second": second, "by_shard": by_shard, "target": target,
               "report": report, "after_first": after_first, "server": server, "queries": queries,
               "ray_head": ray_head, "seconds": (t1 - t0, t2 - t1)}
    finally:
        project.close()
        server.stop()


def _failure_message(result) -> str:
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return failure.event_specific_data.error.message


def test_killed_shard_fails_the_partition_naming_it_and_keeps_every_finished_item(runs):
    first, target, by_shard, report = runs["first"], runs["target"], runs["by_shard"], runs["report"]
    assert "killed_pid" in report, f"the target shard's workload was never killed: {report}"
    done_at_kill = set(report["finished_at_kill"].values())
    lost = set(by_shard[target]) - done_at_kill
    # killed while its second item waited on its first request: exactly the first item was checkpointed
    assert done_at_kill & set(by_shard[target]) == {by_shard[target][0]}, f"the kill did not land part-way: {report}"
    assert lost == set(by_shard[target][1:]), report
    assert not first.success
    message = _failure_message(first)
    assert f"Shard {target + 1} of {SHARDS} failed: ray_job_failed" in message, message
    assert "failed with status FAILED" in message and "above max_failure_rate=0.0" in message, message
    after = runs["after_first"]
    for table in (after["frame"], after["lineage"]):  # every item once, in the outputs and in lineage
        assert table.height == ITEMS and table["id"].n_unique() == ITEMS
        status = dict(zip(table["query_id"], table["status"]))
        assert {q for q, s in status.items() if s == "failed"} == lost, status
        assert all(status[q] == "ok" for q in set(status) - lost)
        reasons = table.filter(pl.col("status") == "failed")["reject_reason"]
        assert reasons.str.starts_with(f"ray_job_failed: shard {target + 1} of {SHARDS} (ray runner)").all()
    logs = "\n".join(runs["project"].logs(first.run_id))
    jobs = {j.submission_id: j for j in runs["ray_head"].jobs() if j.submission_id in logs}
    assert sorted(str(j.status) for j in jobs.values()) == ["FAILED", "SUCCEEDED"], jobs
    print(f"\nkilled shard {target + 1} of {SHARDS} (pid {report['killed_pid']}) with "
          f"{len(done_at_kill & set(by_shard[target]))} of {len(by_shard[target])} items checkpointed; "
          f"first run (with the upstream assets) {runs['seconds'][0]:.1f}s")


def test_the_next_run_resumes_without_losing_duplicating_or_recomputing(runs):
    second, project = runs["second"], runs["project"]
    assert second.success
    queries = set(runs["queries"]["id"])
    frame, rows = project.trajectories(), project.lineage()
    for table in (frame, rows):
        assert table.height == ITEMS and table["id"].n_unique() == ITEMS and set(table["query_id"]) == queries
        assert (table["status"] == "ok").all()
    assert set(frame["id"]) == set(rows["id"]) == set(runs["after_first"]["frame"]["id"])
    assert set(rows["run_id"]) == {second.run_id}
    workload = refined_metadata(second)["workload"]
    checkpointed = len(runs["after_first"]["checkpoints"])
    assert (workload["reused"], workload["made"], workload["failed"]) == (checkpointed, ITEMS - checkpointed, 0)
    # the items finished before the kill are exactly as they were (same ids, same rows)
    before = runs["after_first"]["frame"].filter(pl.col("status") == "ok")
    again = frame.filter(pl.col("id").is_in(before["id"].to_list()))
    columns = ["id", "initial_thinking", "final_thinking", "final_score", "num_steps"]
    assert before.sort("id").select(columns).equals(again.sort("id").select(columns))
    assert len(runs["server"].requests) > runs["after_first"]["requests"]  # the lost items were searched
    print(f"\nresumed in {runs['seconds'][1]:.1f}s: reused {workload['reused']}, made {workload['made']}; "
          f"shards {[(s['shard'], s['status'], s['items']) for s in workload['shard_runs']]}")


def test_jobs_ran_from_the_project_folder_with_the_stage_env_and_reported_back(runs):
    second, project = runs["second"], runs["project"]
    logs = project.logs(second.run_id)
    text = "\n".join(logs)
    jobs = [j for j in runs["ray_head"].jobs() if j.submission_id in text]
    assert len(jobs) == SHARDS and all(str(j.status) == "SUCCEEDED" for j in jobs)
    repo = str(Path(__file__).resolve().parents[2])
    for job in jobs:
        assert job.entrypoint.startswith(f"cd {repo} && exec ") and "working_dir" not in (job.runtime_env or {})
        env = job.runtime_env["env_vars"]
        assert env["REER_GENERATOR_BACKEND"] == "openai" and env["DAGSTER_HOME"] == str(project.root / "home")
    # the workload's logs came back as Dagster log messages, its summary as the Pipes custom message
    for s in range(SHARDS):
        assert f"shard {s + 1} of {SHARDS}: {len(runs['by_shard'][s])} items" in logs
    assert any(" rollout 0: ok " in line for line in logs)
    workload = refined_metadata(second)["workload"]
    assert workload["runner"] == "ray" and [s["status"] for s in workload["shard_runs"]] == ["ok"] * SHARDS
    assert all(isinstance(s.get("seconds"), (int, float)) for s in workload["shard_runs"])
    # the head's environment had no REER_* variable: the model requests prove the runtime env reached the job
    assert runs["server"].requests
