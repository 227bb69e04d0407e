"""The ablation assets one by one, in seconds, in the style of test_stages.py (the same tiny domain, the
workloads in process): variant datasets from real search traces, one checkpoint per variant and seed
(two seeds), their held-out evaluation, and the report, whose rows the lineage tables hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from reer_assets.core.trace import SearchTrace
from tests.assets.test_stages import DOMAIN, RELAXED_FILTERS, metadata, stage  # noqa: F401 (the module-scoped fixture)

pytestmark = pytest.mark.model

TRAIN = {"max_steps": 1, "seeds": 2}
TRAINED = ["searched", "initial", "random_edits"]  # the variants of both differences; fewer trainings, same code
EVAL = {"prompts_per_domain": 5, "max_tokens": 8}  # five held-out prompts: real bootstrap intervals
# the test profile's search (longer than test_stages' cut), so that the traces are real searches with accepted edits
SEARCH = {"max_step": 2, "max_tokens": 360, "edit_max_tokens": 160}
SEARCH_SEEDS = tuple(range(12))


@pytest.fixture(scope="module")
def upstream(stage):  # noqa: F811
    """The tiny domain through filtered_dataset (searched with two steps so that edits get accepted), plus the base model."""
    stage("raw_documents"), stage("synthesized_queries")
    # What the toy model writes depends on this machine's build and on the document ids (which hash the
    # temporary source path), so search seeds are tried in turn until a trace has an accepted edit: the
    # random_edits check below needs one to mean anything.
    # The edit must be on a row the filters accept (curation keeps one rollout per query), so the filter runs
    # for each seed too, under filters the searched thinkings really pass (nothing rewrites its output).
    for seed in SEARCH_SEEDS:
        stage("refined_trajectories", config={**SEARCH, "seed": seed})
        accepted = metadata(stage("filtered_dataset", config=RELAXED_FILTERS), "filtered_dataset")["accepted"]
        traces = pl.read_parquet(stage.root / "home/reer/assets/refined_trajectories" / DOMAIN / "trajectories.parquet")
        dataset = pl.read_parquet(stage.root / "home/reer/assets/filtered_dataset" / DOMAIN / "dataset.parquet")
        kept = set(dataset.filter(pl.col("status") == "accepted")["trajectory_id"])
        if any(step.choice is not None for t in traces.filter(pl.col("id").is_in(list(kept)))["trace_json"].drop_nulls()
               for step in SearchTrace.from_json(t).steps):
            break
    else:
        raise AssertionError(f"no accepted row's search accepted an edit with any of the seeds {SEARCH_SEEDS}")
    assert accepted >= 1
    stage("base_model")
    return stage


def _asset_file(stage, asset, name, partition=DOMAIN):  # noqa: F811
    return pl.read_parquet(stage.root / "home/reer/assets" / asset / partition / name)


def test_ablation_datasets_pair_the_variants_and_random_edits_match_the_search(upstream):
    meta = metadata(upstream("ablation_datasets", config={"no_reflection": True}), "ablation_datasets")
    variants = ["searched", "initial", "no_thinking", "random_edits", "shuffled", "no_reflection"]
    shuffled = meta["items"] if meta["items"] >= 2 else 0  # the control needs another item to take from
    assert meta["variants"] == variants and meta["dagster/row_count"] == meta["items"] * 5 + shuffled >= 5
    rows = _asset_file(upstream, "ablation_datasets", "rows.parquet")
    # every variant has the same item ids and the same answer per item
    by_variant = {v: dict(zip(g["item_id"], g["answer"])) for (v,), g in rows.group_by("variant")}
    assert set(by_variant) == set(variants) - (set() if shuffled else {"shuffled"})
    assert all(answers == by_variant["searched"] for answers in by_variant.values())
    # random_edits makes exactly as many edits per item as the search accepted on its real trace
    traces = pl.read_parquet(upstream.root / "home/reer/assets/refined_trajectories" / DOMAIN / "trajectories.parquet")
    trace_of = {t["id"]: SearchTrace.from_json(t["trace_json"]) for t in traces.iter_rows(named=True) if t["trace_json"]}
    accepted_total = 0
    for row in rows.filter(pl.col("variant") == "random_edits").iter_rows(named=True):
        trace = trace_of[row["trajectory_id"]]
        accepted = sum(step.choice is not None for step in trace.steps)
        accepted_total += accepted
        assert row["edits"] == len(row["edited_segments"]) == accepted
        assert len(set(row["edited_segments"])) == accepted  # distinct steps
        parsed = {step.index for step in trace.steps if any(c.text is not None for c in step.candidates)}
        assert set(row["edited_segments"]) <= parsed  # only steps that generated a parsed candidate
    assert accepted_total >= 1, "no trace accepted an edit: the check above was vacuous"
    searched = rows.filter(pl.col("variant") == "searched").sort("item_id")
    assert searched["edits"].to_list() == rows.filter(pl.col("variant") == "random_edits").sort("item_id")["edits"].to_list()
    assert rows["messages"].list.len().unique().to_list() == [3]  # system, user, assistant: the one inference format
    again = metadata(upstream("ablation_datasets", config={"no_reflection": True}), "ablation_datasets")
    assert again["reused"] is True


def test_ablation_checkpoints_two_seeds_same_steps(upstream):
    upstream("ablation_datasets", config={"variants": TRAINED})
    meta = metadata(upstream("ablation_checkpoints", config=TRAIN), "ablation_checkpoints")
    assert meta["seeds"] == [0, 1] and meta["trained"] == 3 * 2 and meta["steps_equal"] is True
    frame = _asset_file(upstream, "ablation_checkpoints", "checkpoints.parquet")
    assert set(frame["steps"]) == {1} and frame["base_model"].n_unique() == 1 and frame["id"].n_unique() == 6
    assert meta["budget"] == {"kind": "steps", "max_steps": 1, "train_tokens": None}
    for path in frame["path"]:  # loadable checkpoints, each with its training report
        assert (Path(path) / "training.json").exists() and (Path(path) / "config.json").exists()
    assert metadata(upstream("ablation_checkpoints", config=TRAIN), "ablation_checkpoints")["reused"] is True


def test_ablation_results(upstream):
    meta = metadata(upstream("ablation_results", config=EVAL), "ablation_results")
    # six checkpoints and the base model (the floor) under both seeds' sampling, five held-out prompts each
    assert meta["dagster/row_count"] == (6 + 2) * 5 and meta["prompts"] == 5
    frame = _asset_file(upstream, "ablation_results", "results.parquet")
    assert frame["heldout_nll"].is_not_null().all() and frame["heldout_nll_own_thinking"].is_not_null().all()
    assert frame["judge_score"].is_null().all() and set(frame["seed"]) == {0, 1}
    assert "searched" in meta["means"] and meta["judge"] == "none configured"
    base = frame.filter(pl.col("variant") == "base")
    assert base.height == 2 * 5 and all(c.startswith("reer-embedded:") for c in base["checkpoint_id"])
    assert "base" in meta["means"] and "searched − base" in meta["differences"]


def test_ablation_results_with_a_judge(upstream):
    """A judge over HTTP (the fault server answering from the request's JSON schema): every answer gets a
    judge score (the mean of its quality dimensions), and the scores go to lineage judge_scores."""
    import duckdb

    from reer_assets.defs.resources import ModelBackendResource
    from tests.support.fault_server import FaultServer

    server = FaultServer().start()
    server.on("", "judge")
    try:
        judge = ModelBackendResource(role="judge", backend="openai", base_url=server.base_url, max_attempts=1)
        meta = metadata(upstream("ablation_results", judge=judge, config=EVAL), "ablation_results")
    finally:
        server.stop()
    assert meta["judge"].startswith("openai:") and "judge score" in meta["means"]
    frame = _asset_file(upstream, "ablation_results", "results.parquet")
    assert frame["judge_score"].is_between(1, 5).all()
    con = duckdb.connect(str(upstream.root / "lineage.duckdb"), read_only=True)
    judged = con.execute("SELECT count(*) FROM judge_scores WHERE model_label LIKE 'ablation:%'").fetchone()[0]
    con.close()
    assert judged == 40 * 6  # forty answers (with the base model's ten), six quality dimensions each


def test_experiment_report_and_its_lineage_rows(upstream):
    import duckdb

    meta = metadata(upstream("experiment_report"), "experiment_report")
    report = meta["report"]
    assert "## All domains" in report and "searched − initial" in report and "data:image/png;base64," in report
    assert "judge score" in report  # the latest results were judged
    # the headline says what this experiment could detect, from its own numbers (n = 5 prompts)
    assert "could detect a searched − initial difference of at least" in report and "n = 5 prompts" in report
    assert "detectable ≥ (MDE)" in report and "searched − base" in report
    rows = _asset_file(upstream, "experiment_report", "results.parquet", "__all__")
    assert meta["dagster/row_count"] == rows.height > 0  # > 0: the row count follows the variants, metrics and domains present, checked row by row below
    overall = rows.filter((pl.col("domain") == "all") & (pl.col("kind") == "mean"))
    assert set(overall["variant"]) == set(TRAINED) | {"base"}
    assert set(overall["seeds"]) == {2} and set(overall["n"]) == {5}
    # bootstrap intervals over the five prompts, end to end: around each mean, and wide enough to be real
    for row in overall.iter_rows(named=True):
        assert row["ci_low"] <= row["value"] <= row["ci_high"], row
    nll = overall.filter(pl.col("metric") == "heldout_nll")  # five different prompts: their NLLs differ
    assert nll.height == len(TRAINED) + 1 and (nll["ci_high"] - nll["ci_low"] > 0).all(), nll  # > 0: a real interval, not a point
    diffs = rows.filter((pl.col("domain") == "all") & (pl.col("kind") != "mean"))
    assert diffs.height >= 2 and set(diffs["n"]) == {5}  # searched − initial and searched − random_edits, paired
    for row in diffs.iter_rows(named=True):
        assert row["ci_low"] <= row["value"] <= row["ci_high"], row
    # the lineage tables hold exactly the report's rows
    con = duckdb.connect(str(upstream.root / "lineage.duckdb"), read_only=True)
    stored = pl.from_arrow(con.sql("SELECT * EXCLUDE (run_id, partition, recorded_at) FROM experiment_results "
                                   f"WHERE experiment_id = '{meta['experiment_id']}'").to_arrow_table())
    experiment = con.execute("SELECT seeds, variants, budget_json FROM experiments WHERE id = ?",
                             [meta["experiment_id"]]).fetchone()
    con.close()
    assert stored.sort("id").equals(rows.select(stored.columns).sort("id"))
    assert experiment[0] == [0, 1] and experiment[1] == [*TRAINED, "base"] and json.loads(experiment[2])["kind"] == "steps"
    # and the CLI prints them, as one JSON document on stdout and as the report
    def reer(*argv):
        env = {**os.environ, "REER_LINEAGE_DB": str(upstream.root / "lineage.duckdb")}
        done = subprocess.run([sys.executable, "-m", "reer_assets.cli", "experiment", "report", *argv], env=env,
                              capture_output=True, text=True, timeout=120, check=False)
        return done.returncode, done.stdout

    code, out = reer("--json")
    printed = json.loads(out)
    assert code == 0 and printed["experiment_id"] == meta["experiment_id"]
    assert sorted(r["id"] for r in printed["rows"]) == sorted(rows["id"].to_list())
    code, out = reer("--markdown", "--experiment", meta["experiment_id"])
    assert code == 0 and "## All domains" in out and "searched − random_edits" in out
    code, out = reer("--json", "--experiment", "exp_nope")
    assert code == 1 and json.loads(out) == {"experiment_id": "exp_nope", "rows": []}
    assert metadata(upstream("experiment_report"), "experiment_report")["reused"] is True
