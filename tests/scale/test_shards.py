"""Shards within a partition: refined_trajectories splits a domain into ``shards: N`` workload runs and
combines them. Changing the shard count never duplicates, loses or recomputes an item (ids in the
Parquet output and in lineage), and a shard whose run fails leaves the other shards' rows in place.

The assets run in this process (``dg.materialize``) against a temporary instance folder, with both
model roles on the fault server (fast, well-formed answers; the openai scorer tokenizes with the
embedded tokenizer). The 2-shard run of the shard-count test uses the default ``subprocess`` runner,
so its shards are real Pipes subprocesses in flight together; the other runs use the in-process
runner (the same asset and workload code, without a process start per shard), and the failure test
makes one shard's run fail.
"""

from __future__ import annotations

import polars as pl
import pytest

from reer_assets.runtime.runner import WorkloadRunner
from reer_assets.runtime.runners.common import WorkloadRunError
from reer_assets.workloads.refinement import shard_of
from tests.reliability.conftest import tiny_pieces
from tests.scale.conftest import Project, refined_metadata as _meta
from tests.support.fault_server import FaultServer

pytestmark = [pytest.mark.model, pytest.mark.slow]


@pytest.fixture()
def project(tmp_path, embedded_path):
    server = FaultServer().start()
    project = Project(tmp_path, server, embedded_path)
    try:
        yield project
    finally:
        project.close()
        server.stop()


def test_changing_the_shard_count_never_duplicates_loses_or_recomputes_an_item(project):
    pieces = tiny_pieces(5)  # each run reads a longer prefix of the same file: earlier documents keep their ids
    outcomes: dict[str, tuple] = {}
    previous = 0
    # the 2-shard run on the default runner: two Pipes subprocesses in flight at once
    for count, shards, mode in ((2, 1, "in_process"), (4, 3, "in_process"), (5, 2, "subprocess")):
        result = project.materialize(pieces[:count], shards, WorkloadRunner(mode=mode))
        assert result.success, f"{count} items, {shards} shards"
        meta, frame, rows = _meta(result), project.trajectories(), project.lineage()
        expected = set(project.queries()["id"])
        assert len(expected) == count
        # Parquet: one row per item, every item there
        assert frame.height == count and frame["id"].n_unique() == count and set(frame["query_id"]) == expected
        assert (frame["status"] == "ok").all(), frame["reject_reason"].to_list()
        # lineage: the same ids, once each (rows of earlier runs are the same items, replaced)
        assert rows.height == count and set(rows["id"]) == set(frame["id"]) and rows["id"].n_unique() == count
        assert set(rows["run_id"]) == {result.run_id}
        # nothing recomputed: the finished items came from their checkpoints, only the new ones were searched
        workload = meta["workload"]
        assert (workload["reused"], workload["made"], workload["failed"]) == (previous, count - previous, 0), workload
        if shards > 1:
            assert [s["status"] for s in workload["shard_runs"]] == ["ok"] * shards
            assert sum(s["items"] for s in workload["shard_runs"]) == count
            for s in workload["shard_runs"]:  # each shard searched exactly the items its hash gives it
                mine = [q for q in expected if shard_of(q, shards) == s["shard"] - 1]
                assert s["items"] == len(mine)
        # the rows of items finished earlier are exactly what they were
        for row in frame.iter_rows(named=True):
            outcome = (row["initial_thinking"], row["final_thinking"], row["final_score"], row["num_steps"])
            assert outcomes.setdefault(row["id"], outcome) == outcome
        # one checkpoint folder per domain and config, one file per item, whatever the shard count
        assert len(project.checkpoints()) == count and len({p.parent for p in project.checkpoints()}) == 1
        previous = count
    steps = project.lineage("search_steps")
    assert steps["id"].n_unique() == steps.height
    assert set(steps["trajectory_id"]) <= set(frame["id"])


class FailingShardRunner(WorkloadRunner):
    """The in-process runner, except that the run of shard ``fail_shard`` fails before any item (as a
    Ray job whose node is lost does)."""

    fail_shard: int = 0

    def run(self, context, name, extras, env):
        if (extras.get("shard") or {}).get("index") == self.fail_shard:
            raise WorkloadRunError("ray_job_failed", "simulated: the job's node was lost")
        return super().run(context, name, extras, env)


def test_a_failed_shard_keeps_the_other_shards_rows_and_fails_or_passes_by_the_bound(project):
    pieces = tiny_pieces(4)
    # document ids depend on where they were read (a temporary folder), so the split is known only once the
    # queries exist: the first shard count that puts items in two shards, and one of those shards fails
    assert project.materialize(pieces, 1, WorkloadRunner(mode="in_process"),
                               names=("raw_documents", "synthesized_queries")).success
    queries = project.queries()
    shards = next(n for n in (2, 3, 4) if len({shard_of(q, n) for q in queries["id"]}) >= 2)
    fail = min({shard_of(q, shards) for q in queries["id"]})
    lost = {q for q in queries["id"] if shard_of(q, shards) == fail}
    over = project.materialize(pieces, shards, FailingShardRunner(mode="in_process", fail_shard=fail),
                               config={"max_failure_rate": 0.0})
    assert not over.success
    failure = next(e for e in over.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    name = f"shard {fail + 1} of {shards}"
    assert f"S{name[1:]} failed: ray_job_failed: {name} (in_process runner): simulated" in message, message
    assert f"{len(lost)} of {queries.height} items failed, above max_failure_rate=0.0" in message
    frame, rows = project.trajectories(), project.lineage()
    for table in (frame, rows):  # outputs and lineage: every item once, the lost shard's as failed rows
        assert table.height == queries.height and table["id"].n_unique() == queries.height
        status = dict(zip(table["query_id"], table["status"]))
        assert {q for q, s in status.items() if s == "failed"} == lost
        assert all(status[q] == "ok" for q in set(queries["id"]) - lost)
        reasons = table.filter(pl.col("status") == "failed")["reject_reason"]
        assert reasons.str.starts_with(f"ray_job_failed: {name}").all(), reasons.to_list()

    under = project.materialize(pieces, shards, FailingShardRunner(mode="in_process", fail_shard=fail),
                                config={"max_failure_rate": 0.9})
    assert under.success
    workload = _meta(under)["workload"]
    assert [s["status"] for s in workload["shard_runs"]] == ["failed" if k == fail else "ok" for k in range(shards)]
    assert workload["failed"] == len(lost) and workload["reused"] == queries.height - len(lost)

    # the partition passed, so it is up to date until its inputs change; with one more document a healthy
    # re-run searches the lost shard's items and the new one, and nothing else
    more = pieces + [p for p in tiny_pieces(5) if p["id"] not in {q["id"] for q in pieces}]  # appended: same ids
    healthy = project.materialize(more, shards, WorkloadRunner(mode="in_process"))
    assert healthy.success
    workload = _meta(healthy)["workload"]
    assert (workload["reused"], workload["made"], workload["failed"]) == (queries.height - len(lost), len(lost) + 1, 0)
    frame, rows = project.trajectories(), project.lineage()
    assert frame.height == rows.height == 5 and frame["id"].n_unique() == rows["id"].n_unique() == 5
    assert (frame["status"] == "ok").all() and (rows["status"] == "ok").all()
