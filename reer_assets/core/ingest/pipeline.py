"""Source readers wired to cleaning: one ``raw_documents`` row per input record, rejects kept.

Readers (``reer_assets/sources/``) turn files into :class:`SourceRecord` s; a
:class:`Cleaner` normalises each one (NFC, no control characters, collapsed whitespace),
identifies its language and rejects, with every reason kept in the row: read errors, length
bounds, languages outside the domain's allow-list, exact duplicates (normalised-text hash)
and near duplicates (MinHash; the first seen is kept and the later one names it).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import polars as pl

from reer_assets.core.curation import NearDuplicateIndex
from reer_assets.core.ids import stable_id
from reer_assets.core.ingest.cleaning import detect_language, document_reasons, normalize_text, text_hash
from reer_assets.core.ingest.domains import SourcePlaces
from reer_assets.core.ingest.readers.book import read_book
from reer_assets.core.ingest.readers.bundled import read_bundled
from reer_assets.core.ingest.readers.common import SourceRecord
from reer_assets.core.ingest.readers.deepwriting import read_deepwriting
from reer_assets.core.ingest.readers.generic import read_generic
from reer_assets.core.ingest.readers.inbox import read_inbox
from reer_assets.core.ingest.readers.pairs import read_pairs
from reer_assets.core.ingest.readers.reer import read_reer
from reer_assets.core.schemas import DOCUMENTS

__all__ = ["READERS", "CleaningConfig", "Cleaner", "SourceRecord", "ingest_domain", "ingest_path", "ingest_source",
           "ingest_summary", "public_record"]

Reader = Callable[[str, dict[str, Any]], Iterator[SourceRecord]]
READERS: dict[str, Reader] = {
    "bundled": read_bundled,
    "inbox": read_inbox,
    "pairs": read_pairs,
    "book": read_book,
    "reer": read_reer,
    "generic": read_generic,
    "deepwriting": read_deepwriting,
}



@dataclass(frozen=True)
class CleaningConfig:
    min_units: int = 50  # words (en and other spaced languages) / characters (zh)
    max_units: int = 20000
    min_chars: int = 0
    max_chars: int | None = None
    near_duplicate_threshold: float | None = 0.85  # MinHash Jaccard estimate; None or 0 turns it off
    minhash_num_perm: int = 64

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_overrides(self, overrides: dict[str, Any] | None) -> "CleaningConfig":
        """This config with a domain's ``cleaning:`` settings (or CLI options) applied."""
        if not overrides:
            return self
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown cleaning setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return replace(self, **overrides)


def domain_cleaning(spec: dict[str, Any], base: CleaningConfig) -> tuple[CleaningConfig, list[str]]:
    """The cleaning config and language allow-list of a domain (``cleaning:`` and ``languages:`` in domains.yaml)."""
    return base.with_overrides(spec.get("cleaning")), [str(code).lower() for code in spec.get("languages") or []]


class Cleaner:
    """Cleans records one at a time, remembering what it accepted so later copies are rejected."""

    def __init__(self, domain: str, config: CleaningConfig, allowed_languages: Iterable[str], cfg_hash: str):
        self.domain, self.config, self.cfg_hash = domain, config, cfg_hash
        self.allowed = [code.lower() for code in allowed_languages]
        self._exact: dict[str, str] = {}
        self._ids: Counter[str] = Counter()
        threshold = config.near_duplicate_threshold
        self._near = NearDuplicateIndex(threshold, config.minhash_num_perm) if threshold else None

    def row(self, record: SourceRecord, reader: str) -> dict[str, Any]:
        text = normalize_text(record.text)
        digest = text_hash(text)
        # the cleaning config is part of the id: a row's verdict depends on it, and a new config
        # must add rows to lineage, never overwrite the old config's
        # a published thinking is part of what the document is: a source that gains or changes one makes
        # new rows (and so new queries downstream); without one the id is what it always was
        identity = (record.published_thinking,) if record.published_thinking else ()
        doc_id = stable_id("doc", self.domain, record.source_uri, digest, self.cfg_hash, *identity)
        self._ids[doc_id] += 1
        if self._ids[doc_id] > 1:  # the same file listed twice: keep both rows, distinct ids
            doc_id = stable_id("doc", self.domain, record.source_uri, digest, self.cfg_hash, *identity,
                               self._ids[doc_id])
        duplicate_of = None
        if record.read_error:
            language, reasons = (record.language or None), [record.read_error]
        else:
            language = (record.language or "").strip().lower() or (detect_language(text) if text else None)
            cfg = self.config
            reasons = document_reasons(text, language, cfg.min_units, cfg.max_units, self.allowed,
                                       cfg.min_chars, cfg.max_chars)
        if not reasons and digest in self._exact:
            duplicate_of = self._exact[digest]
            reasons = [f"exact_duplicate_of:{duplicate_of}"]
        if not reasons and self._near is not None:
            duplicate_of = self._near.first_duplicate(doc_id, text)
            if duplicate_of:
                reasons = [f"near_duplicate_of:{duplicate_of}"]
        if not reasons:
            self._exact[digest] = doc_id
        return {
            "id": doc_id, "domain": self.domain, "reader": reader, "source_uri": record.source_uri,
            "source_id": record.source_id, "language": language, "title": record.title, "text": text,
            "text_hash": digest, "given_request": record.given_request,
            "published_thinking": record.published_thinking, "license": record.license,
            "attribution": record.attribution,
            "source_meta": json.dumps(record.meta, ensure_ascii=False, sort_keys=True, default=str) if record.meta else None,
            "status": "rejected" if reasons else "accepted", "reject_reasons": reasons, "duplicate_of": duplicate_of,
            "config_hash": self.cfg_hash,
        }


