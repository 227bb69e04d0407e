"""The REER objective: clipped mean NLL of the reference given the thinking (docs/algorithm.md).

score = -mean(clip(log p(token), lo, hi)) over the tokens of the reference after its
first segment. Lower is better. Context = the inference format of ``core.chat_format``:
chat(system, standard inference prompt for x) + "<think>\\n" + z + "\\n</think>\\n<answer>\\n"
+ the first segment of y. The scored text is the rest of y exactly as written.
"""

from __future__ import annotations

from dataclasses import dataclass

from reer_assets.core.chat_format import assistant_prefix, inference_messages
from reer_assets.core.protocols import ScoreRequest, ScoreResult
from reer_assets.core.segment import Segmentation


@dataclass(frozen=True)
class ObjectiveSettings:
    clip_min: float = -2.0
    clip_max: float = 0.0

    def key(self) -> str:
        return f"clipped-nll[{self.clip_min},{self.clip_max}]"


def clipped_nll(token_logprobs: list[float], settings: ObjectiveSettings = ObjectiveSettings()) -> float:
    """−mean(clip(lp, clip_min, clip_max)); raises on an empty span (nothing to score)."""
    if not token_logprobs:
        raise ValueError("no scored tokens: the reference continuation is empty")
    clipped = [min(max(lp, settings.clip_min), settings.clip_max) for lp in token_logprobs]
    return -sum(clipped) / len(clipped)


def split_reference(reference: Segmentation) -> tuple[str, str]:
    """(unscored head, scored tail) of the reference: ``head + tail`` is the reference, byte for byte.

    The head is the first segment; the tail starts with the whitespace that followed it. A
    reference of a single segment is scored whole (the official code would score nothing and
    return its sentinel 1000; see docs/algorithm.md).
    """
    if len(reference.segments) <= 1:
        return "", reference.join()
    return reference.segments[0], "".join(reference.segments[1:])


def build_score_request(query: str, thinking: str, reference: Segmentation) -> ScoreRequest:
    head, tail = split_reference(reference)
    return ScoreRequest(messages=inference_messages(query), prefix=assistant_prefix(thinking, head), continuation=tail)


def score_of(result: ScoreResult, settings: ObjectiveSettings = ObjectiveSettings()) -> float:
    return clipped_nll(result.token_logprobs, settings)
