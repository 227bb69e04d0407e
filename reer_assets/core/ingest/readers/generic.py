"""Generic folders of JSONL, Parquet and Markdown/text files with configurable field names.

JSONL and Parquet hold one document per row (read line by line / batch by batch); a Markdown
or text file is one document, with optional YAML front matter giving ``title``, ``request``,
``language``, ``license`` or ``id``. Field names apply to rows and front matter alike.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

from reer_assets.core.ingest.readers.common import (SourceFile, SourceRecord, field_value, jsonl_records,
    read_files, read_text_file, require_path, resolve_options, split_front_matter, text_value)

DEFAULTS: dict[str, Any] = {
    "format": None,  # jsonl | parquet | markdown; by default from each file's suffix
    "text_field": "text",
    "request_field": "request",
    "id_field": "id",
    "title_field": "title",
    "language_field": "language",
    "license_field": "license",
    "encoding": "utf-8",
    "language": None,  # for every record that does not state its own
    "license": None,
    "batch_size": 256,  # Parquet rows read at a time
}
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".md": "markdown", ".markdown": "markdown",
           ".txt": "markdown"}
_HEADING = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.MULTILINE)


def read_generic(domain: str, options: dict[str, Any]) -> Iterator[SourceRecord]:
    opts = resolve_options("generic", DEFAULTS, options)
    path = require_path("generic", options)
    if opts["format"] not in (None, *set(FORMATS.values())):
        raise ValueError(f"reader 'generic': format must be one of jsonl, parquet, markdown, not {opts['format']!r}")
    return read_files(path, tuple(FORMATS), lambda file: read_generic_file(file, opts), domain)


def read_generic_file(file: SourceFile, opts: dict[str, Any]) -> Iterator[SourceRecord]:
    fmt = opts["format"] or FORMATS.get(file.suffix, "markdown")
    if fmt == "jsonl":
        yield from _jsonl(file, opts)
    elif fmt == "parquet":
        yield from _parquet(file, opts)
    else:
        yield from markdown_file(file, opts)


def _from_fields(uri: str, place: str, row: dict[str, Any], opts: dict[str, Any]) -> SourceRecord:
    record_id = text_value(field_value(row, opts["id_field"]))
    record = SourceRecord(
        uri, "", source_id=record_id or place,
        title=text_value(field_value(row, opts["title_field"])),
        given_request=(text_value(field_value(row, opts["request_field"])) or "").strip() or None,
        language=text_value(field_value(row, opts["language_field"])) or opts["language"],
        license=text_value(field_value(row, opts["license_field"])) or opts["license"],
    )
    text = text_value(field_value(row, opts["text_field"]))
    if text is None:
        record.read_error = f"missing_field:{opts['text_field']}"
    else:
        record.text = text
    return record


def _jsonl(file: SourceFile, opts: dict[str, Any]) -> Iterator[SourceRecord]:
    yield from jsonl_records(file, opts["encoding"], lambda uri, source_id, row: _from_fields(uri, source_id, row, opts))


def _parquet(file: SourceFile, opts: dict[str, Any]) -> Iterator[SourceRecord]:
    import pyarrow.parquet as pq

    with file.open_binary() as handle:
        parquet = pq.ParquetFile(handle)
        names = set(parquet.schema_arrow.names)
        if opts["text_field"].split(".")[0] not in names:
            yield SourceRecord(file.uri, "", source_id=file.name,
                               read_error=f"missing_field:{opts['text_field']} (no such column; columns: {', '.join(sorted(names))})")
            return
        wanted = [opts[k].split(".")[0] for k in ("text_field", "request_field", "id_field", "title_field",
                                                  "language_field", "license_field") if opts[k]]
        columns = sorted({c for c in wanted if c in names})
        row_number = 0
        for batch in parquet.iter_batches(batch_size=int(opts["batch_size"]), columns=columns):
            for row in batch.to_pylist():
                yield _from_fields(f"{file.uri}#row={row_number}", f"row={row_number}", row, opts)
                row_number += 1


def markdown_file(file: SourceFile, opts: dict[str, Any]) -> Iterator[SourceRecord]:
    """One document per Markdown/text file; front matter fields use the configured names."""
    text, error = read_text_file(file, opts.get("encoding") or "utf-8")
    if error:
        yield SourceRecord(file.uri, "", source_id=file.name, read_error=error)
        return
    if not text.strip():
        return  # read_files turns a file that yields nothing into one empty_file reject
    front, body = split_front_matter(text)
    fields = {**DEFAULTS, **opts}
    record = _from_fields(file.uri, file.name, {**front, fields["text_field"]: body}, fields)
    if not record.title:
        heading = _HEADING.search(body)
        record.title = heading.group(1) if heading else file.stem
    record.meta["front_matter"] = sorted(front)
    yield record
