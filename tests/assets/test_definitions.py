"""The definitions load, and the graph has the shape the README draws."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_dagster_definitions_validate(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    dagster = Path(sys.executable).parent / "dagster"
    result = subprocess.run([str(dagster), "definitions", "validate", "-w", "workspace.yaml"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful" in result.stdout + result.stderr


def test_graph_shape_partitions_pools_and_checks():
    from reer_assets.lib.domains import domain_names
    from reer_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {"raw_documents", "synthesized_queries", "refined_trajectories", "filtered_dataset",
                    "sft_dataset", "base_model", "finetuned_checkpoint", "benchmark_scores", "lineage_compaction",
                    "ablation_datasets", "ablation_checkpoints", "ablation_results", "experiment_report", "run_plan"}
    partitioned = {"run_plan", "raw_documents", "synthesized_queries", "refined_trajectories", "filtered_dataset",
                   "ablation_datasets", "ablation_checkpoints", "ablation_results"}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        name = key.to_user_string()
        if name in partitioned:
            assert node.partitions_def.get_partition_keys() == domain_names()
        else:
            assert node.partitions_def is None
    parents = {k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys} for k in graph.get_all_asset_keys()}
    assert parents["refined_trajectories"] == {"synthesized_queries"}
    assert parents["sft_dataset"] == {"filtered_dataset"}
    assert parents["finetuned_checkpoint"] == {"base_model", "sft_dataset"}
    assert parents["benchmark_scores"] == {"base_model", "finetuned_checkpoint"}
    assert parents["ablation_datasets"] == {"filtered_dataset", "refined_trajectories"}
    assert parents["ablation_checkpoints"] == {"ablation_datasets", "base_model"}
    assert parents["ablation_results"] == {"ablation_checkpoints", "base_model"}  # base_model: the floor
    assert parents["experiment_report"] == {"ablation_results"}
    pools = {a.key.to_user_string(): a.op.pool for a in defs.assets}
    assert pools["refined_trajectories"] == "gpu" and pools["filtered_dataset"] == "duckdb"
    assert pools["ablation_checkpoints"] == pools["ablation_results"] == "gpu" and pools["experiment_report"] == "duckdb"
    checks = {c.key.name for a in defs.asset_checks for c in a.check_specs}
    assert {"filtered_dataset_schema", "filtered_dataset_not_empty", "filtered_dataset_unique_queries",
            "finetuned_nll_not_worse"} <= checks
    assert {j.name for j in defs.jobs} >= {"domain_pipeline_job", "model_pipeline_job", "ingest_job", "experiment_job"}


def test_defs_import_no_torch_or_vllm():
    code = "import sys, reer_assets.definitions; print([m for m in ('torch','vllm','transformers') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_dagster_yaml_limits_pools_to_one():
    import yaml

    config = yaml.safe_load((REPO / "dagster_home" / "dagster.yaml").read_text())
    assert config["concurrency"]["pools"]["default_limit"] == 1
