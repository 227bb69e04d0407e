"""Split a thinking trajectory (or a reference text) into search steps, as the official REER code does.

Rule (docs/algorithm.md): cut the text at blank lines (``\\n\\n``), never inside a LaTeX
display block ``\\[ … \\]`` (an unclosed block runs to the end of the text). Each cut leaves
a whitespace run (the separator and all the whitespace after it) as a piece of its own. A
piece closes a segment only when *it alone* has at least ``min_chars`` characters: shorter
pieces and whitespace runs are held and prepended to the next long piece, and a held tail
joins the last segment. Fragments of 60, 60 and 200 characters therefore make one segment.
If that leaves at most one segment, the same rule runs with single newlines as the cut.

Nothing is stripped or rewritten, so ``"".join(segments) == text`` byte for byte; every
segment after the first starts with the whitespace that separated it from the one before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MIN_SEGMENT_CHARS = 100
PARAGRAPH, LINE = "\n\n", "\n"


@dataclass(frozen=True)
class Segmentation:
    """Segments that rejoin, with ``join``, to exactly the segmented text; ``cut`` is the separator used."""

    segments: list[str]
    cut: str = PARAGRAPH

    def join(self) -> str:
        return "".join(self.segments)

    def __len__(self) -> int:
        return len(self.segments)


def _cut_pattern(cut: str) -> re.Pattern[str]:
    # LaTeX display blocks are matched first, so a cut inside one is never seen
    return re.compile(r"(\\\[.*?(?:\\\]|\Z))|(" + re.escape(cut) + r"\s*)", re.DOTALL)


_PATTERNS = {cut: _cut_pattern(cut) for cut in (PARAGRAPH, LINE)}


def pieces(text: str, cut: str = PARAGRAPH) -> list[str]:
    """Text fragments and the whitespace runs between them, in order; they concatenate to ``text``."""
    out: list[str] = []
    start = 0
    for match in _PATTERNS[cut].finditer(text):
        if match.group(2) is None:  # a LaTeX block: stays inside the current fragment
            continue
        out.append(text[start : match.start()])
        out.append(match.group(2))
        start = match.end()
    if start < len(text):
        out.append(text[start:])
    return [p for p in out if p]


def fold(parts: list[str], min_chars: int = MIN_SEGMENT_CHARS) -> list[str]:
    """Segments from pieces: a piece of ``min_chars`` or more closes one, carrying the held ones before it."""
    segments: list[str] = []
    held: list[str] = []
    for part in parts:
        if not part.strip() or len(part) < min_chars:
            held.append(part)
            continue
        segments.append("".join(held) + part)
        held = []
    if held:
        if segments:
            segments[-1] += "".join(held)
        else:
            segments.append("".join(held))
    return segments


def segment(text: str, min_chars: int = MIN_SEGMENT_CHARS) -> Segmentation:
    """Segment ``text`` by the REER rule; see the module docstring."""
    paragraphs = fold(pieces(text, PARAGRAPH), min_chars)
    if len(paragraphs) > 1:
        return Segmentation(paragraphs, PARAGRAPH)
    return Segmentation(fold(pieces(text, LINE), min_chars), LINE)
