"""Every path the engine writes, from one place.

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

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SQL_DIR = REPO_ROOT / "sql"
UNPARTITIONED = "__all__"


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or REPO_ROOT / "dagster_home")


def lineage_db() -> Path:
    return Path(os.environ.get("REER_LINEAGE_DB") or dagster_home() / "lineage.duckdb")


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