def _resolve_path(options: dict[str, Any], base: Path) -> dict[str, Any]:
    """A relative local ``path`` in domains.yaml is relative to that file, not to the working directory."""
    path = options.get("path")
    if isinstance(path, str) and "://" not in path and not Path(path).is_absolute():
        return {**options, "path": str(base / path)}
    return options


def _place(source: dict[str, Any], places: SourcePlaces) -> dict[str, Any]:
    """A source with the folder its reader reads by default: an inbox its instance's inbox root, the bundled
    corpus its folder (unless the source names a path or folder of its own)."""
    if source.get("reader") == "inbox" and not source.get("path") and not source.get("root"):
        return {**source, "root": str(places.inbox_root)}
    if source.get("reader") == "bundled" and not source.get("dir"):
        return {**source, "dir": str(places.bundled_dir)}
    return source


def domain_sources(domain: str, spec: dict[str, Any], places: SourcePlaces) -> list[dict[str, Any]]:
    """The domain's configured sources (bundled when none), plus its inbox folder, placed by ``places``."""
    sources = list(spec.get("sources") or [{"reader": "bundled"}])
    if not any(s.get("reader") == "inbox" for s in sources):
        sources.append({"reader": "inbox"})
    for source in sources:
        if source.get("reader") not in READERS:
            raise ValueError(f"domain {domain}: unknown reader {source.get('reader')!r}; known: {', '.join(READERS)}")
    return [_place(_resolve_path(s, places.domains_dir), places) for s in sources]


def ingest_source(reader: str, options: dict[str, Any], cleaner: Cleaner) -> Iterator[dict[str, Any]]:
    """Rows for one reader's records, cleaned by ``cleaner`` (which carries duplicate state across sources)."""
    if reader not in READERS:
        raise ValueError(f"unknown reader {reader!r}; known: {', '.join(READERS)}")
    for record in READERS[reader](cleaner.domain, options):
        yield cleaner.row(record, reader)


def ingest_domain(domain: str, spec: dict[str, Any], config: CleaningConfig, cfg_hash: str,
                  places: SourcePlaces) -> pl.DataFrame:
    """All records of a domain's sources (placed by ``places``), cleaned; every reject kept with its reasons."""
    config, allowed = domain_cleaning(spec, config)
    cleaner = Cleaner(domain, config, allowed, cfg_hash)
    rows = [row for source in domain_sources(domain, spec, places)
            for row in ingest_source(source["reader"], {k: v for k, v in source.items() if k != "reader"}, cleaner)]
    return DOCUMENTS.frame(rows)


def ingest_summary(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Rows in, accepted, rejected, and rejects per reason kind (the part before ':')."""
    total, accepted, reasons = 0, 0, Counter()
    for row in rows:
        total += 1
        if row["status"] == "accepted":
            accepted += 1
        for reason in row["reject_reasons"]:
            reasons[reason.split(":", 1)[0]] += 1
    return {"rows": total, "accepted": accepted, "rejected": total - accepted, "reasons": dict(reasons.most_common())}


CLEANING_KEYS = frozenset(f.name for f in fields(CleaningConfig))


def ingest_path(reader: str, path: str, domain: str, options: dict[str, Any],
                spec: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Rows for one file or folder read by one reader, without Dagster (``reer ingest``).

    ``options`` mixes reader options with cleaning settings (``min_units``, ... and
    ``languages``); ``spec``, the domain's entry in domains.yaml when it has one, brings its allow-list
    and ``cleaning:`` block.
    """
    from reer_assets.core.ids import config_hash

    config, allowed = domain_cleaning(spec or {}, CleaningConfig())
    config = config.with_overrides({k: v for k, v in options.items() if k in CLEANING_KEYS})
    if "languages" in options:
        languages = options["languages"]
        allowed = [str(code).lower() for code in (languages if isinstance(languages, list) else str(languages).split(","))]
    reader_options = {k: v for k, v in options.items() if k not in CLEANING_KEYS and k != "languages"}
    cleaner = Cleaner(domain, config, allowed, config_hash({**config.to_dict(), "languages": allowed}))
    yield from ingest_source(reader, {**reader_options, "path": path}, cleaner)


def public_record(row: dict[str, Any]) -> dict[str, Any]:
    """The fields ``reer ingest --jsonl`` prints for a row (the text only for accepted rows)."""
    record = {"id": row["id"], "source": row["source_uri"], "status": row["status"], "reasons": row["reject_reasons"],
              "language": row["language"], "query": row["given_request"]}
    if row["status"] == "accepted":
        record["text"] = row["text"]
        if row.get("published_thinking"):
            record["published_thinking"] = row["published_thinking"]
    return record
