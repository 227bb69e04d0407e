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

from reer_assets.core.chat_format import conversation

DOMAIN = "education"
pytestmark = [pytest.mark.model, pytest.mark.slow]


@pytest.fixture(scope="module")
def graph(tmp_path_factory, embedded_path):
    import dagster as dg

    home = tmp_path_factory.mktemp("dagster_home")
    saved = {k: os.environ.get(k) for k in ("DAGSTER_HOME", "REER_PROFILE", "REER_LINEAGE_DB")}
    os.environ.update({"DAGSTER_HOME": str(home), "REER_PROFILE": "test"})
    os.environ.pop("REER_LINEAGE_DB", None)
    from reer_assets.definitions import defs
    from reer_assets.defs.resources import default_resources

    assets = {name: defs.get_assets_def(name) for name in ("raw_documents", "synthesized_queries", "refined_trajectories",
                                                           "filtered_dataset", "sft_dataset", "base_model",
                                                           "finetuned_checkpoint", "benchmark_scores")}
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

    event = result.asset_materializations_for_node(asset)[0]
    return {k: (v.value if hasattr(v, "value") else v) for k, v in event.metadata.items()}


def test_every_stage_materialised_with_row_counts(graph):
    for name, result in graph["results"].items():
        assert result.success, name
        assert metadata(result, name)["dagster/row_count"] > 0, name  # > 0: the exact count depends on what the model writes


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
    # a rejected query keeps at least one reason, an accepted one has none
    assert (frame.filter(pl.col("status") == "rejected")["reject_reasons"].list.len() >= 1).all()
    assert (frame.filter(pl.col("status") == "accepted")["reject_reasons"].list.len() == 0).all()


def test_trajectories_never_worse_than_initial(graph):
    frame = pl.read_parquet(graph["home"] / "reer/assets/refined_trajectories" / DOMAIN / "trajectories.parquet")
    ok = frame.filter(pl.col("status") == "ok")
    assert ok.height > 0  # > 0: the exact count depends on what the model writes
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
    assert (rejected["reject_reasons"].list.len() > 0).all()  # > 0: every rejected row names at least one reason


def test_every_sft_row_has_complete_provenance(graph):
    from reer_assets.lib import duckdb_store

    pointer = json.loads((graph["home"] / "reer/assets/sft_dataset/__all__/current.json").read_text())
    db = graph["home"] / "lineage.duckdb"
    broken = duckdb_store.query(duckdb_store.named_query("incomplete_provenance"), [pointer["version"]], path=db)
    members = duckdb_store.query("SELECT count(*) AS n FROM dataset_members WHERE dataset_id = ?", [pointer["version"]], path=db)
    assert broken.is_empty()
    assert members["n"][0] == pointer["rows"]
    rows = pl.read_parquet(Path(pointer["path"]) / "train.parquet")
    assert rows.height == pointer["rows"] > 0  # equal to the pointer; > 0 so training had rows
    dataset = pl.read_parquet(graph["home"] / "reer/assets/filtered_dataset" / DOMAIN / "dataset.parquet")
    accepted = {r["id"]: r for r in dataset.filter(pl.col("status") == "accepted").iter_rows(named=True)}
    for row in rows.iter_rows(named=True):
        source = accepted[row["id"]]
        assert row["messages"] == conversation(source["query"], source["thinking"], source["reference"])


def test_finetuning_lowers_the_loss_on_its_training_rows(graph):
    base = json.loads((graph["home"] / "reer/assets/base_model/__all__/current.json").read_text())
    tuned = json.loads((graph["home"] / "reer/assets/finetuned_checkpoint/__all__/current.json").read_text())
    dataset = json.loads((graph["home"] / "reer/assets/sft_dataset/__all__/current.json").read_text())
    rows = pl.read_parquet(Path(dataset["path"]) / "train.parquet")["messages"].to_list()
    from reer_assets.backends.training import assistant_nll

    assert assistant_nll(tuned["path"], rows) < assistant_nll(base["path"], rows)


def test_benchmark_scores_cover_both_models_and_all_domains(graph):
    from reer_assets.core.evaluation.metrics import check_format, length_score
    from reer_assets.core.language import length_units

    frame = pl.read_parquet(graph["home"] / "reer/assets/benchmark_scores/__all__/results.parquet")
    assert set(frame["model_label"]) == {"base", "finetuned"}
    assert frame.group_by("domain").len()["len"].min() >= 10  # 5+ prompts x 2 models
    for row in frame.iter_rows(named=True):  # every stored metric is what the stored output gives
        fmt = check_format(row["output"])
        assert row["format_ok"] == fmt.adherent
        assert row["output_length"] == length_units(fmt.answer, row["language"])
        assert row["length_score"] == length_score(row["required_length"], row["output_length"])
    # the two models are different models: their held-out NLLs differ prompt by prompt
    nll = frame.pivot(on="model_label", index="prompt_id", values="heldout_nll")
    assert (nll["base"] != nll["finetuned"]).all()


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


