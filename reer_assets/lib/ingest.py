"""Source readers and cleaning for ``raw_documents``: one row per input record, rejects kept."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import polars as pl

from reer_assets import data
from reer_assets.core.cleaning import detect_language, document_reasons, normalize_text, text_hash
from reer_assets.core.ids import stable_id
from reer_assets.lib.paths import inbox_dir


@dataclass
class SourceRecord:
    source_uri: str
    text: str
    title: str | None = None
    given_request: str | None = None
    license: str | None = None
    language: str | None = None
    read_error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def read_bundled(domain: str, options: dict[str, Any]) -> Iterator[SourceRecord]:
    for piece in data.corpus(domain):
        yield SourceRecord(
            source_uri=f"bundled://corpus/{domain}.jsonl#{piece['id']}",
            text=piece["text"],
            title=piece.get("title"),
            given_request=piece["request"] if piece.get("request_given") else None,
            license=piece.get("license"),
            language=piece.get("language"),
        )


def read_inbox(domain: str, options: dict[str, Any]) -> Iterator[SourceRecord]:
    folder = Path(options.get("path") or inbox_dir(domain))
    if not folder.exists():
        return
    for path in sorted(folder.glob("*")):
        if path.suffix.lower() not in (".txt", ".md") or not path.is_file():
            continue
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            yield SourceRecord(path.resolve().as_uri(), "", read_error=f"invalid_utf8:{exc.start}")
            continue
        except OSError as exc:
            yield SourceRecord(path.resolve().as_uri(), "", read_error=f"unreadable:{type(exc).__name__}")
            continue
        yield SourceRecord(path.resolve().as_uri(), text, title=path.stem)


READERS = {"bundled": read_bundled, "inbox": read_inbox}


@dataclass(frozen=True)
class CleaningConfig:
    min_units: int = 50  # words (en) / characters (zh)
    max_units: int = 20000

    def to_dict(self) -> dict[str, Any]:
        return {"min_units": self.min_units, "max_units": self.max_units}


def ingest_domain(domain: str, spec: dict[str, Any], config: CleaningConfig, cfg_hash: str) -> pl.DataFrame:
    """All records of a domain's sources, cleaned; exact duplicates and bad records rejected with reasons."""
    sources = list(spec.get("sources") or [{"reader": "bundled"}])
    if not any(s.get("reader") == "inbox" for s in sources):
        sources.append({"reader": "inbox"})
    allowed = list(spec.get("languages") or [])
    rows, seen = [], {}
    for source in sources:
        reader = READERS.get(source.get("reader", ""))
        if reader is None:
            raise ValueError(f"domain {domain}: unknown reader {source.get('reader')!r}; known: {', '.join(READERS)}")
        for record in reader(domain, source):
            text = normalize_text(record.text)
            language = record.language or detect_language(text)
            reasons = [record.read_error] if record.read_error else document_reasons(
                text, language, config.min_units, config.max_units, allowed)
            digest = text_hash(text)
            doc_id = stable_id("doc", domain, record.source_uri, digest)
            if not reasons and digest in seen:
                reasons = [f"exact_duplicate_of:{seen[digest]}"]
            if not reasons:
                seen[digest] = doc_id
            rows.append({
                "id": doc_id, "domain": domain, "source_uri": record.source_uri, "language": language,
                "title": record.title, "text": text, "text_hash": digest, "given_request": record.given_request,
                "license": record.license, "status": "rejected" if reasons else "accepted",
                "reject_reasons": reasons, "config_hash": cfg_hash,
            })
    schema = {"id": pl.String, "domain": pl.String, "source_uri": pl.String, "language": pl.String,
              "title": pl.String, "text": pl.String, "text_hash": pl.String, "given_request": pl.String,
              "license": pl.String, "status": pl.String, "reject_reasons": pl.List(pl.String),
              "config_hash": pl.String}
    return pl.DataFrame(rows, schema=schema)
