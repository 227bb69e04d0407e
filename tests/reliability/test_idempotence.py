"""Idempotence: re-materialising with the same inputs and config gives the same ids and no
duplicate lineage rows, on the reuse path (fingerprint current: writes skipped) and on the forced
path (fingerprints and checkpoints deleted: everything recomputed and written again); a config
change gives new ids and keeps the old rows.

One small domain, every per-domain asset plus sft_dataset, the generator and scorer on the openai
backend against a fault server with seed-dependent answers (so a recomputation is a real one).
"""

from __future__ import annotations

import shutil

import polars as pl
import pytest

from tests.reliability.conftest import (
    DOMAIN,
    assert_driven_ok,
    asset_path,
    drive,
    fault_server_env,
    lineage,
    materializations,
    new_home,
    run_env,
    tiny_pieces,
    write_domains,
)
from tests.support.fault_server import FaultServer

pytestmark = [pytest.mark.model, pytest.mark.slow]  # the openai scorer tokenizes with the embedded tokenizer

PARTITIONED = ["raw_documents", "synthesized_queries", "refined_trajectories", "filtered_dataset"]
STEPS = [{"select": ",".join(PARTITIONED), "partition": DOMAIN}, {"select": "sft_dataset"}]
KEYS = {"documents": "id", "queries": "id", "trajectories": "id", "search_steps": "id", "candidates": "id",
        "dataset_rows": "id", "datasets": "id", "dataset_members": "dataset_id || '/' || dataset_row_id"}
OUTPUTS = {"raw_documents": "documents", "synthesized_queries": "queries", "refined_trajectories": "trajectories",
           "filtered_dataset": "dataset"}
CHANGED = {"raw_documents": {"min_units": 40}, "synthesized_queries": {"max_query_chars": 500},
           "refined_trajectories": {"stop_thresh": 0.2}}


def snapshot(home) -> dict[str, pl.DataFrame]:
    """Every lineage table as (key, run_id) rows."""
    out = {}
    for table, key in KEYS.items():
        run_id = "run_id" if table != "dataset_members" else "NULL"
        out[table] = lineage(home, f"SELECT {key} AS key, {run_id} AS run_id FROM {table}")
    return out


def parquet_ids(home) -> dict[str, list[str]]:
    return {asset: sorted(pl.read_parquet(asset_path(home, asset) / f"{name}.parquet")["id"].to_list())
            for asset, name in OUTPUTS.items()}


def keys(snap, table) -> set[str]:
    return set(snap[table]["key"].to_list())


@pytest.fixture(scope="module")
def history(tmp_path_factory, embedded_path):
    root = tmp_path_factory.mktemp("idempotence")
    server = FaultServer(seeded=True).start()
    try:
        domains = write_domains(root / "domains", tiny_pieces(3))
        home = new_home(root, "home")
        env = run_env(home, domains, fault_server_env(server, embedded_path))
        states = {}

        def step(name, steps=STEPS):
            run_ids = assert_driven_ok(drive(home, env, steps, log_name=f"{name}.log"), len(steps))
            states[name] = {"runs": run_ids, "lineage": snapshot(home), "parquet": parquet_ids(home),
                            "meta": {a: materializations(home, a)[-1] for a in PARTITIONED},
                            "requests": len(server.requests), "implied": implied_counts(home)}

        step("first")
        step("again")  # same inputs, same config: reused
        for asset in [*PARTITIONED, "sft_dataset"]:  # forced: nothing says it is up to date, nothing is cached
            (asset_path(home, asset, None if asset == "sft_dataset" else DOMAIN) / "fingerprint.json").unlink()
        shutil.rmtree(home / "reer" / "work")
        step("forced")
        step("changed", [{**STEPS[0], "config": CHANGED}, STEPS[1]])
        yield states
    finally:
        server.stop()


def implied_counts(home) -> dict[str, int]:
    """What the other tables imply each table should hold: the steps the stored traces record, and the
    accepted rows of the current dataset."""
    return lineage(home, """
        SELECT (SELECT CAST(coalesce(sum(json_array_length(trace_json -> '$.steps')), 0) AS BIGINT)
                FROM trajectories WHERE status = 'ok') AS steps_in_traces,
               (SELECT count(*) FROM dataset_rows WHERE status = 'accepted') AS accepted_rows""").row(0, named=True)


def test_every_table_holds_what_the_inputs_imply(history):
    """Three pieces, one rollout each (test profile), two candidates per step: exact counts, and the
    search tables agree with the traces they came from."""
    counts = {table: frame.height for table, frame in history["first"]["lineage"].items()}
    implied = history["first"]["implied"]
    assert counts["documents"] == counts["queries"] == counts["trajectories"] == counts["dataset_rows"] == 3, counts
    assert counts["datasets"] == 1
    assert counts["search_steps"] == implied["steps_in_traces"] >= 1, (counts, implied)
    assert counts["candidates"] == 2 * counts["search_steps"]
    assert counts["dataset_members"] == implied["accepted_rows"], (counts, implied)


@pytest.mark.parametrize("state", ["again", "forced"])
def test_same_inputs_and_config_give_the_same_ids_and_no_duplicates(history, state):
    first, later = history["first"], history[state]
    for table in KEYS:
        frame = later["lineage"][table]
        assert frame["key"].n_unique() == frame.height, f"{table}: duplicate rows after '{state}'"
        assert keys(later["lineage"], table) == keys(first["lineage"], table), table
    assert later["parquet"] == first["parquet"]


def test_reuse_skips_model_calls_and_lineage_writes(history):
    first, again = history["first"], history["again"]
    for asset in PARTITIONED:
        assert again["meta"][asset]["reused"] is True, asset
    assert again["requests"] == first["requests"], "a reused partition called the model"
    for table in ("documents", "queries", "trajectories", "dataset_rows"):
        run_ids = set(again["lineage"][table]["run_id"].to_list())
        assert run_ids == {first["runs"][0]}, f"{table} was rewritten by a reused materialisation"


def test_forced_recompute_rewrites_rows_in_place(history):
    first, forced = history["first"], history["forced"]
    for asset in PARTITIONED:
        assert forced["meta"][asset]["reused"] is False, asset
    workload = forced["meta"]["refined_trajectories"]["workload"]
    assert (workload["made"], workload["reused"]) == (3, 0), workload  # searched again, not read from checkpoints
    assert forced["requests"] - history["again"]["requests"] == first["requests"], "not a full recomputation"
    for table in ("documents", "queries", "trajectories", "search_steps", "candidates", "dataset_rows"):
        assert set(forced["lineage"][table]["run_id"].to_list()) == {forced["runs"][0]}, table


def test_config_change_gives_new_ids_and_keeps_the_old(history):
    first, changed = history["first"], history["changed"]
    for table in ("queries", "trajectories", "search_steps", "candidates", "dataset_rows", "datasets",
                  "dataset_members"):
        old, new = keys(first["lineage"], table), keys(changed["lineage"], table)
        assert old < new, f"{table}: old rows lost or no new rows"
        assert len(new) == 2 * len(old), table
        frame = changed["lineage"][table]
        assert frame["key"].n_unique() == frame.height, table
    for asset in ("synthesized_queries", "refined_trajectories", "filtered_dataset"):
        assert set(changed["parquet"][asset]).isdisjoint(first["parquet"][asset]), asset


def test_cleaning_config_change_keeps_old_document_rows(history):
    old, new = keys(history["first"]["lineage"], "documents"), keys(history["changed"]["lineage"], "documents")
    assert old < new