def test_exports_load_and_train_as_they_are(graph, tmp_path):
    """`reer export` for TRL and LLaMA-Factory: datasets reads the TRL export and TRL trains a step on it."""
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    env = {**os.environ, "DAGSTER_HOME": str(graph["home"])}
    env.pop("REER_LINEAGE_DB", None)
    base = json.loads((graph["home"] / "reer/assets/base_model/__all__/current.json").read_text())
    written = {}
    for fmt in ("trl", "sharegpt"):
        out = subprocess.run([sys.executable, "-m", "reer_assets.cli", "export", "--format", fmt, "--out",
                              str(tmp_path / fmt), "--tokenizer", base["path"], "--json"],
                             env=env, capture_output=True, text=True, check=True).stdout
        written[fmt] = json.loads(out)
    pointer = json.loads((graph["home"] / "reer/assets/sft_dataset/__all__/current.json").read_text())
    assert written["trl"]["rows"] == written["sharegpt"]["rows"] == pointer["rows"]

    dataset = load_dataset("parquet", data_files=str(tmp_path / "trl" / "train.parquet"), split="train")
    assert dataset.num_rows == pointer["rows"]
    assert [m["role"] for m in dataset[0]["messages"]] == ["system", "user", "assistant"]
    args = SFTConfig(output_dir=str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=2, use_cpu=True,
                     report_to="none", save_strategy="no", max_length=4096, disable_tqdm=True)
    trainer = SFTTrainer(model=base["path"], args=args, train_dataset=dataset)
    assert trainer.train().global_step == 1

    sharegpt = json.loads((tmp_path / "sharegpt" / "train.json").read_text())
    info = json.loads((tmp_path / "sharegpt" / "dataset_info.json").read_text())
    assert info["reer_sft"]["file_name"] == "train.json" and info["reer_sft"]["formatting"] == "sharegpt"
    assert [t["from"] for t in sharegpt[0]["conversations"]] == ["human", "gpt"] and sharegpt[0]["system"]
    card = (tmp_path / "trl" / "README.md").read_text()
    for field in ("Token statistics", "generator", "scorer", "licence", "Filter funnel", pointer["version"]):
        assert field in card, field


def test_search_report_matches_the_search_outputs(graph):
    """`reer lineage report search`: its numbers are the ones the Parquet outputs give."""
    env = {**os.environ, "REER_LINEAGE_DB": str(graph["home"] / "lineage.duckdb")}
    out = subprocess.run([sys.executable, "-m", "reer_assets.cli", "lineage", "report", "search", "--json"], env=env,
                         capture_output=True, text=True, check=True).stdout
    sections = {s["name"]: s["rows"] for s in json.loads(out)["sections"]}
    assert set(sections) == {"gain_by_position", "acceptance_by_step", "parse_failures", "tokens_per_accepted_edit",
                             "stop_reasons"}
    folder = graph["home"] / "reer/assets/refined_trajectories" / DOMAIN
    steps, candidates = pl.read_parquet(folder / "search_steps.parquet"), pl.read_parquet(folder / "candidates.parquet")
    trajectories = pl.read_parquet(folder / "trajectories.parquet").filter(pl.col("status") == "ok")
    by_step = {r["step_index"]: r for r in sections["acceptance_by_step"]}
    for index, part in steps.group_by("step_index"):
        assert by_step[index[0]]["steps"] == part.height
        assert by_step[index[0]]["accepted"] == part["choice"].is_not_null().sum()
    (failures,) = sections["parse_failures"]
    assert failures["candidates"] == candidates.height and failures["unparsed"] == candidates["text"].is_null().sum()
    stops = {r["stopped_reason"]: r["items"] for r in sections["stop_reasons"]}
    expected = trajectories["trace_json"].map_elements(lambda t: json.loads(t)["stopped_reason"], return_dtype=pl.String)
    assert stops == dict(expected.value_counts().iter_rows())
    gains = sum(r["total_gain"] for r in sections["gain_by_position"])
    searched = trajectories.filter(pl.col("num_steps") > 0)
    assert abs(gains - float((searched["initial_score"] - searched["final_score"]).sum())) < 1e-3
