"""Built-in ablations: the variant datasets and the statistics that say whether the search helps.

The variants are built from the same accepted items and share their item ids and answers:

* ``searched``: the thinking the search found (z*);
* ``initial``: the initial thinking of the same rollout (z0);
* ``no_thinking``: the answer alone (an empty think block, the same format);
* ``random_edits``: as many accepted edits per item as ``searched`` made, but each chosen at random
  among the candidates that were generated (at a random step that had one) instead of by score;
  this isolates the scorer's guidance;
* ``no_reflection``: z* with the reflection cues removed by :func:`strip_reflection`.

Intervals are percentile bootstraps that resample *items* (all seeds of an item move together),
so seeds are not counted as independent evidence.
"""

from __future__ import annotations

import random
import re
import statistics
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from reer_assets.core.refinement import derive_seed, recompose
from reer_assets.core.trace import SearchTrace

VARIANTS = ("searched", "initial", "no_thinking", "random_edits", "no_reflection")

# A reflection cue where it opens a sentence (start of text, after . ! ? or a line break), with its
# punctuation and a following "maybe"; the first letter after it is capitalised.
_EN_CUES = re.compile(
    r"(^|[.!?]\s+|\n\s*)(?:hmm+|but wait|wait|let me think|let me see|alternatively|actually|on second thought|oh)"
    r"\b[\s,.…:;!-]*(?:maybe\b[\s,]*)?(?P<next>[a-z])?", re.IGNORECASE)
_ZH_CUES = re.compile(r"(?:不过等等|等等|让我想想|嗯+)[，,。…：:！!]*")


def strip_reflection(text: str) -> str:
    """The rule behind ``no_reflection``: delete the reflection cues that open a sentence ("Hmm, maybe",
    "Wait,", "But wait", "Let me think", "Alternatively,", "Actually,", "On second thought,", "Oh,";
    in Chinese 嗯, 等等, 不过等等, 让我想想 wherever they stand), capitalising the letter that then opens
    the sentence. Everything else is kept as written."""
    text = _EN_CUES.sub(lambda m: m.group(1) + (m.group("next") or "").upper(), text)
    return _ZH_CUES.sub("", text)


def random_edit_thinking(trace: SearchTrace, seed: int) -> tuple[str, int]:
    """(thinking, edits) for ``random_edits``: the searched item's number of accepted edits, each a
    random parsed candidate of a distinct random step that generated one."""
    accepted = sum(1 for step in trace.steps if step.choice is not None)
    original = [s.strip() for s in trace.initial_segments]
    if not accepted:
        return trace.initial_thinking, 0
    rng = random.Random(derive_seed(seed, trace.item_id, trace.rollout, "random_edits"))
    eligible = [step for step in trace.steps if any(c.text is not None for c in step.candidates)]
    chosen = rng.sample(eligible, accepted)  # accepted steps are eligible, so there are enough
    segments = list(original)
    for step in chosen:
        segments[step.index] = rng.choice([c.text for c in step.candidates if c.text is not None])
    return recompose(segments), accepted


def variant_thinking(variant: str, trace: SearchTrace, seed: int) -> str:
    if variant == "searched":
        return trace.final_thinking
    if variant == "initial":
        return trace.initial_thinking
    if variant == "no_thinking":
        return ""
    if variant == "random_edits":
        return random_edit_thinking(trace, seed)[0]
    if variant == "no_reflection":
        return strip_reflection(trace.final_thinking)
    raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")


@dataclass(frozen=True)
class Interval:
    mean: float | None
    low: float | None
    high: float | None
    n: int  # items

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "ci_low": self.low, "ci_high": self.high, "n": self.n}


def bootstrap_mean(values_by_item: Mapping[Any, Sequence[float]], resamples: int = 2000, level: float = 0.95,
                   seed: int = 0) -> Interval:
    """Mean over all values, with a percentile bootstrap interval that resamples items."""
    items = [list(v) for v in values_by_item.values() if len(v)]
    if not items:
        return Interval(None, None, None, 0)
    sums = [sum(v) for v in items]
    counts = [len(v) for v in items]
    mean = sum(sums) / sum(counts)
    if len(items) == 1:
        return Interval(mean, None, None, 1)
    rng = random.Random(seed)
    draws = []
    for _ in range(resamples):
        picks = [rng.randrange(len(items)) for _ in items]
        draws.append(sum(sums[i] for i in picks) / sum(counts[i] for i in picks))
    draws.sort()
    tail = (1 - level) / 2
    return Interval(mean, draws[int(tail * (resamples - 1))], draws[int((1 - tail) * (resamples - 1))], len(items))


def paired_difference(a: Mapping[Any, Sequence[float]], b: Mapping[Any, Sequence[float]], **kwargs: Any) -> Interval:
    """Mean of per-item differences mean(a) − mean(b) over the items both have, with its interval."""
    shared = [k for k in a if k in b and len(a[k]) and len(b[k])]
    diffs = {k: [statistics.fmean(a[k]) - statistics.fmean(b[k])] for k in shared}
    return bootstrap_mean(diffs, **kwargs)


def reading(name: str, diff: Interval, metric: str, lower_is_better: bool) -> str:
    """One line that says what a paired difference ``name`` (e.g. "searched − initial") shows."""
    if diff.mean is None:
        return f"{name} on {metric}: no paired items"
    if diff.low is None:
        return f"{name} on {metric}: {diff.mean:+.4f} from a single item, no interval"
    span = f"(95% CI {diff.low:+.4f} to {diff.high:+.4f}, n = {diff.n})"
    if diff.low <= 0 <= diff.high:
        return f"{name} on {metric}: no difference detectable at n = {diff.n} {span}"
    first_better = (diff.mean < 0) == lower_is_better
    left = name.split("−")[0].strip()
    verdict = "better" if first_better else "worse"
    return f"{name} on {metric}: {diff.mean:+.4f}, {left} is {verdict} {span}"
