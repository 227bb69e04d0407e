"""What every source reader shares: the record it yields, option checking, file listing over
fsspec, line-by-line decoding, and turning a file that cannot be read into a reject.

Readers never raise on bad *data*: a record (or a whole file) that cannot be read becomes a
:class:`SourceRecord` with ``read_error`` set, so the reject and its reason stay visible
downstream. They do raise ``ValueError`` on bad *configuration* (an unknown option, no
path), which is the user's to fix before anything is read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

# keys a domains.yaml source entry may carry besides its reader's own options
COMMON_KEYS = ("reader", "path")


@dataclass
class SourceRecord:
    """One document as a reader found it, before cleaning."""

    source_uri: str  # file URI plus the record's place in it (#L3, #index=7, #L10-L42)
    text: str
    source_id: str | None = None  # the record's own stable id (a dump's post id, REER index, line)
    domain: str | None = None
    title: str | None = None
    given_request: str | None = None
    # the source's own thinking for this text (``<think>…</think>`` before the answer), kept beside the
    # reference so it can be compared with ours; None when the source has none
    published_thinking: str | None = None
    license: str | None = None
    attribution: str | None = None
    language: str | None = None  # when the source states it; otherwise cleaning detects it
    read_error: str | None = None  # set: the record is rejected with this reason
    meta: dict[str, Any] = field(default_factory=dict)


def resolve_options(reader: str, defaults: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The reader's defaults overridden by ``options``; an unknown key is a configuration error
    (a misspelt field name would otherwise silently read nothing)."""
    unknown = sorted(set(options) - set(defaults) - set(COMMON_KEYS))
    if unknown:
        raise ValueError(f"reader {reader!r}: unknown option(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted([*defaults, 'path']))}")
    return {**defaults, **{k: v for k, v in options.items() if k in defaults}}


def require_path(reader: str, options: dict[str, Any]) -> str:
    path = options.get("path")
    if not path:
        raise ValueError(f"reader {reader!r} needs a 'path' (a file, a folder, a glob or an fsspec URL)")
    return str(path)


@dataclass(frozen=True)
class SourceFile:
    """A file on any fsspec filesystem, with the URI recorded in lineage."""

    fs: Any
    path: str
    uri: str

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        """The format suffix, ignoring a compression suffix (``x.jsonl.gz`` -> ``.jsonl``)."""
        name = self.name.lower()
        for packed in (".gz", ".bz2", ".xz", ".zst", ".lz4"):
            if name.endswith(packed):
                name = name[: -len(packed)]
                break
        return Path(name).suffix

    @property
    def stem(self) -> str:
        name = self.name
        return name[: -len(self.suffix)] if self.suffix and name.lower().endswith(self.suffix) else name

    def open_binary(self):
        from fsspec.utils import infer_compression

        return self.fs.open(self.path, "rb", compression=infer_compression(self.path))


def _filesystem(location: str) -> tuple[Any, str]:
    from fsspec.core import url_to_fs
    from fsspec.implementations.local import LocalFileSystem

    fs, path = url_to_fs(location)
    if isinstance(fs, LocalFileSystem):
        path = str(Path(path).resolve())
    return fs, path


def location_uri(location: str) -> str:
    """A URI for a path or URL even when it cannot be opened (for rejects that name it)."""
    if "://" in location:
        return location
    return Path(location).resolve().as_uri()


def list_files(location: str, suffixes: Iterable[str]) -> Iterator[SourceFile | SourceRecord]:
    """The files at ``location`` (a file, a folder searched recursively for ``suffixes``, or a
    glob), sorted; a location that cannot be listed yields one rejected record naming it, and a
    file in a folder that the reader cannot read yields one ``unsupported_extension`` reject, so
    that no file under the path goes unrecorded."""
    wanted = tuple(s.lower() for s in suffixes)
    try:
        fs, path = _filesystem(location)
        if any(ch in path for ch in "*?["):
            paths = sorted(p for p in fs.glob(path) if fs.isfile(p))
        elif fs.isdir(path):
            paths = sorted(fs.find(path))
        elif fs.exists(path):
            paths = [path]
        else:
            yield SourceRecord(location_uri(location), "", read_error=f"unreadable:not_found:{location}")
            return
    except Exception as exc:  # a missing fsspec backend, bad credentials, a malformed URL
        yield SourceRecord(location_uri(location), "", read_error=f"unreadable:{type(exc).__name__}:{exc}")
        return
    for p in paths:
        file = SourceFile(fs, p, fs.unstrip_protocol(p))
        if file.suffix.lower() in wanted or any(ch in path for ch in "*?[") or not fs.isdir(path):
            yield file
        else:
            yield SourceRecord(file.uri, "", source_id=file.name,
                               read_error=f"unsupported_extension:{file.suffix or '(none)'}")


