"""Plain-text books in the Project Gutenberg layout, cut into chapters or passages.

The license header and footer are dropped by their ``*** START OF ...`` / ``*** END OF ...``
marker lines (a file without them is one reject unless ``require_markers`` is off); the body
is split into paragraphs on blank lines (hard-wrapped lines joined), chapters at heading lines
("CHAPTER IV", "Book Two", "II.", "第三章"), and each chapter into records on paragraph
boundaries: ``split: passage`` fills passages up to ``max_words`` (a tail under ``min_words``
joins the passage before it); ``split: chapter`` keeps a chapter whole and cuts one longer
than ``max_words`` into near-equal parts. The file is read twice, line by line: once for the
markers and the title page, once for the body; only one chapter is held in memory.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

from reer_assets.core.ingest.readers.common import (Line, SourceFile, SourceRecord, decoded_lines, read_files,
    require_path, resolve_options)

_NUMBER_WORDS = ("one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|"
                 "sixteen|seventeen|eighteen|nineteen|twenty|first|second|third|fourth|fifth|sixth|seventh|"
                 "eighth|ninth|tenth|the\\s+\\w+|last")
DEFAULTS: dict[str, Any] = {
    "split": "passage",  # passage | chapter
    "min_words": 200,
    "max_words": 1000,
    "chapter_pattern": (rf"^(?i:(chapter|book|part|volume|canto|letter|stave)\s+([0-9]+|[ivxlcdm]+|{_NUMBER_WORDS})\b.*)$"
                        r"|^[IVXLC]+\.?$|^第[0-9一二三四五六七八九十百千零〇]+[章回节卷]"),
    "max_heading_chars": 80,
    "require_markers": True,
    "start_marker": r"^\s*\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG",
    "end_marker": r"^\s*\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG",
    "unwrap": True,  # join the hard-wrapped lines of a paragraph with spaces
    "encoding": "utf-8",
    "language": None,  # default: the title page's "Language:" line, else detected
    "license": None,  # default: "Project Gutenberg License" when the markers are present
}
SUFFIXES = (".txt",)
_LANGUAGE_CODES = {"english": "en", "chinese": "zh", "french": "fr", "german": "de", "spanish": "es", "japanese": "ja"}
_TITLE_PAGE = re.compile(r"^(title|author|language|release date)\s*:\s*(.+)$", re.IGNORECASE)
_EBOOK_NUMBER = re.compile(r"e(?:book|text)\s*#\s*(\d+)", re.IGNORECASE)


def read_book(domain: str, options: dict[str, Any]) -> Iterator[SourceRecord]:
    opts = resolve_options("book", DEFAULTS, options)
    path = require_path("book", options)
    if opts["split"] not in ("passage", "chapter"):
        raise ValueError(f"reader 'book': split must be 'passage' or 'chapter', not {opts['split']!r}")
    if not 0 < int(opts["min_words"]) <= int(opts["max_words"]):
        raise ValueError("reader 'book': need 0 < min_words <= max_words")
    return read_files(path, SUFFIXES, lambda file: _read_file(file, opts), domain)


@dataclass
class _TitlePage:
    start: int | None = None  # line number of the START marker
    end: int | None = None  # line number of the END marker
    info: dict[str, str] = field(default_factory=dict)
    lines: int = 0


def _scan(file: SourceFile, opts: dict[str, Any]) -> _TitlePage:
    """First pass: where the markers are, and the title page lines before the start."""
    start, end = re.compile(opts["start_marker"], re.IGNORECASE), re.compile(opts["end_marker"], re.IGNORECASE)
    page = _TitlePage()
    with file.open_binary() as handle:
        for line in decoded_lines(handle, opts["encoding"]):
            page.lines = line.number
            if page.start is None:
                if start.match(line.text):
                    page.start = line.number
                    continue
                found = _TITLE_PAGE.match(line.text.strip())
                if found and found.group(1).lower() not in page.info:
                    page.info[found.group(1).lower()] = found.group(2).strip()
                number = _EBOOK_NUMBER.search(line.text)
                if number and "ebook" not in page.info:
                    page.info["ebook"] = number.group(1)
            elif page.end is None and end.match(line.text):
                page.end = line.number
                break
    return page


@dataclass
class _Paragraph:
    text: str
    first: int
    last: int
    words: int
    errors: list[str]


def _paragraphs(lines: Iterator[Line], unwrap: bool) -> Iterator[_Paragraph]:
    block: list[Line] = []
    for line in _with_sentinel(lines):
        if line is not None and line.text.strip():
            block.append(line)
            continue
        if block:
            text = (" " if unwrap else "\n").join(item.text.strip() for item in block)
            errors = [item.encoding_error for item in block if item.encoding_error]
            yield _Paragraph(text, block[0].number, block[-1].number, len(text.split()), errors)
            block = []


def _with_sentinel(lines: Iterator[Line]) -> Iterator[Line | None]:
    """The lines and then None, so the last paragraph is closed like the others."""
    yield from lines
    yield None


def _read_file(file: SourceFile, opts: dict[str, Any]) -> Iterator[SourceRecord]:
    page = _scan(file, opts)
    if page.lines == 0:
        return  # read_files reports the empty file
    if page.start is None or page.end is None:
        missing = "START" if page.start is None else "END"
        if opts["require_markers"]:
            yield SourceRecord(file.uri, "", source_id=file.name,
                               read_error=f"missing_gutenberg_markers:no {missing} line (require_markers: false reads the whole file)")
            return
    first_line = (page.start or 0) + 1
    last_line = (page.end - 1) if page.end else page.lines
    book = _BookInfo.of(page, opts, file)
    heading = re.compile(opts["chapter_pattern"])
    with file.open_binary() as handle:
        body = (line for line in decoded_lines(handle, opts["encoding"]) if first_line <= line.number <= last_line)
        chapter_title: str | None = None
        chapter_index = 0
        chapter: list[_Paragraph] = []
        for paragraph in _paragraphs(body, bool(opts["unwrap"])):
            is_heading = (paragraph.first == paragraph.last and len(paragraph.text) <= int(opts["max_heading_chars"])
                          and heading.match(paragraph.text.strip()))
            if is_heading:
                yield from _chapter_records(file, book, chapter_title, chapter_index, chapter, opts)
                chapter_index += 1
                chapter_title, chapter = paragraph.text.strip(), []
            elif chapter_title and not chapter and _is_subtitle(paragraph, int(opts["max_heading_chars"])):
                chapter_title = f"{chapter_title} {paragraph.text.strip()}"  # "CHAPTER I." + "THE TOWER"
            else:
                chapter.append(paragraph)
        yield from _chapter_records(file, book, chapter_title, chapter_index, chapter, opts)


def _is_subtitle(paragraph: _Paragraph, max_chars: int) -> bool:
    """A short line right after a chapter heading that is not a sentence: the chapter's name."""
    text = paragraph.text.strip()
    return paragraph.first == paragraph.last and len(text) <= max_chars and text[-1:] not in ".!?\"'’”:;,"


