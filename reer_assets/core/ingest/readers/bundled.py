"""The corpus shipped with the package (``reer_assets/data/corpus/<domain>.jsonl``)."""

from __future__ import annotations

from typing import Any, Iterator

from reer_assets import data
from reer_assets.core.ingest.readers.common import SourceRecord, resolve_options


def read_bundled(domain: str, options: dict[str, Any]) -> Iterator[SourceRecord]:
    resolve_options("bundled", {}, options)
    for piece in data.corpus(domain):
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
