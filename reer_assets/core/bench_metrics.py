"""Benchmark metrics that need no model: LongBench-Write length score and format adherence."""

from __future__ import annotations

import re
from dataclasses import dataclass



def length_score(required: int, produced: int) -> float:
    """LongBench-Write S_l: 100 when lengths match, falling off faster when too short.

    y > x: 100·max(0, 1 − (y/x − 1)/3); otherwise 100·max(0, 1 − (x/y − 1)/2).
    """
    if required <= 0:
        raise ValueError("required length must be positive")
    if produced <= 0:
        return 0.0
    if produced > required:
        return 100.0 * max(0.0, 1.0 - (produced / required - 1.0) / 3.0)
    return 100.0 * max(0.0, 1.0 - (required / produced - 1.0) / 2.0)


_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL)


@dataclass(frozen=True)
class FormatCheck:
    think_open: bool
    think_closed: bool
    answer_present: bool
    answer: str

    @property
    def adherent(self) -> bool:
        return self.think_open and self.think_closed and self.answer_present


def check_format(output: str) -> FormatCheck:
    """Is there a closed think block followed by a non-empty answer? ``output`` includes any prefill."""
    think_open = "<think>" in output
    _, closed, after = output.partition("</think>")
    answer = ""
    if closed:
        match = _ANSWER.search(after)
        answer = (match.group(1) if match else after).strip()
    return FormatCheck(think_open, bool(closed), bool(answer), answer)
