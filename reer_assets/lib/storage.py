"""Every path the engine writes, from one place, and the registry of each asset's outputs.

Layout under the instance folder (``$DAGSTER_HOME``, default ``./dagster_home``):
  lineage.duckdb                         lineage (override: REER_LINEAGE_DB)
  reer/assets/<asset>/<partition>/       Parquet outputs + fingerprint.json per asset partition
  reer/work/<asset>/<partition>/<fp>/    workload scratch and per-item checkpoints
  reer/datasets/sft/<version>/           sft_dataset exports (Parquet, JSONL, card)
  reer/checkpoints/<id>/                 fine-tuned checkpoints
  models/embedded/<key>/                 the embedded default model
  inbox/<domain>/                        drop folder watched by the inbox sensor
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reer_assets.settings import REPO_ROOT, SQL_DIR, dagster_home, lineage_db  # noqa: F401 (re-exported)

UNPARTITIONED = "__all__"

# What each asset writes into its folder (asset_dir): output name -> file. Downstream code asks for an
# output by asset and name, never by file name.
OUTPUTS: dict[str, dict[str, str]] = {
    "raw_documents": {"documents": "documents.parquet"},
    "synthesized_queries": {"queries": "queries.parquet"},
    "refined_trajectories": {"trajectories": "trajectories.parquet", "search_steps": "search_steps.parquet",
                             "candidates": "candidates.parquet"},
    "filtered_dataset": {"dataset": "dataset.parquet"},
    "sft_dataset": {"current": "current.json"},
    "base_model": {"current": "current.json"},
    "finetuned_checkpoint": {"current": "current.json"},
    "benchmark_scores": {"results": "results.parquet", "judgments": "judgments.parquet", "summary": "summary.json"},
}


def output_path(asset: str, name: str, partition: str | None = None) -> Path:
    try:
        return asset_dir(asset, partition) / OUTPUTS[asset][name]
    except KeyError:
        raise KeyError(f"{asset} has no output {name!r}; its outputs: {', '.join(OUTPUTS.get(asset, {}))}") from None


def output_paths(asset: str, partition: str | None = None) -> dict[str, Path]:
    return {name: output_path(asset, name, partition) for name in OUTPUTS[asset]}


def read_output(asset: str, name: str, partition: str | None = None):
    """An upstream asset's Parquet output as a Polars frame, with a clear error when it was never made."""
    import polars as pl

    path = output_path(asset, name, partition)
    if not path.exists():
        raise FileNotFoundError(f"{asset}[{partition or 'unpartitioned'}] has not been materialised yet ({path})")
    return pl.read_parquet(path)


def read_pointer(asset: str) -> dict[str, Any]:
    """What an unpartitioned asset points at (its ``current`` record: a dataset version, a model path)."""
    path = output_path(asset, "current")
    if not path.exists():
        raise FileNotFoundError(f"{asset} has not been materialised yet")
    return json.loads(path.read_text())


def write_pointer(asset: str, record: dict[str, Any]) -> Path:
    path = output_path(asset, "current")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    tmp.replace(path)
    return path


def reer_root() -> Path:
    return dagster_home() / "reer"


def asset_dir(asset: str, partition: str | None = None) -> Path:
    return reer_root() / "assets" / asset / (partition or UNPARTITIONED)


def work_dir(asset: str, partition: str | None, fingerprint: str) -> Path:
    return reer_root() / "work" / asset / (partition or UNPARTITIONED) / fingerprint


def dataset_dir(name: str, version: str) -> Path:
    return reer_root() / "datasets" / name / version


def checkpoint_dir(checkpoint_id: str) -> Path:
    return reer_root() / "checkpoints" / checkpoint_id


def inbox_dir(domain: str) -> Path:
    return dagster_home() / "inbox" / domain
