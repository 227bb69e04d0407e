"""The corpus shipped with the package: ``<dir>/*.jsonl`` (``reer_assets/data/corpus``, as the pipeline places
it), the pieces of one domain."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from reer_assets.core.ingest.readers.common import SourceRecord, resolve_options

DEFAULTS: dict[str, Any] = {"dir": None}  # the bundled corpus folder (pipeline.domain_sources sets it)


def bundled_pieces(folder: str | Path, domain: str | None = None) -> list[dict[str, Any]]:
    """Every piece of the JSONL files in ``folder`` (sorted by name), optionally of one domain."""
    rows = []
    for path in sorted(Path(folder).glob("*.jsonl")):
        with path.open(encoding="utf-8") as handle:
            rows += [json.loads(line) for line in handle if line.strip()]
    return [r for r in rows if domain is None or r["domain"] == domain]


def read_bundled(domain: str, options: dict[str, Any]) -> Iterator[SourceRecord]:
    opts = resolve_options("bundled", DEFAULTS, options)
    if not opts["dir"]:
        raise ValueError("reader 'bundled' needs a 'dir' (the bundled corpus folder)")
    for piece in bundled_pieces(opts["dir"], domain):
        yield SourceRecord(
            source_uri=f"bundled://corpus/{domain}.jsonl#{piece['id']}",
            text=piece["text"],
            source_id=piece["id"],
            domain=domain,
            title=piece.get("title"),
            given_request=piece["request"] if piece.get("request_given") else None,
            license=piece.get("license"),
            language=piece.get("language"),
        )
