"""Small builders for the metadata every materialisation shows in the Dagster UI."""

from __future__ import annotations

from typing import Any, Iterable

import dagster as dg
import polars as pl

from reer_assets.core.markdown import markdown_table


def preview(frame: pl.DataFrame, columns: list[str], rows: int = 5, width: int = 80) -> dg.MetadataValue:
    """A markdown table of the first rows, long texts cut to ``width`` characters."""
    if frame.is_empty():
        return dg.MetadataValue.md("_no rows_")
    head = frame.select([c for c in columns if c in frame.columns]).head(rows)
    return dg.MetadataValue.md(markdown_table(head.columns, head.iter_rows(), width))


def counts_table(counts: dict[str, Any], key: str = "reason", value: str = "count") -> dg.MetadataValue:
    if not counts:
        return dg.MetadataValue.md("_none_")
    return dg.MetadataValue.md(markdown_table([key, value], counts.items()))


def histogram(values: Iterable[float | None], bins: list[float]) -> dg.MetadataValue:
    """A markdown histogram with text bars over the given bin edges."""
    vals = [v for v in values if v is not None]
    edges = list(bins)
    counts = [0] * (len(edges) - 1)
    for v in vals:
        for i in range(len(edges) - 1):
            if edges[i] <= v < edges[i + 1] or (i == len(edges) - 2 and v == edges[-1]):
                counts[i] += 1
                break
    top = max(counts) if counts and max(counts) else 1
    rows = [(f"{edges[i]:.2f}–{edges[i + 1]:.2f}", n, "█" * round(20 * n / top)) for i, n in enumerate(counts)]
    return dg.MetadataValue.md(markdown_table(["range", "n", ""], rows))


def md_table(headers: list[str], rows: Iterable) -> dg.MetadataValue:
    return dg.MetadataValue.md(markdown_table(headers, rows))


def reason_counts(frame: pl.DataFrame, column: str = "reject_reasons") -> dict[str, int]:
    """Rows per reason kind (the part before ":"; details such as duplicate ids stay in the data)."""
    if frame.is_empty() or column not in frame.columns:
        return {}
    exploded = frame.select(pl.col(column).explode().str.split(":").list.first().alias("reason")).drop_nulls()
    if exploded.is_empty():
        return {}
    counted = exploded.group_by("reason").len().sort("len", descending=True)
    return {row[0]: row[1] for row in counted.iter_rows()}


def mean(frame: pl.DataFrame, column: str) -> float | None:
    if frame.is_empty() or column not in frame.columns:
        return None
    value = frame[column].drop_nulls().mean()
    return None if value is None else round(float(value), 4)
