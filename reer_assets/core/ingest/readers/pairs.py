"""Prompt/story pairs in JSONL or CSV, shaped like r/WritingPrompts dumps.

Each row gives a request (the prompt, whose leading tag such as ``[WP]`` is stripped and kept
in ``meta['tags']``) and a story (the text). Field names are options; an optional score field
with ``min_score`` drops low-voted stories as rejects. Files are read line by line.
"""

from __future__ import annotations

import csv
import re
import sys
from typing import Any, Iterator

from reer_assets.core.ingest.readers.common import (Line, SourceFile, SourceRecord, decoded_lines, field_value,
    json_lines, read_files, require_path, resolve_options, text_value)

DEFAULTS: dict[str, Any] = {
    "format": None,  # jsonl | csv; by default from the file suffix
    "prompt_field": "prompt",
    "story_field": "story",
    "id_field": "id",
    "score_field": None,
    "min_score": None,
    "require_prompt": True,  # a row without a prompt is a reject (False: the request is synthesized)
    "tag_pattern": r"^(\s*[\[(]\s*[A-Za-z]{2,3}\s*[\])])+\s*",  # leading [WP], (EU), [WP][OT] ...
    "newline_token": None,  # e.g. "<newline>" in tokenised dumps; replaced by a line break
    "delimiter": ",",
    "encoding": "utf-8",
    "language": None,
    "license": None,
}
SUFFIXES = (".jsonl", ".ndjson", ".csv", ".tsv")
_TAG = re.compile(r"[\[(]\s*([A-Za-z]{2,3})\s*[\])]")


def read_pairs(domain: str, options: dict[str, Any]) -> Iterator[SourceRecord]:
    opts = resolve_options("pairs", DEFAULTS, options)
    path = require_path("pairs", options)
    if opts["score_field"] is None and opts["min_score"] is not None:
        raise ValueError("reader 'pairs': min_score needs score_field")
    return read_files(path, SUFFIXES, lambda file: _read_file(file, opts), domain)


def _read_file(file: SourceFile, opts: dict[str, Any]) -> Iterator[SourceRecord]:
    fmt = opts["format"] or ("csv" if file.suffix in (".csv", ".tsv") else "jsonl")
    with file.open_binary() as handle:
        lines = decoded_lines(handle, opts["encoding"])
        rows = _csv_rows(lines, opts, file.suffix) if fmt == "csv" else json_lines(lines)
        for first_line, row, error in rows:
            uri = f"{file.uri}#L{first_line}"
            if error:
                yield SourceRecord(uri, "", source_id=f"L{first_line}", read_error=error)
            else:
                yield _pair(uri, first_line, row, opts)


def _csv_rows(lines: Iterator[Line], opts: dict[str, Any], suffix: str) -> Iterator[tuple[int, dict[str, Any], str | None]]:
    """CSV rows as dicts; a quoted field may span lines, so a row's encoding error is any
    error on the physical lines it was read from."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # stories are longer than csv's 128 KiB default
    bad: dict[int, str] = {}

    def texts() -> Iterator[str]:
        for line in lines:
            if line.encoding_error:
                bad[line.number] = line.encoding_error
            yield line.text + "\n"

    delimiter = "\t" if suffix == ".tsv" and opts["delimiter"] == "," else opts["delimiter"]
    reader = csv.reader(texts(), delimiter=delimiter)
    header: list[str] | None = None
    last = 0
    for cells in reader:
        first, last = last + 1, reader.line_num
        if header is None:
            header = [c.strip() for c in cells]
            continue
        if not any(c.strip() for c in cells):
            continue
        errors = [bad[n] for n in range(first, last + 1) if n in bad]
        if errors:
            yield first, {}, errors[0]
        elif len(cells) != len(header):
            yield first, {}, f"bad_csv_row:{len(cells)} cells for {len(header)} columns"
        else:
            yield first, dict(zip(header, cells)), None


def _pair(uri: str, line: int, row: dict[str, Any], opts: dict[str, Any]) -> SourceRecord:
    record_id = text_value(field_value(row, opts["id_field"]))
    record = SourceRecord(uri, "", source_id=record_id or f"L{line}", language=opts["language"], license=opts["license"])
    story = text_value(field_value(row, opts["story_field"]))
    prompt = text_value(field_value(row, opts["prompt_field"]))
    if story is None or not story.strip():
        record.read_error = f"missing_field:{opts['story_field']}"
        return record
    if (prompt is None or not prompt.strip()) and opts["require_prompt"]:
        record.read_error = f"missing_field:{opts['prompt_field']}"
        return record
    if opts["score_field"]:
        raw_score = field_value(row, opts["score_field"])
        try:
            score = float(raw_score)
        except (TypeError, ValueError):
            record.read_error = f"bad_field:{opts['score_field']}={raw_score!r}"
            return record
        record.meta["score"] = score
        if opts["min_score"] is not None and score < float(opts["min_score"]):
            record.read_error = f"score_below_min:{score:g}<{float(opts['min_score']):g}"
            return record
    if opts["newline_token"]:
        story = story.replace(opts["newline_token"], "\n")
        prompt = prompt.replace(opts["newline_token"], "\n") if prompt else prompt
    record.text = story
    if prompt:
        record.given_request, record.meta["tags"] = strip_tags(prompt, opts["tag_pattern"])
    return record


def strip_tags(prompt: str, pattern: str | None = DEFAULTS["tag_pattern"]) -> tuple[str, list[str]]:
    """The prompt without its leading tags, and the tags (``"[WP] [EU] A door"`` -> ``("A door", ["WP", "EU"])``)."""
    if not pattern:
        return prompt.strip(), []
    match = re.match(pattern, prompt)
    if not match:
        return prompt.strip(), []
    return prompt[match.end():].strip(), [t.upper() for t in _TAG.findall(match.group(0))]
