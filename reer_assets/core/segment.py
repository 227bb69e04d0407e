"""Split a thinking trajectory (or a reference text) into search steps (DESIGN.md §2.3).

Rule: split on blank lines, never inside a LaTeX display block ``\\[ ... \\]``; fold
fragments shorter than ``min_chars`` (and whitespace-only runs) into the next segment,
a trailing short buffer joins the last segment; if that leaves at most one segment,
split on single newlines instead with the same folding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MIN_SEGMENT_CHARS = 100

_LATEX_DISPLAY = re.compile(r"\\\[.*?\\\]", re.DOTALL)
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")
_NEWLINE = re.compile(r"\n")


@dataclass(frozen=True)
class Segmentation:
    """Segments plus the separator that joins them back into one text."""

    segments: list[str]
    separator: str

    def join(self, segments: list[str] | None = None) -> str:
        return self.separator.join(self.segments if segments is None else segments)

    def __len__(self) -> int:
        return len(self.segments)


def _split_outside_latex(text: str, pattern: re.Pattern[str]) -> list[str]:
    """Split ``text`` at matches of ``pattern`` that do not fall inside a display block."""
    protected = [(m.start(), m.end()) for m in _LATEX_DISPLAY.finditer(text)]
    pieces, start = [], 0
    for match in pattern.finditer(text):
        if any(lo < match.start() < hi for lo, hi in protected):
            continue
        pieces.append(text[start : match.start()])
        start = match.end()
    pieces.append(text[start:])
    return pieces


def _fold(fragments: list[str], separator: str, min_chars: int) -> list[str]:
    segments: list[str] = []
    buffer: list[str] = []
    for fragment in fragments:
        fragment = fragment.strip()
        if not fragment:  # whitespace runs fold away
            continue
        buffer.append(fragment)
        joined = separator.join(buffer)
        if len(joined) >= min_chars:
            segments.append(joined)
            buffer = []
    if buffer:
        tail = separator.join(buffer)
        if segments:
            segments[-1] = segments[-1] + separator + tail
        else:
            segments.append(tail)
    return segments


def segment(text: str, min_chars: int = MIN_SEGMENT_CHARS) -> Segmentation:
    """Segment ``text`` by the REER rule; see the module docstring."""
    text = text.replace("\r\n", "\n")
    paragraphs = _fold(_split_outside_latex(text, _BLANK_LINE), "\n\n", min_chars)
    if len(paragraphs) > 1:
        return Segmentation(paragraphs, "\n\n")
    lines = _fold(_split_outside_latex(text, _NEWLINE), "\n", min_chars)
    if len(lines) > 1:
        return Segmentation(lines, "\n")
    return Segmentation(paragraphs, "\n\n")