@dataclass(frozen=True)
class _BookInfo:
    title: str | None
    author: str | None
    language: str | None
    license: str | None
    attribution: str | None

    @classmethod
    def of(cls, page: _TitlePage, opts: dict[str, Any], file: SourceFile) -> "_BookInfo":
        title, author = page.info.get("title"), page.info.get("author")
        language = opts["language"] or _LANGUAGE_CODES.get(page.info.get("language", "").split(",")[0].strip().lower())
        gutenberg = page.start is not None
        license_ = opts["license"] or ("Project Gutenberg License" if gutenberg else None)
        credit = " by ".join(p for p in (title or file.stem, author) if p)
        if gutenberg:
            credit += f", Project Gutenberg eBook #{page.info['ebook']}" if page.info.get("ebook") else ", Project Gutenberg"
        return cls(title, author, language, license_, credit)


def _chapter_records(file: SourceFile, book: _BookInfo, chapter_title: str | None, chapter_index: int,
                     paragraphs: list[_Paragraph], opts: dict[str, Any]) -> Iterator[SourceRecord]:
    if not paragraphs:
        return
    min_words, max_words = int(opts["min_words"]), int(opts["max_words"])
    words = [p.words for p in paragraphs]
    parts = (_balanced(words, max_words) if opts["split"] == "chapter" else _greedy(words, min_words, max_words))
    for part_index, (lo, hi) in enumerate(parts):
        chunk = paragraphs[lo:hi]
        first, last = chunk[0].first, chunk[-1].last
        errors = [e for p in chunk for e in p.errors]
        label = chapter_title or ("front matter" if chapter_index == 0 else None)
        title = " / ".join(t for t in (book.title or file.stem, label) if t)
        if len(parts) > 1:
            title += f" ({part_index + 1}/{len(parts)})"
        yield SourceRecord(
            f"{file.uri}#L{first}-L{last}", "\n\n".join(p.text for p in chunk), source_id=f"L{first}-L{last}",
            title=title, license=book.license, attribution=book.attribution, language=book.language,
            read_error=errors[0] if errors else None,
            meta={"book_title": book.title, "author": book.author, "chapter": chapter_title,
                  "chapter_index": chapter_index, "part": part_index + 1, "parts": len(parts),
                  "words": sum(p.words for p in chunk)},
        )


def _greedy(words: list[int], min_words: int, max_words: int) -> list[tuple[int, int]]:
    """Passages filled up to ``max_words``; a tail shorter than ``min_words`` joins the one before."""
    parts: list[tuple[int, int]] = []
    lo, total = 0, 0
    for i, n in enumerate(words):
        if i > lo and total + n > max_words and total >= min_words:
            parts.append((lo, i))
            lo, total = i, 0
        total += n
    if total < min_words and parts:
        parts[-1] = (parts[-1][0], len(words))
    else:
        parts.append((lo, len(words)))
    return parts


def _balanced(words: list[int], max_words: int) -> list[tuple[int, int]]:
    """A chapter whole, or cut into the fewest near-equal parts of at most about ``max_words``."""
    count = max(1, math.ceil(sum(words) / max_words))
    target = sum(words) / count
    parts: list[tuple[int, int]] = []
    lo, total = 0, 0
    for i, n in enumerate(words):
        total += n
        if len(parts) < count - 1 and total >= target * (len(parts) + 1) and i + 1 < len(words):
            parts.append((lo, i + 1))
            lo = i + 1
    parts.append((lo, len(words)))
    return parts
