"""Perplexity-guided local search over a thinking trajectory, as the official REER code runs it.

Given a request ``x`` and a reference ``y``, sample an initial thinking ``z0``, then
rewrite it one segment at a time, keeping a rewrite only when it lowers the clipped
NLL of ``y``. The score therefore never rises. Everything is recorded in a
:class:`SearchTrace`. docs/algorithm.md describes each step and lists every switch that
departs from the official code (all off in the ``default`` profile).
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import asdict, dataclass

from reer_assets.core.chat_format import THINK_OPEN
from reer_assets.core.objective import ObjectiveSettings, build_score_request, score_of
from reer_assets.core.prompts import PromptSet, prompts_for
from reer_assets.core.protocols import Completion, GenerationRequest, Generator, Sampling, Scorer
from reer_assets.core.segment import Segmentation, segment
from reer_assets.core.tags import cut_thinking, last_refine
from reer_assets.core.trace import Candidate, SearchTrace, Step

THINK_PREFILL = THINK_OPEN
# how the official code puts a thinking back together once a segment is rewritten
RECOMPOSE_SEPARATOR = "\n\n"
INITIAL_BANNED_TAGS = ("<think>", "<analyze>", "</analyze>", "<refine>", "</refine>", "<answer>", "</answer>")
EDIT_BANNED_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_DRAFT_SEPARATOR = re.compile(r"^\s*(-{3,}|—{2,}|\*{3,})\s*$", re.MULTILINE)


@dataclass(frozen=True)
class SearchConfig:
    stop_thresh: float = 0.25
    max_step: int = 10
    num_expansion: int = 2
    num_rollouts: int = 1
    temperature: float = 0.8
    top_p: float = 0.85
    top_k: int = 40
    max_tokens: int = 8000
    edit_max_tokens: int | None = None  # defaults to max_tokens
    min_rollout_tokens: int = 100
    min_segment_chars: int = 100
    clip_min: float = -2.0
    clip_max: float = 0.0
    # Switches that depart from the official code (docs/algorithm.md); off by default, on in the
    # demo and test profiles, where the embedded model needs them.
    # Forbid each task's output the tags that belong to the other task (an initial thinking
    # never holds <refine>, an edit never closes </think>); small models confuse them.
    ban_foreign_tags: bool = False

    def sampling(self, max_tokens: int | None = None, banned: tuple[str, ...] = ()) -> Sampling:
        return Sampling(self.temperature, self.top_p, self.top_k, max_tokens or self.max_tokens,
                        banned=banned if self.ban_foreign_tags else ())

    @property
    def objective(self) -> ObjectiveSettings:
        return ObjectiveSettings(self.clip_min, self.clip_max)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, settings: dict) -> "SearchConfig":
        """The defaults above overlaid by ``settings`` (a profile's differences, a run's overrides); an unknown
        key is an error."""
        return cls(**settings)

    def identity(self) -> dict:
        """The settings as a config hash reads them: every field, less those added after the first hashes were
        recorded (:data:`HASHED_ONLY_OFF_DEFAULT`) while they hold their defaults, so a run's hash stays what
        it was."""
        defaults = SearchConfig()
        return {k: v for k, v in asdict(self).items()
                if k not in HASHED_ONLY_OFF_DEFAULT or v != getattr(defaults, k)}


# fields a config hash holds only when they depart from their default (README: reuse; docs/algorithm.md)
HASHED_ONLY_OFF_DEFAULT = ("min_rollout_tokens", "min_segment_chars", "clip_min", "clip_max")


@dataclass(frozen=True)
class SearchItem:
    item_id: str
    query: str
    reference: str
    # start from this thinking instead of sampling one (a user's own plan, an official run's initial_response):
    # it is segmented and searched exactly as a sampled one, and the rollout's token floor does not apply
    initial_thinking: str | None = None
    # the source's own thinking for this reference (``queries.published_thinking``): scored once beside z0,
    # with the same prompt and objective, so the search can be compared with it; it never enters the search
    published_thinking: str | None = None


def derive_seed(seed: int, *parts: object) -> int:
    """A stable 31-bit seed for one call, so runs replay identically."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def recompose(segments: list[str]) -> str:
    """A thinking from its (stripped) segments, joined with blank lines as the official code does."""
    return RECOMPOSE_SEPARATOR.join(segments)


