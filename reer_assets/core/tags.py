"""Reading the tags the generator writes: ``</think>``, ``<analyze>``, ``<refine>``.

Both readers follow the official REER code (docs/algorithm.md): a rewrite is the text after
the *last* ``<refine>`` up to the *last* ``</refine>`` (to the end of the output when there is
none; empty when the last ``</refine>`` comes before the last ``<refine>``); the thinking is
everything before the first ``</think>``, kept exactly.
"""

from __future__ import annotations

REFINE_OPEN, REFINE_CLOSE = "<refine>", "</refine>"


def last_refine(text: str, require_closed: bool = False) -> str | None:
    """The stripped body of the last ``<refine>`` block; None when the output has no ``<refine>``.

    An unclosed block runs to the end of the output, and an empty body is returned as ``""``
    (the official code scores it too). ``require_closed=True`` is the stricter reading: the last
    block must be closed and non-empty.
    """
    start = text.rfind(REFINE_OPEN)
    if start == -1:
        return None
    body_start = start + len(REFINE_OPEN)
    end = text.rfind(REFINE_CLOSE)
    if require_closed and end < body_start:
        return None
    body = text[body_start : end if end != -1 else None].strip()
    if require_closed and not body:
        return None
    return body


def cut_thinking(text: str) -> tuple[str, bool]:
    """The thinking before the first ``</think>`` (not stripped) and whether the block was closed."""
    head, sep, _ = text.partition("</think>")
    return head, bool(sep)
