"""Shaping stage outputs into lineage rows: a table's lineage columns (``core/schemas.py``) plus run id and partition."""

from __future__ import annotations

import polars as pl

from reer_assets.core.schemas import TABLES


def stamp(table: str, frame: pl.DataFrame, run_id: str, partition: str | None) -> pl.DataFrame:
    """The frame's lineage columns for ``table`` plus the Dagster run id and partition."""
    return frame.select(list(TABLES[table].lineage)).with_columns(
        pl.lit(run_id, dtype=pl.String).alias("run_id"),
        pl.lit(partition, dtype=pl.String).alias("partition"),
    )
