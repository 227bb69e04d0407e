"""The full record of one REER search (docs/algorithm.md §6), serialisable to JSON and back."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Candidate:
    text: str | None  # the parsed <refine> body, None when the output had none
    raw: str  # prefill + generated text, as the generator returned it
    score: float | None  # None when skipped (no <refine>)
    completion_tokens: int = 0
    skipped_reason: str | None = None


@dataclass
class Step:
    index: int  # 0-based segment position
    segment: str  # the segment as it stood before this step
    candidates: list[Candidate]
    choice: int | None  # index into candidates of the accepted one, None if none beat the best
    best_score: float  # best score after this step


@dataclass
class SearchTrace:
    item_id: str
    rollout: int
    language: str
    seed: int
    generator_model: str
    scorer_model: str
    prompt_set_version: str
    config: dict[str, Any]
    status: str = "ok"  # ok | rejected
    reject_reason: str | None = None
    opener: str = ""
    initial_raw: str = ""
    initial_thinking: str = ""  # the text before </think>, exactly as sampled
    initial_closed: bool = False
    initial_tokens: int = 0
    initial_score: float | None = None
    initial_segments: list[str] = field(default_factory=list)  # exact: they rejoin to initial_thinking
    skipped_search: bool = False
    steps: list[Step] = field(default_factory=list)
    final_thinking: str = ""  # the thinking whose score is final_score
    final_score: float | None = None
    stopped_reason: str = ""
    tokens: dict[str, int] = field(
        default_factory=lambda: {"prompt": 0, "completion": 0, "scored": 0, "generator_calls": 0, "scorer_calls": 0}
    )
    # the score of the source's own published thinking under the same scorer, prompt and objective as z0
    # (None when the item had none, or was rejected before z0 was scored); never part of the search
    published_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchTrace":
        data = dict(data)
        data["steps"] = [
            Step(**{**s, "candidates": [Candidate(**c) for c in s["candidates"]]}) for s in data.get("steps", [])
        ]
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "SearchTrace":
        return cls.from_dict(json.loads(text))
