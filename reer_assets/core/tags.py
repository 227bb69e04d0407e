"""Reading the tags the generator writes: ``</think>``, ``<analyze>``, ``<refine>``."""

from __future__ import annotations

import re

_REFINE = re.compile(r"<refine>(.*?)</refine>", re.DOTALL)


def last_refine(text: str) -> str | None:
    """Text of the last complete ``<refine>…</refine>`` block, stripped; None if absent or empty."""
    blocks = _REFINE.findall(text)
    if not blocks:
        return None
    body = blocks[-1].strip()
    return body or None


def cut_thinking(text: str) -> tuple[str, bool]:
    """The thinking before the first ``</think>`` and whether the block was closed."""
    head, sep, _ = text.partition("</think>")
    return head.strip(), bool(sep)
