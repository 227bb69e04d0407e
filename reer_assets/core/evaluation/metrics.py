"""Benchmark metrics that need no model: LongBench-Write length score and format adherence, and their means
per model, benchmark and domain (the benchmark_scores summary)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl


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
_TAGS = re.compile(r"</?(think|answer|analyze|refine)>")


@dataclass(frozen=True)
class FormatCheck:
    """How a generated turn follows the inference format (``core.chat_format``).

    ``output`` includes the ``<think>`` prefill, so the opening tag itself proves nothing; what
    the model controls is everything after it.
    """

    single_think: bool  # no second <think> was opened
    think_closed: bool
    clean_thinking: bool  # no other task's tags (<analyze>, <refine>, <answer>) inside the thinking
    answer_present: bool
    answer: str
    thinking: str

    @property
    def adherent(self) -> bool:
        return self.single_think and self.think_closed and self.clean_thinking and self.answer_present


def check_format(output: str) -> FormatCheck:
    """Is there one closed think block, free of other tags, followed by a non-empty answer?"""
    head, closed, after = output.partition("</think>")
    thinking = head.split("<think>", 1)[1] if "<think>" in head else head
    answer = ""
    if closed:
        match = _ANSWER.search(after)
        answer = (match.group(1) if match else after).strip()
    return FormatCheck(
        single_think=output.count("<think>") <= 1,
        think_closed=bool(closed),
        clean_thinking=_TAGS.search(thinking) is None,
        answer_present=bool(answer),
        answer=answer,
        thinking=thinking,
    )


def summary_table(frame: pl.DataFrame) -> pl.DataFrame:
    """Mean metrics per model, benchmark and domain, plus an ``all`` row per model and benchmark."""
    metrics = [pl.col("length_score").mean().round(1).alias("length_score"),
               pl.col("format_ok").mean().round(3).alias("format_rate"),
               pl.col("heldout_nll").mean().round(4).alias("heldout_nll"),
               pl.col("heldout_nll_own_thinking").mean().round(4).alias("heldout_nll_own_thinking"),
               pl.len().alias("items")]
    per_domain = frame.group_by("model_label", "benchmark", "domain").agg(metrics)
    overall = frame.group_by("model_label", "benchmark").agg(metrics).with_columns(pl.lit("all").alias("domain"))
    return pl.concat([per_domain, overall.select(per_domain.columns)]).sort("model_label", "benchmark", "domain")
