"""The REER input format: a JSON list of ``{question, solution, index}`` objects.

``question`` is the given request, ``solution`` the text; a solution that carries a model's
reasoning before ``</think>`` contributes what follows the (last) tag as the text, without a
wrapping ``<answer>`` block, and the reasoning itself (without ``<think>``) as the record's
``published_thinking``, so the source's own thinking stays beside the reference instead of being
lost. ``index`` is the record's stable id. The list is parsed one
element at a time from a stream, so a large file is never held whole; an element that is
not an object, lacks its solution or holds undecodable bytes is a reject and the elements
after it still load. A file that stops being valid JSON keeps the elements before the fault.
A JSON Lines file of the same objects is read too.
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Any, Iterator

from reer_assets.core.ingest.readers.common import (SourceFile, SourceRecord, field_value, jsonl_records,
    read_files, require_path, resolve_options, text_value)

DEFAULTS: dict[str, Any] = {
    "question_field": "question",
    "solution_field": "solution",
    "index_field": "index",
    "think_end": "</think>",
    "encoding": "utf-8",
    "language": None,
    "license": None,
}
SUFFIXES = (".json", ".jsonl")
CHUNK_BYTES = 1 << 20
_ANSWER = re.compile(r"^\s*<answer>\s*(.*?)\s*(</answer>\s*)?$", re.DOTALL)
_SURROGATE = re.compile("[\udc80-\udcff]")


def read_reer(domain: str, options: dict[str, Any]) -> Iterator[SourceRecord]:
    opts = resolve_options("reer", DEFAULTS, options)
    path = require_path("reer", options)
    return read_files(path, SUFFIXES, lambda file: _read_file(file, opts), domain)


def answer_text(solution: str, think_end: str = "</think>") -> tuple[str, bool]:
    """The part of a solution a reader sees: after the last ``think_end`` tag, unwrapped from
    ``<answer>``; and whether there was thinking before it."""
    return split_solution(solution, think_end)[0], think_end in solution


def split_solution(solution: str, think_end: str = "</think>") -> tuple[str, str | None]:
    """(answer, published thinking) of a solution: the answer after the last ``think_end`` tag,
    unwrapped from ``<answer>``; the thinking before it, without its opening ``<think>`` tag and
    surrounding whitespace (None when there is no tag or nothing before it)."""
    if think_end not in solution:
        match = _ANSWER.match(solution)
        return (match.group(1) if match else solution).strip(), None
    before, text = solution.rsplit(think_end, 1)
    match = _ANSWER.match(text)
    thinking = before.strip()
    open_tag = think_end.replace("</", "<", 1)  # </think> -> <think>
    if thinking.startswith(open_tag):
        thinking = thinking[len(open_tag):].strip()
    return (match.group(1) if match else text).strip(), thinking or None


def _read_file(file: SourceFile, opts: dict[str, Any]) -> Iterator[SourceRecord]:
    with file.open_binary() as handle:
        head = handle.read(64)
    if head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{":
        yield from _read_lines(file, opts)
        return
    with file.open_binary() as handle:
        for position, element, error in iter_json_array(_chunks(handle, opts["encoding"])):
            if error and position < 0:  # the file as a whole is not a JSON list
                yield SourceRecord(file.uri, "", source_id=file.name, read_error=error)
            elif error:
                yield SourceRecord(f"{file.uri}#item={position}", "", source_id=f"item={position}", read_error=error)
            else:
                yield _record(file, f"item={position}", element, opts)


def _read_lines(file: SourceFile, opts: dict[str, Any]) -> Iterator[SourceRecord]:
    yield from jsonl_records(file, opts["encoding"], lambda _, source_id, row: _record(file, source_id, row, opts))


def _record(file: SourceFile, place: str, element: Any, opts: dict[str, Any]) -> SourceRecord:
    if not isinstance(element, dict):
        return SourceRecord(f"{file.uri}#{place}", "", source_id=place, read_error=f"not_an_object:{type(element).__name__}")
    index = text_value(field_value(element, opts["index_field"]))
    fragment = f"index={index}" if index is not None else place
    record = SourceRecord(f"{file.uri}#{fragment}", "", source_id=index if index is not None else place,
                          language=opts["language"], license=opts["license"])
    if _has_surrogates(element):
        record.read_error = f"invalid_encoding:not {opts['encoding']}"
        return record
    solution = text_value(field_value(element, opts["solution_field"]))
    if solution is None:
        record.read_error = f"missing_field:{opts['solution_field']}"
        return record
    record.text, record.published_thinking = split_solution(solution, opts["think_end"])
    record.meta["had_thinking"] = opts["think_end"] in solution
    question = text_value(field_value(element, opts["question_field"]))
    record.given_request = question.strip() if question and question.strip() else None
    return record


def _has_surrogates(value: Any) -> bool:
    """Undecodable bytes survive decoding as lone surrogates (``surrogateescape``); find them."""
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_surrogates(k) or _has_surrogates(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogates(v) for v in value)
    return False


def _chunks(handle, encoding: str) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder(encoding)(errors="surrogateescape")
    first = True
    while True:
        data = handle.read(CHUNK_BYTES)
        if first and data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        first = False
        if not data:
            tail = decoder.decode(b"", final=True)
            if tail:
                yield tail
            return
        yield decoder.decode(data)


def iter_json_array(chunks: Iterator[str]) -> Iterator[tuple[int, Any, str | None]]:
    """(position, element, error) for each element of a top-level JSON array read in chunks.

    A syntax error ends the array with one error entry at the position where it occurred
    (JSON has no safe point to resume from); position -1 means the input is not a list at all,
    and empty input yields nothing.
    """
    decoder = json.JSONDecoder()
    buffer, pos, eof = "", 0, False

    def more() -> bool:
        nonlocal buffer, pos, eof
        chunk = next(chunks, None)
        if chunk is None:
            eof = True
            return False
        buffer, pos = buffer[pos:] + chunk, 0
        return True

    def peek() -> str:
        """The next non-space character (reading on as needed); "" at the end of the input."""
        nonlocal pos
        while True:
            while pos < len(buffer) and buffer[pos] in " \t\r\n":
                pos += 1
            if pos < len(buffer):
                return buffer[pos]
            if not more():
                return ""

    first = peek()
    if first != "[":
        if first:
            yield -1, None, "invalid_json:expected a JSON list of objects"
        return
    pos += 1
    position = 0
    while True:
        ch = peek()
        if ch == "]" and position == 0:
            return
        if ch == "":
            yield position, None, "invalid_json:the list is not closed (truncated file?)"
            return
        while True:
            try:
                element, end = decoder.raw_decode(buffer, pos)
            except json.JSONDecodeError as exc:
                # ran off the end of the buffer (not a real fault yet): read on and try again
                cut_short = exc.msg.startswith("Unterminated") or exc.pos >= len(buffer) - 16
                if cut_short and not eof and more():
                    continue
                yield position, None, f"invalid_json:{exc.msg} (element {position})"
                return
            if end == len(buffer) and not eof and more():
                continue  # a number may go on in the next chunk
            break
        pos = end
        yield position, element, None
        position += 1
        ch = peek()
        if ch == ",":
            pos += 1
        elif ch == "]":
            return
        else:
            yield position, None, f"invalid_json:expected ',' or ']' after element {position - 1}"
            return
