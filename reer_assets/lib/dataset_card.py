"""The dataset card written beside every sft_dataset version."""

from __future__ import annotations

import json

import polars as pl

from reer_assets.lib.metadata import reason_counts


def _stats(frame: pl.DataFrame, column: str) -> str:
    values = frame[column].drop_nulls()
    if values.is_empty():
        return "n/a"
    return f"mean {values.mean():.3f}, median {values.median():.3f}, min {values.min():.3f}, max {values.max():.3f}"


def render_card(version: str, full: pl.DataFrame, accepted: pl.DataFrame, filters: dict | None = None) -> str:
    lines = [
        f"# REER SFT dataset `{version}`",
        "",
        "Chat-format rows (`messages`: user = request, assistant = `<think>` planning monologue found by",
        "REER local search, then the reference answer). Made by reer-assets; texts are the project's own",
        "bundled corpus unless the domains configure other sources.",
        "",
        "## Rows per domain",
        "",
        "| domain | trajectories | accepted | rejected |",
        "|---|---|---|---|",
    ]
    for domain in sorted(full["domain"].unique().to_list()):
        part = full.filter(pl.col("domain") == domain)
        ok = int((part["status"] == "accepted").sum())
        lines.append(f"| {domain} | {part.height} | {ok} | {part.height - ok} |")
    lines += [
        f"| **all** | {full.height} | {accepted.height} | {full.height - accepted.height} |",
        "",
        "## Scores (clipped mean NLL of the reference, lower is better)",
        "",
        f"- initial thinking: {_stats(accepted, 'initial_score')}" if accepted.height else "- no accepted rows",
        f"- final thinking: {_stats(accepted, 'final_score')}" if accepted.height else "",
        "",
        "## Filter funnel (reasons among rejected rows; a row may have several)",
        "",
        "| reason | rows |",
        "|---|---|",
    ]
    for reason, count in reason_counts(full).items():
        lines.append(f"| {reason} | {count} |")
    settings = {json.dumps(v, sort_keys=True) for v in (filters or {}).values() if v}
    if settings:
        lines += ["", "## Filter settings", ""]
        lines += [f"- `{s}`" for s in sorted(settings)]
        if any('"reject_malformed_tags": false' in s for s in settings):
            lines += ["", "Note: the malformed-tag filter was off (demo/test profile for the toy embedded model)."]
    return "\n".join(lines) + "\n"
