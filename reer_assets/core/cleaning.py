"""Text normalisation and document-level checks shared by every source reader."""

from __future__ import annotations

import hashlib
import re
import unicodedata

from reer_assets.core.language import EN, ZH, cjk_share, length_units

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


def detect_language(text: str) -> str:
    """en or zh by the share of CJK ideographs (the bundled domains use these two)."""
    return ZH if cjk_share(text) > 0.3 else EN


def document_reasons(text: str, language: str, min_units: int, max_units: int, allowed_languages: list[str]) -> list[str]:
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
    if allowed_languages and language not in allowed_languages:
        reasons.append(f"language_not_allowed:{language}")
    return reasons
