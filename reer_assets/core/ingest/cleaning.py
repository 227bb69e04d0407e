"""Text normalisation and document-level checks shared by every source reader."""

from __future__ import annotations

import hashlib
import re
import unicodedata

from reer_assets.core.language import length_units
from reer_assets.core.language_id import detect_language

__all__ = ["detect_language", "document_reasons", "normalize_text", "text_hash"]

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")
_INLINE_SPACE = re.compile(r"[ \t\u00a0\u3000]+")
_MANY_BLANKS = re.compile(r"\n{3,}")


def normalize_text(text: str) -> str:
    """NFC, no control characters, single spaces inside lines, at most one blank line."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _CONTROL.sub("", text)
    lines = [_INLINE_SPACE.sub(" ", line).strip() for line in text.split("\n")]
    return _MANY_BLANKS.sub("\n\n", "\n".join(lines)).strip()


def text_hash(text: str) -> str:
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()


def document_reasons(
    text: str,
    language: str,
    min_units: int,
    max_units: int,
    allowed_languages: list[str],
    min_chars: int = 0,
    max_chars: int | None = None,
) -> list[str]:
    """Every reason a normalised document fails the length and language bounds (empty list: it passes).

    Units are words for space-separated languages and characters for Chinese; the character
    bounds apply to every language (a guard against huge single records).
    """
    reasons = []
    if not text.strip():
        return ["empty_text"]
    if not any(ch.isalnum() for ch in text):
        return ["no_letters"]
    units = length_units(text, language)
    if units < min_units:
        reasons.append(f"too_short:{units}<{min_units}")
    if units > max_units:
        reasons.append(f"too_long:{units}>{max_units}")
    if len(text) < min_chars:
        reasons.append(f"too_few_chars:{len(text)}<{min_chars}")
    if max_chars is not None and len(text) > max_chars:
        reasons.append(f"too_many_chars:{len(text)}>{max_chars}")
    if allowed_languages and language not in allowed_languages:
        reasons.append(f"language_not_allowed:{language}")
    return reasons