def read_files(
    location: str,
    suffixes: Iterable[str],
    read_one: Callable[[SourceFile], Iterator[SourceRecord]],
    domain: str | None = None,
) -> Iterator[SourceRecord]:
    """Every record ``read_one`` finds in every file at ``location``.

    A file that yields nothing becomes one ``empty_file`` reject, and a file that fails part way
    keeps the records read before the failure plus one reject naming the file and the error.
    """
    for item in list_files(location, suffixes):
        if isinstance(item, SourceRecord):
            item.domain = domain
            yield item
            continue
        count = 0
        try:
            for record in read_one(item):
                count += 1
                record.domain = domain
                yield record
        except Exception as exc:  # bad input must not end the run: keep it as a reject
            count += 1
            yield SourceRecord(item.uri, "", domain=domain, read_error=f"unreadable:{type(exc).__name__}:{exc}")
        if count == 0:
            yield SourceRecord(item.uri, "", domain=domain, read_error="empty_file")


@dataclass(frozen=True)
class Line:
    number: int  # 1-based physical line number
    text: str  # decoded (undecodable bytes replaced), without the line break
    encoding_error: str | None = None


def decoded_lines(handle, encoding: str = "utf-8") -> Iterator[Line]:
    """The lines of a binary stream, decoded one by one, so one badly encoded line spoils only
    the record it belongs to; a UTF-8 byte-order mark is dropped."""
    for number, raw in enumerate(handle, start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            text, error = raw.decode(encoding), None
        except UnicodeDecodeError as exc:
            text, error = raw.decode(encoding, errors="replace"), f"invalid_encoding:line {number} is not {encoding} (byte {exc.start})"
        yield Line(number, text.rstrip("\r\n"), error)


def jsonl_records(file: SourceFile, encoding: str,
                  record: Callable[[str, str, dict[str, Any]], SourceRecord]) -> Iterator[SourceRecord]:
    """Every non-blank line of a JSON-lines file as a record: ``record(uri, source_id, row)``, or the line's
    read error (kept as a rejected record, never skipped)."""
    with file.open_binary() as handle:
        for line, row, error in json_lines(decoded_lines(handle, encoding)):
            uri, source_id = f"{file.uri}#L{line}", f"L{line}"
            yield SourceRecord(uri, "", source_id=source_id, read_error=error) if error else record(uri, source_id, row)


def json_lines(lines: Iterable[Line]) -> Iterator[tuple[int, dict[str, Any], str | None]]:
    """(line number, object, error) per non-blank JSONL line; a bad line is an error, not the end."""
    for line in lines:
        if not line.text.strip():
            continue
        if line.encoding_error:
            yield line.number, {}, line.encoding_error
            continue
        try:
            row = json.loads(line.text)
        except json.JSONDecodeError as exc:
            yield line.number, {}, f"invalid_json:{exc.msg} (column {exc.colno})"
            continue
        if not isinstance(row, dict):
            yield line.number, {}, f"not_an_object:{type(row).__name__}"
            continue
        yield line.number, row, None


MAX_DOCUMENT_BYTES = 8 * 1024 * 1024  # one piece of writing; anything larger is a dump, not a document


def read_text_file(file: SourceFile, encoding: str = "utf-8",
                   max_bytes: int = MAX_DOCUMENT_BYTES) -> tuple[str, str | None]:
    """The whole file decoded (for one-document-per-file formats), or the reason it cannot be.

    Reads at most ``max_bytes`` + 1 bytes, so an oversized file costs bounded memory.
    """
    with file.open_binary() as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        return "", f"too_long:file over {max_bytes} bytes"
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode(encoding), None
    except UnicodeDecodeError as exc:
        return "", f"invalid_encoding:not {encoding} (byte {exc.start})"


def field_value(record: dict[str, Any], name: str | None) -> Any:
    """``record[name]``, following dots into nested objects (``data.prompt``); None when absent."""
    if not name:
        return None
    value: Any = record
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def text_value(value: Any) -> str | None:
    """A field as text: strings as they are, numbers stringified, anything else (lists, objects) None."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", re.DOTALL)


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """YAML front matter (``---`` ... ``---`` at the top of a Markdown file) and the body after it."""
    import yaml

    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError:
        return {}, text
    return (meta if isinstance(meta, dict) else {}), text[match.end():]