def is_draft(segments: list[str], index: int) -> bool:
    """A segment is part of the draft once a separator line has appeared at or before it."""
    return _DRAFT_SEPARATOR.search("\n".join(segments[: index + 1])) is not None


def initial_rollout_request(config: SearchConfig, seed: int, item: SearchItem, rollout: int,
                            prompts: PromptSet | None = None) -> tuple[GenerationRequest, str]:
    """The initial rollout's request for ``item`` and the opener it pre-fills after ``<think>``: what
    :class:`ReerSearch` asks first, and what batch mode sends ahead for every item (workloads/batch_rollouts.py)."""
    prompts = prompts_for(item.query) if prompts is None else prompts
    opener = prompts.draw_opener(random.Random(derive_seed(seed, item.item_id, rollout, "opener")))
    request = GenerationRequest(
        messages=prompts.initial_thinking_messages(item.query, item.reference),
        prefill=THINK_PREFILL + opener,
        n=1,
        sampling=config.sampling(banned=INITIAL_BANNED_TAGS),
        seed=derive_seed(seed, item.item_id, rollout, "initial"),
    )
    return request, opener


class ReerSearch:
    """Runs the search for one item; backends are injected, the loop is pure."""

    def __init__(self, generator: Generator, scorer: Scorer, config: SearchConfig = SearchConfig(), seed: int = 0):
        self.generator = generator
        self.scorer = scorer
        self.config = config
        self.seed = seed

    def run(self, item: SearchItem, rollout: int = 0) -> SearchTrace:
        cfg = self.config
        prompts = prompts_for(item.query)
        reference = segment(item.reference, cfg.min_segment_chars)
        trace = SearchTrace(
            item_id=item.item_id,
            rollout=rollout,
            language=prompts.language,
            seed=self.seed,
            generator_model=self.generator.model_id,
            scorer_model=self.scorer.model_id,
            prompt_set_version=prompts.version,
            config=cfg.to_dict(),
        )

        z0 = self._initial_rollout(item, prompts, rollout, trace)
        if z0 is None:
            return trace
        best = self._score(item.query, [z0.join()], reference, trace)[0]
        best_thinking = z0.join()  # scored exactly as sampled; rewrites are recomposed
        trace.initial_score = best
        if item.published_thinking:  # one more scorer call: their thinking under our scorer, beside z0
            trace.published_score = self._score(item.query, [item.published_thinking], reference, trace)[0]

        if best < cfg.stop_thresh:
            trace.skipped_search = True
            trace.stopped_reason = "initial_below_threshold"
        else:
            original = [s.strip() for s in z0.segments]
            accepted: list[str] = []
            trace.stopped_reason = "max_step" if cfg.max_step < len(original) else "all_segments_visited"
            for i in range(min(cfg.max_step, len(original))):
                step = self._step(item, prompts, reference, accepted, original, i, best, rollout, trace)
                trace.steps.append(step)
                if step.choice is not None:
                    chosen = step.candidates[step.choice].text
                    accepted.append(chosen)  # type: ignore[arg-type]
                    best = step.best_score
                    best_thinking = recompose(accepted + original[i + 1 :])
                else:
                    accepted.append(original[i])
                if best < cfg.stop_thresh:
                    trace.stopped_reason = "below_threshold"
                    break

        trace.final_thinking = best_thinking
        trace.final_score = best
        return trace

    # -- stages ---------------------------------------------------------------------------

    def _initial_rollout(
        self, item: SearchItem, prompts: PromptSet, rollout: int, trace: SearchTrace
    ) -> Segmentation | None:
        cfg = self.config
        if item.initial_thinking is not None:
            return self._given_rollout(item.initial_thinking, trace)
        request, opener = initial_rollout_request(cfg, self.seed, item, rollout, prompts)
        completion = self._generate([request], trace)[0][0]
        thinking, closed = cut_thinking(opener + completion.text)  # exact, as the official code keeps it
        trace.opener = opener
        trace.initial_raw = THINK_PREFILL + opener + completion.text
        trace.initial_thinking = thinking
        trace.initial_closed = closed
        trace.initial_tokens = completion.completion_tokens
        if completion.completion_tokens < cfg.min_rollout_tokens:
            return self._reject(trace, "initial_rollout_too_short")
        segmentation = segment(thinking, cfg.min_segment_chars)
        trace.initial_segments = list(segmentation.segments)
        if len(segmentation) <= 1:
            return self._reject(trace, "initial_rollout_unsegmentable")
        return segmentation

    def _given_rollout(self, thinking: str, trace: SearchTrace) -> Segmentation | None:
        trace.opener = ""
        trace.initial_raw = THINK_PREFILL + thinking
        trace.initial_thinking = thinking
        trace.initial_closed = True
        segmentation = segment(thinking, self.config.min_segment_chars)
        trace.initial_segments = list(segmentation.segments)
        if len(segmentation) <= 1:
            return self._reject(trace, "initial_rollout_unsegmentable")
        return segmentation

    def _step(
        self,
        item: SearchItem,
        prompts: PromptSet,
        reference: Segmentation,
        accepted: list[str],
        original: list[str],
        i: int,
        best: float,
        rollout: int,
        trace: SearchTrace,
    ) -> Step:
        """Rewrite segment ``i``: before it the accepted segments, after it the original ones."""
        cfg = self.config
        after = original[i + 1 :]
        request = GenerationRequest(
            messages=prompts.segment_edit_messages(
                item.query,
                item.reference,
                before=accepted,
                target=original[i],
                after=after,
                is_draft=is_draft(accepted + original[i:], i),
                separator=RECOMPOSE_SEPARATOR,
            ),
            prefill=prompts.edit_prefill,
            n=cfg.num_expansion,
            sampling=cfg.sampling(cfg.edit_max_tokens, banned=EDIT_BANNED_TAGS),
            seed=derive_seed(self.seed, item.item_id, rollout, "edit", i),
        )
        completions = self._generate([request], trace)[0]
        candidates = []
        for completion in completions:
            text = last_refine(completion.text)
            candidates.append(
                Candidate(
                    text=text,
                    raw=prompts.edit_prefill + completion.text,
                    score=None,
                    completion_tokens=completion.completion_tokens,
                    skipped_reason=None if text is not None else "no_refine_block",
                )
            )
        scorable = [c for c in candidates if c.text is not None]
        if scorable:
            thinkings = [recompose(accepted + [c.text] + after) for c in scorable]  # type: ignore[list-item]
            for cand, score in zip(scorable, self._score(item.query, thinkings, reference, trace)):
                cand.score = score
        choice = None
        for k, cand in enumerate(candidates):
            if cand.score is not None and cand.score < best and (choice is None or cand.score < candidates[choice].score):  # type: ignore[operator]
                choice = k
        new_best = candidates[choice].score if choice is not None else best
        return Step(index=i, segment=original[i], candidates=candidates, choice=choice, best_score=new_best)  # type: ignore[arg-type]

    # -- model calls ----------------------------------------------------------------------

    def _generate(self, requests: list[GenerationRequest], trace: SearchTrace) -> list[list[Completion]]:
        results = self.generator.generate(requests)
        trace.tokens["generator_calls"] += len(requests)
        for completions in results:
            for completion in completions:
                trace.tokens["completion"] += completion.completion_tokens
            if completions:
                trace.tokens["prompt"] += completions[0].prompt_tokens
        return results

    def _score(self, query: str, thinkings: list[str], reference: Segmentation, trace: SearchTrace) -> list[float]:
        requests = [build_score_request(query, z, reference) for z in thinkings]
        results = self.scorer.score(requests)
        trace.tokens["scorer_calls"] += len(requests)
        trace.tokens["scored"] += sum(len(r.token_logprobs) for r in results)
        return [score_of(r, self.config.objective) for r in results]

    @staticmethod
    def _reject(trace: SearchTrace, reason: str) -> None:
        trace.status = "rejected"
        trace.reject_reason = reason
        trace.stopped_reason = reason
        return None
