"""Model-server faults at the level of a whole materialisation of refined_trajectories (the client
retries themselves are covered by tests/unit/test_openai_faults.py):

* every request answers 500 (the server is down from the start): the run fails with a message
  naming ``max_failure_rate``, and every item is kept in Parquet and lineage as ``failed`` with
  its error class ``http_500``;
* half the items fail (each of their generations answers 500), under a bound of 0.6: the asset
  materialises and reports the failure count;
* edits without a ``<refine>`` block, empty edits and an empty initial thinking are recorded as
  skipped candidates and a rejected item, not crashes.
"""

from __future__ import annotations

import json

import polars as pl
import pytest

from tests.reliability.conftest import (
    DOMAIN,
    TINY_ITEMS,
    asset_path,
    fault_server_env,
    instance_for,
    lineage,
    materializations,
    materialize,
)
from tests.support.fault_server import FaultServer

pytestmark = [pytest.mark.model, pytest.mark.slow]  # the openai scorer tokenizes with the embedded tokenizer

ITEMS = TINY_ITEMS  # two fail, one gets malformed edits, one an empty thinking


@pytest.fixture(scope="module")
def project(tiny_project):
    return tiny_project


@pytest.fixture(scope="module")
def queries(project) -> list[dict]:
    """The accepted queries in search order, each with a marker that finds its requests in a body."""
    frame = pl.read_parquet(asset_path(project.seed_home, "synthesized_queries") / "queries.parquet")
    rows = frame.filter(pl.col("status") == "accepted").to_dicts()
    assert len(rows) == ITEMS
    for row in rows:
        row["marker"] = row["query"][:32]
        assert json.dumps(row["marker"])[1:-1] == row["marker"], "marker must survive JSON encoding unchanged"
    return rows


def _run(project, embedded_path, name: str, rules: list[tuple], config: dict | None = None):
    server = FaultServer().start()
    for marker, *actions in rules:
        server.on(marker, *actions)
    home = project.home(name)
    try:
        run = materialize(home, project.env(home, fault_server_env(server, embedded_path)), "refined_trajectories",
                          config={"refined_trajectories": {"config": config}} if config else None,
                          log_name=f"{name}.log")
    finally:
        server.stop()
    return {"home": home, "run": run, "server": server}


@pytest.fixture(scope="module")
def all_failing(project, embedded_path):
    return _run(project, embedded_path, "all_500", [('"model"', "500")])


@pytest.fixture(scope="module")
def mixed(project, embedded_path, queries):
    rules = [(q["marker"], "500") for q in queries[:2]]  # half the items: every generation fails
    edit = '<analyze>\\n"'  # how an edit request's assistant prefill ends, in the JSON body (initial ones only ban the tag)
    rules += [((queries[2]["marker"], edit), "no_refine", "empty"),  # step 1: no <refine> block; then empty edits
              (queries[3]["marker"], "empty")]  # an empty initial thinking
    return _run(project, embedded_path, "mixed", rules, {"max_failure_rate": 0.6})


def _lineage_trajectories(home) -> pl.DataFrame:
    return lineage(home, "SELECT id, query_id, status, reject_reason FROM trajectories WHERE partition = ?", [DOMAIN])


def test_all_failing_run_fails_naming_the_bound(all_failing):
    run = all_failing["run"]
    assert run.returncode != 0
    assert f"{ITEMS} of {ITEMS} items failed, above max_failure_rate=0.25" in run.log, run.log[-6000:]
    instance = instance_for(all_failing["home"])
    try:
        failed_runs = [r for r in instance.get_runs() if r.status.value == "FAILURE"]
        assert len(failed_runs) == 1
    finally:
        instance.dispose()


def test_all_failing_items_are_recorded_with_their_error_class(all_failing):
    home = all_failing["home"]
    frame = pl.read_parquet(asset_path(home, "refined_trajectories") / "trajectories.parquet")
    assert frame.height == ITEMS and (frame["status"] == "failed").all()
    assert frame["reject_reason"].str.starts_with("http_500").all(), frame["reject_reason"].to_list()
    rows = _lineage_trajectories(home)
    assert rows.height == ITEMS and (rows["status"] == "failed").all()
    assert rows["reject_reason"].str.starts_with("http_500").all()
    # nothing marks the partition done and no failed item is checkpointed: the next run retries them all
    assert not (asset_path(home, "refined_trajectories") / "fingerprint.json").exists()
    assert not list((home / "reer/work/refined_trajectories").glob("*/*/items/*.json"))
    # the server failed the scorer's start-up check (2 attempts): no item could start, each is failed with it
    assert all_failing["server"].count("500") == 2
    assert "model backends failed at start, every pending item fails: http_500" in all_failing["run"].log


def test_half_failing_below_the_bound_materialises_and_reports_failures(mixed, queries):
    run = mixed["run"]
    assert run.returncode == 0 and "RUN_SUCCESS" in run.log, run.log[-6000:]
    meta = materializations(mixed["home"], "refined_trajectories")[-1]
    assert meta["failed"] == 2 and meta["workload"]["failed"] == 2
    frame = pl.read_parquet(asset_path(mixed["home"], "refined_trajectories") / "trajectories.parquet")
    status = dict(zip(frame["query_id"], frame["status"]))
    reason = dict(zip(frame["query_id"], frame["reject_reason"]))
    for q in queries[:2]:
        assert status[q["id"]] == "failed" and reason[q["id"]].startswith("http_500"), reason[q["id"]]
    rows = _lineage_trajectories(mixed["home"])
    failed = rows.filter(pl.col("status") == "failed")
    assert sorted(failed["query_id"].to_list()) == sorted(q["id"] for q in queries[:2])


def test_malformed_answers_become_skipped_candidates_and_rejects(mixed, queries):
    home = mixed["home"]
    frame = pl.read_parquet(asset_path(home, "refined_trajectories") / "trajectories.parquet")
    by_query = {r["query_id"]: r for r in frame.iter_rows(named=True)}
    candidates = pl.read_parquet(asset_path(home, "refined_trajectories") / "candidates.parquet")
    # edits without <refine> (step 1), then empty edits (step 2): searched, every candidate skipped, z0 kept
    row = by_query[queries[2]["id"]]
    assert row["status"] == "ok" and row["num_steps"] == 2
    assert row["final_thinking"] == row["initial_thinking"] and row["final_score"] == row["initial_score"]
    mine = candidates.filter(pl.col("trajectory_id") == row["id"])
    assert mine.height == 4 and mine["text"].is_null().all() and mine["score"].is_null().all()
    assert (mine["skipped_reason"] == "no_refine_block").all(), mine["skipped_reason"].to_list()
    raws = [r.split("<analyze>\n", 1)[1] for r in mine["raw"].to_list()]  # the raw output keeps the prefill
    assert sorted(raws) == ["", "", "I looked at the segment and found nothing to change.",
                            "I looked at the segment and found nothing to change."], raws
    assert not mine["accepted"].any()
    # an empty initial thinking: the item is rejected with its reason
    empty = by_query[queries[3]["id"]]
    assert empty["status"] == "rejected" and empty["reject_reason"] == "initial_rollout_too_short"
    recorded = lineage(home, "SELECT count(*) AS n FROM candidates WHERE skipped_reason = 'no_refine_block' "
                             "AND partition = ?", [DOMAIN])["n"][0]
    assert recorded == 4
