"""Blocking structural checks on filtered_dataset: downstream assets wait for them."""


import dagster as dg
import polars as pl

from reer_assets.lib.domains import domain_names
from reer_assets.core.curation import DATASET_COLUMNS
from reer_assets.lib.storage import output_path, read_parquet


def _frames(context: dg.AssetCheckExecutionContext) -> dict[str, pl.DataFrame]:
    """The partition this run materialised, or every materialised partition when run on its own."""
    op = context.op_execution_context
    keys = [op.partition_key] if op.has_partition_key else domain_names()
    paths = {k: output_path("filtered_dataset", "dataset", k) for k in keys}
    return {k: read_parquet(p) for k, p in paths.items() if p.exists()}


@dg.asset_check(asset="filtered_dataset", blocking=True, description="Columns and types are those the SFT export expects.")
def filtered_dataset_schema(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    problems = {}
    for key, frame in _frames(context).items():
        missing = [c for c in DATASET_COLUMNS if c not in frame.columns]
        wrong = [c for c, t in DATASET_COLUMNS.items() if c in frame.columns and frame.schema[c] != t]
        if missing or wrong:
            problems[key] = {"missing": missing, "wrong_type": wrong}
    return dg.AssetCheckResult(passed=not problems, metadata={"problems": problems})


@dg.asset_check(asset="filtered_dataset", blocking=True,
                description="The partition has accepted rows (a partition whose rows are all rejected fails).")
def filtered_dataset_not_empty(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    frames = _frames(context)
    accepted = {k: int((f["status"] == "accepted").sum()) for k, f in frames.items()}
    return dg.AssetCheckResult(passed=bool(frames) and all(accepted.values()),
                               metadata={"accepted": accepted, "rows": {k: f.height for k, f in frames.items()}})


@dg.asset_check(asset="filtered_dataset", blocking=True, description="No two accepted rows share a query.")
def filtered_dataset_unique_queries(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    duplicates = {}
    for key, frame in _frames(context).items():
        accepted = frame.filter(pl.col("status") == "accepted")
        dupes = accepted.group_by("query").len().filter(pl.col("len") > 1)
        if dupes.height:
            duplicates[key] = dupes.height
    return dg.AssetCheckResult(passed=not duplicates, metadata={"duplicate_queries": duplicates})
