"""The whole asset graph on one bundled domain with the embedded model, stage by stage,
against a temporary DAGSTER_HOME and lineage DB; then a second pass that must reuse everything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

DOMAIN = "education"
pytestmark = [pytest.mark.model, pytest.mark.slow]


@pytest.fixture(scope="module")
def graph(tmp_path_factory, embedded_path):
    import dagster as dg

    home = tmp_path_factory.mktemp("dagster_home")
    saved = {k: os.environ.get(k) for k in ("DAGSTER_HOME", "REER_PROFILE", "REER_LINEAGE_DB")}
    os.environ.update({"DAGSTER_HOME": str(home), "REER_PROFILE": "test"})
    os.environ.pop("REER_LINEAGE_DB", None)
    from reer_assets.defs.resources import default_resources
    from reer_assets.definitions import defs

    assets = {key.to_user_string(): a for a in defs.assets for key in a.keys}
    checks = list(defs.asset_checks)
    instance = dg.DagsterInstance.ephemeral()
    resources = default_resources()
    results = {}

    def stage(name, partition=None, with_checks=False):
        return dg.materialize([assets[name], *(checks if with_checks else [])], partition_key=partition,
                              resources=resources, instance=instance, selection=[name] if not with_checks else None)

    try:
        for name in ("raw_documents", "synthesized_queries", "refined_trajectories"):
            results[name] = stage(name, DOMAIN)
        results["filtered_dataset"] = dg.materialize(
            [assets["filtered_dataset"], *[c for c in checks if "filtered_dataset" in str(c.check_keys)]],
            partition_key=DOMAIN, resources=resources, instance=instance)
        for name in ("sft_dataset", "base_model", "finetuned_checkpoint", "benchmark_scores"):
            results[name] = stage(name)
        second = {name: stage(name, DOMAIN) for name in ("raw_documents", "synthesized_queries", "refined_trajectories", "filtered_dataset")}
        yield {"home": home, "results": results, "second": second, "instance": instance}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def metadata(result, asset):
    import dagster as dg

    event = result.asset_materializations_for_node(asset)[0]
    return {k: (v.value if hasattr(v, "value") else v) for k, v in event.metadata.items()}


def test_every_stage_materialised_with_row_counts(graph):
    for name, result in graph["results"].items():
        assert result.success, name
        assert metadata(result, name)["dagster/row_count"] > 0, name


def test_raw_documents_keep_all_records_and_languages(graph):
    frame = pl.read_parquet(graph["home"] / "reer/assets/raw_documents" / DOMAIN / "documents.parquet")
    assert frame.height == 8 and set(frame["language"]) == {"en", "zh"}
    assert (frame["status"] == "accepted").all()


def test_queries_record_synthesis_and_model(graph):
    frame = pl.read_parquet(graph["home"] / "reer/assets/synthesized_queries" / DOMAIN / "queries.parquet")
    synthesized = frame.filter(pl.col("synthesized"))
    assert synthesized.height == 4  # even-numbered pieces come without a request
    assert synthesized["model"].str.starts_with("reer-embedded:").all()
    assert synthesized["raw_output"].is_not_null().all()
    given = frame.filter(~pl.col("synthesized"))
    assert given["model"].is_null().all() and given.height == 4
    # rejected queries keep their reasons
    assert frame.filter(pl.col("status") == "rejected")["reject_reasons"].list.len().min() in (None, 1, 2, 3, 4)


def test_trajectories_never_worse_than_initial(graph):
    frame = pl.read_parquet(graph["home"] / "reer/assets/refined_trajectories" / DOMAIN / "trajectories.parquet")
    ok = frame.filter(pl.col("status") == "ok")
    assert ok.height > 0
    assert (ok["final_score"] <= ok["initial_score"]).all()
    trace = json.loads(ok["trace_json"][0])
    assert {"steps", "initial_score", "final_score", "tokens"} <= set(trace)


def test_filtered_dataset_keeps_rejects_with_reasons_and_checks_pass(graph):
    result = graph["results"]["filtered_dataset"]
    evaluations = result.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} >= {"filtered_dataset_schema", "filtered_dataset_not_empty",
                                                   "filtered_dataset_unique_queries"}
    assert all(e.passed for e in evaluations)
    frame = pl.read_parquet(graph["home"] / "reer/assets/filtered_dataset" / DOMAIN / "dataset.parquet")
    trajectories = pl.read_parquet(graph["home"] / "reer/assets/refined_trajectories" / DOMAIN / "trajectories.parquet")
    assert frame.height == trajectories.height  # nothing dropped silently
    rejected = frame.filter(pl.col("status") == "rejected")
    assert (rejected["reject_reasons"].list.len() > 0).all()


def test_every_sft_row_has_complete_provenance(graph):
    from reer_assets.lib import duckdb_store

    pointer = json.loads((graph["home"] / "reer/assets/sft_dataset/__all__/current.json").read_text())
    db = graph["home"] / "lineage.duckdb"
    broken = duckdb_store.query(duckdb_store.named_query("incomplete_provenance"), [pointer["version"]], path=db)
    members = duckdb_store.query("SELECT count(*) AS n FROM dataset_members WHERE dataset_id = ?", [pointer["version"]], path=db)
    assert broken.is_empty()
    assert members["n"][0] == pointer["rows"]
    rows = pl.read_ndjson(Path(pointer["path"]) / "train.jsonl")
    if rows.height:
        first = rows["messages"][0]
        assert first[0]["role"] == "user" and first[1]["content"].startswith("<think>\n")
        assert "\n</think>\n\n" in first[1]["content"]


def test_finetuned_checkpoint_loads(graph):
    from transformers import AutoModelForCausalLM

    pointer = json.loads((graph["home"] / "reer/assets/finetuned_checkpoint/__all__/current.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(pointer["path"])
    assert model.num_parameters() > 0
    assert pointer["train_loss"] > 0


def test_benchmark_scores_cover_both_models_and_all_domains(graph):
    frame = pl.read_parquet(graph["home"] / "reer/assets/benchmark_scores/__all__/results.parquet")
    assert set(frame["model_label"]) == {"base", "finetuned"}
    assert frame.group_by("domain").len()["len"].min() >= 10  # 5+ prompts x 2 models
    assert frame["length_score"].is_between(0, 100).all()
    assert frame["heldout_nll"].is_between(0, 2).all()
    assert frame["judge_status"].str.starts_with("skipped").all()


def test_second_pass_reuses_everything(graph):
    for name, result in graph["second"].items():
        assert result.success
        assert metadata(result, name)["reused"] is True, name


def test_lineage_trace_cli(graph):
    from reer_assets.lib import duckdb_store

    db = graph["home"] / "lineage.duckdb"
    row_id = duckdb_store.query("SELECT id FROM dataset_rows LIMIT 1", path=db)["id"][0]
    env = {**os.environ, "REER_LINEAGE_DB": str(db)}
    out = subprocess.run([sys.executable, "-m", "reer_assets.cli", "lineage", "trace", row_id], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert row_id in out and "source" in out and "bundled://corpus/" in out
