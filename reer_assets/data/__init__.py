"""The bundled corpus, worked examples and benchmark prompts (original texts, Apache-2.0).

Layout:
  corpus/<domain>.jsonl          pieces: id, domain, language, title, request, request_given, text, license
  examples/initial_thinking_*.jsonl   worked initial-thinking examples (piece_id, query, thinking)
  examples/segment_edits_*.jsonl      worked segment edits (thinking_id, segment_index, weak_segment, analysis, refined)
  benchmark/prompts.jsonl        benchmark prompts with required length and a held-out reference
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

DATA_DIR = Path(__file__).resolve().parent


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def _rows(pattern: str) -> list[dict[str, Any]]:
    return [row for path in sorted(DATA_DIR.glob(pattern)) for row in read_jsonl(path)]


def corpus(domain: str | None = None) -> list[dict[str, Any]]:
    """Bundled pieces, optionally of one domain."""
    rows = _rows("corpus/*.jsonl")
    return [r for r in rows if domain is None or r["domain"] == domain]


def pieces_by_id() -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in corpus()}


def initial_thinking_examples() -> list[dict[str, Any]]:
    return _rows("examples/initial_thinking_*.jsonl")


def segment_edit_examples() -> list[dict[str, Any]]:
    return _rows("examples/segment_edits_*.jsonl")


def benchmark_prompts(domain: str | None = None) -> list[dict[str, Any]]:
    rows = _rows("benchmark/prompts.jsonl")
    return [r for r in rows if domain is None or r["domain"] == domain]


def domains() -> list[str]:
    return sorted({row["domain"] for row in corpus()})


def data_files() -> list[Path]:
    """Every bundled data file, in a stable order (the embedded model's build hash covers them)."""
    return sorted(p for p in DATA_DIR.rglob("*.jsonl"))
