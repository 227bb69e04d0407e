"""The REER objective (DESIGN.md §2.4): clipped mean NLL of the reference given thinking.

score = -mean(clip(log p(token), lo, hi)) over the tokens of the reference after its
first segment. Lower is better. Context = chat(system, plain inference prompt for x)
+ "<think>\\n" + z + "\\n</think>\\n<answer>\\n" + first segment of y (+ separator).
"""

from __future__ import annotations

from dataclasses import dataclass

from reer_assets.core.prompts import PromptSet
from reer_assets.core.protocols import ScoreRequest, ScoreResult
from reer_assets.core.segment import Segmentation

THINK_OPEN = "<think>\n"
THINK_CLOSE = "\n</think>\n"
ANSWER_OPEN = "<answer>\n"


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
    """(unscored head, scored tail) of the reference.

    The head is the first segment plus its separator; a reference with a single segment
    is scored whole, since otherwise nothing would be left to score.
    """
    if len(reference.segments) <= 1:
        return "", reference.join()
    return reference.segments[0] + reference.separator, reference.join(reference.segments[1:])


def build_score_request(
    prompts: PromptSet, query: str, thinking: str, reference: Segmentation
) -> ScoreRequest:
    head, tail = split_reference(reference)
    prefix = THINK_OPEN + thinking + THINK_CLOSE + ANSWER_OPEN + head
    return ScoreRequest(messages=prompts.inference_messages(query), prefix=prefix, continuation=tail)


def score_of(result: ScoreResult, settings: ObjectiveSettings = ObjectiveSettings()) -> float:
    return clipped_nll(result.token_logprobs, settings)
