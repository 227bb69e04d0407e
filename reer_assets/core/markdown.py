"""Markdown tables, built in one place (metadata previews, dataset and checkpoint cards, reports)."""

from __future__ import annotations

from typing import Any, Iterable, Sequence


def cell(value: Any, width: int | None = None) -> str:
    """One table cell: lists joined, newlines flattened, pipes escaped, cut to ``width`` characters."""
    if value is None:
        text = ""
    elif isinstance(value, (list, tuple)):
        text = ", ".join(map(str, value))
    elif isinstance(value, float):
        text = f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"
    else:
        text = str(value)
    text = text.replace("\n", " ").replace("|", "\\|")
    if width is not None and len(text) > width:
        text = text[:width] + "…"
    return text


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], width: int | None = None) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v, width) for v in row) + " |" for row in rows]
    return "\n".join(lines)
