"""DeepWriting-20K and other verl-layout datasets, as Parquet or JSON Lines.

One row per item, in the layout verl's RL/SFT datasets use (and the official REER code reads as its
Parquet input)::

    {data_source, prompt: [{role, content}, ...], ability, reward_model: {...},
     extra_info: {index, ...}, solution, question?}

The request is the user turn of ``prompt`` (the last one when there are several; a plain string
is taken as it is), else ``question``. ``solution`` is the text, possibly ``<think>…</think>``
followed by the answer: the answer becomes the document's text and the thinking its
``published_thinking``, so the source's own thinking can be compared with ours. ``extra_info.index``
is the record's id; ``data_source``, ``ability``, ``reward_model`` and the rest of ``extra_info`` are
kept in ``source_meta``. A row that cannot be used is a reject with its reason (``missing_field:…``,
``bad_field:…``, ``unclosed_thinking``, ``not_an_object``, ``invalid_json``, ``invalid_encoding``);
the rows after it still load. Parquet is read batch by batch, JSONL line by line.
"""

from __future__ import annotations

from typing import Any, Iterator

from reer_assets.core.ingest.readers.common import (SourceFile, SourceRecord, field_value, jsonl_records,
    read_files, require_path, resolve_options, text_value)
from reer_assets.core.ingest.readers.reer import split_solution

DEFAULTS: dict[str, Any] = {
    "format": None,  # jsonl | parquet; by default from each file's suffix
    "prompt_field": "prompt",
    "question_field": "question",
    "solution_field": "solution",
    "index_field": "extra_info.index",
    "meta_fields": ["data_source", "ability", "reward_model", "extra_info"],
    "require_request": True,  # a row without a request is a reject (False: the request is synthesized)
    "think_end": "</think>",
    "batch_size": 256,  # Parquet rows read at a time
    "encoding": "utf-8",
    "language": None,
    "license": None,
}
FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
SUFFIXES = tuple(FORMATS)


def read_deepwriting(domain: str, options: dict[str, Any]) -> Iterator[SourceRecord]:
    opts = resolve_options("deepwriting", DEFAULTS, options)
    path = require_path("deepwriting", options)
    if opts["format"] not in (None, "jsonl", "parquet"):
        raise ValueError(f"reader 'deepwriting': format must be jsonl or parquet, not {opts['format']!r}")
    if not isinstance(opts["meta_fields"], (list, tuple)):
        raise ValueError("reader 'deepwriting': meta_fields must be a list of field names")
    return read_files(path, SUFFIXES, lambda file: _read_file(file, opts), domain)


def _read_file(file: SourceFile, opts: dict[str, Any]) -> Iterator[SourceRecord]:
    fmt = opts["format"] or FORMATS.get(file.suffix.lower(), "jsonl")
    yield from (_parquet(file, opts) if fmt == "parquet" else _jsonl(file, opts))


def _jsonl(file: SourceFile, opts: dict[str, Any]) -> Iterator[SourceRecord]:
    yield from jsonl_records(file, opts["encoding"], lambda _, source_id, row: row_record(file.uri, source_id, row, opts))


def _parquet(file: SourceFile, opts: dict[str, Any]) -> Iterator[SourceRecord]:
    import pyarrow.parquet as pq

    with file.open_binary() as handle:
        parquet = pq.ParquetFile(handle)
        names = set(parquet.schema_arrow.names)
        solution = opts["solution_field"].split(".")[0]
        if solution not in names:
            yield SourceRecord(file.uri, "", source_id=file.name,
                               read_error=f"missing_field:{opts['solution_field']} (no such column; columns: "
                                          f"{', '.join(sorted(names))})")
            return
        wanted = [opts[k] for k in ("prompt_field", "question_field", "solution_field", "index_field") if opts[k]]
        columns = sorted({f.split(".")[0] for f in [*wanted, *opts["meta_fields"]]} & names)
        row_number = 0
        for batch in parquet.iter_batches(batch_size=int(opts["batch_size"]), columns=columns):
            for row in batch.to_pylist():
                yield row_record(file.uri, f"row={row_number}", row, opts)
                row_number += 1


def request_of(prompt: Any) -> tuple[str | None, str | None]:
    """(request, problem) from a ``prompt`` field: the last user turn of a chat, or a plain string;
    the problem says why nothing could be taken (None when the field is simply absent)."""
    if prompt is None:
        return None, None
    if isinstance(prompt, str):
        return (prompt.strip() or None), (None if prompt.strip() else "empty")
    if not isinstance(prompt, list):
        return None, f"not a list of messages ({type(prompt).__name__})"
    users = [m.get("content") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
    texts = [c.strip() for c in users if isinstance(c, str) and c.strip()]
    return (texts[-1], None) if texts else (None, "no user turn")


def row_record(uri: str, place: str, row: dict[str, Any], opts: dict[str, Any]) -> SourceRecord:
    """One row as a record: request, answer and published thinking, the id and the metadata."""
    index = text_value(field_value(row, opts["index_field"]))
    record = SourceRecord(f"{uri}#index={index}" if index is not None else f"{uri}#{place}", "",
                          source_id=index if index is not None else place,
                          language=opts["language"], license=opts["license"])
    record.meta = _meta(row, opts)
    solution = text_value(field_value(row, opts["solution_field"]))
    if solution is None or not solution.strip():
        record.read_error = f"missing_field:{opts['solution_field']}"
        return record
    think_end = opts["think_end"]
    if think_end not in solution and solution.lstrip().startswith(think_end.replace("</", "<", 1)):
        record.read_error = f"unclosed_thinking:{opts['solution_field']} opens thinking but has no {think_end}"
        return record
    record.text, record.published_thinking = split_solution(solution, think_end)
    request, problem = request_of(field_value(row, opts["prompt_field"]))
    if request is None:
        question = text_value(field_value(row, opts["question_field"]))
        request = question.strip() if question and question.strip() else None
    if request is None and opts["require_request"]:
        record.read_error = (f"bad_field:{opts['prompt_field']}:{problem}" if problem else
                             f"missing_field:{opts['prompt_field']}|{opts['question_field']}")
        return record
    record.given_request = request
    return record


def _meta(row: dict[str, Any], opts: dict[str, Any]) -> dict[str, Any]:
    """The configured metadata fields that the row has; ``extra_info`` without the index (it is the id).

    Null members of an object are left out: a Parquet struct gives every row every member (null where
    the row had none), so this keeps a row's metadata the same whether it was read from Parquet or JSONL.
    """
    meta = {}
    index_parent, _, index_key = str(opts["index_field"] or "").rpartition(".")
    for name in opts["meta_fields"]:
        value = field_value(row, name)
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if v is not None and not (name == index_parent and k == index_key)}
        if value is None or value == {}:
            continue
        meta[name] = value
    return meta
