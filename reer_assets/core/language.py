"""Which prompt set a text gets: any CJK ideograph means Chinese (docs/algorithm.md §1)."""

from __future__ import annotations

import re

_CJK = re.compile("[\u4e00-\u9fff]")

EN = "en"
ZH = "zh"


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


def prompt_language(text: str) -> str:
    """The prompt-set language for a query: "zh" if it holds any CJK ideograph, else "en"."""
    return ZH if has_cjk(text) else EN


def cjk_share(text: str) -> float:
    """Share of CJK ideographs among the non-space characters of ``text``."""
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return 0.0
    return sum(1 for c in chars if _CJK.match(c)) / len(chars)


def length_units(text: str, language: str) -> int:
    """Length as writers count it: words for English, non-space characters for Chinese."""
    if language == ZH:
        return sum(1 for c in text if not c.isspace())
    return len(text.split())
