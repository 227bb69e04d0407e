"""The local search loop (docs/algorithm.md): real embedded model where it matters,
scripted generators only to force a branch."""

from __future__ import annotations

import json

import pytest

from reer_assets.core.protocols import Completion, GenerationRequest
from reer_assets.core.refinement import ReerSearch, SearchConfig, SearchItem
from reer_assets.core.trace import SearchTrace

# the switches the test profile turns on for the embedded model (docs/algorithm.md)
SMALL_MODEL = {"ban_foreign_tags": True, "min_rollout_tokens": 48, "min_segment_chars": 40}  # the test profile's switches
PARAGRAPH = "Alright, the user wants a calm piece for new parents, and I will keep every sentence short and warm. "


class ScriptedGenerator:
    """Returns fixed texts: one initial thinking, then the given edit outputs per step."""

    model_id = "scripted"

    def __init__(self, initial: str, edits: list[str], initial_tokens: int = 300):
        self.initial, self.edits, self.initial_tokens = initial, edits, initial_tokens
        self.calls: list[GenerationRequest] = []

    def generate(self, requests):
        out = []
        for request in requests:
            self.calls.append(request)
            if request.prefill.startswith("<think>"):
                assert request.sampling.banned == ()  # the default config bans nothing (official)
                out.append([Completion(self.initial, self.initial_tokens, 10)])
            else:
                out.append([Completion(self.edits[k % len(self.edits)], 50, 10) for k in range(request.n)])
        return out


class NeverScorer:
    model_id = "never"

    def score(self, requests):
        raise AssertionError("a rejected rollout must not be scored")


def searched(generator, scorer, item, config: SearchConfig, seeds=range(10)):
    """The first trace of ``seeds`` whose initial thinking was usable: the embedded model writes an
    unsegmentable or too short one for some seeds, and these tests are about what comes after."""
    for seed in seeds:
        trace = ReerSearch(generator, scorer, config, seed=seed).run(item)
        if trace.status == "ok":
            return trace
    raise AssertionError(f"no usable initial thinking in seeds {list(seeds)}: last {trace.reject_reason}")


def _thinking(n: int) -> str:
    return "\n\n".join(f"{PARAGRAPH}Point {i} of the plan." for i in range(n)) + "\n</think>"


@pytest.mark.model
def test_score_never_increases_on_bundled_item(embedded_generator, embedded_scorer, bundled_item):
    config = SearchConfig(max_step=3, num_expansion=2, max_tokens=600, stop_thresh=0.0, **SMALL_MODEL)
    trace = searched(embedded_generator, embedded_scorer, bundled_item, config)
    previous = trace.initial_score
    for step in trace.steps:
        assert step.best_score <= previous
        if step.choice is not None:
            assert step.candidates[step.choice].score == step.best_score
            assert step.best_score < previous
        previous = step.best_score
    assert trace.final_score == previous <= trace.initial_score
    assert len(trace.steps) <= 3


@pytest.mark.model
def test_deterministic_for_a_seed(embedded_generator, embedded_scorer, bundled_item):
    config = SearchConfig(max_step=2, num_expansion=2, max_tokens=500, stop_thresh=0.0, **SMALL_MODEL)
    a = ReerSearch(embedded_generator, embedded_scorer, config, seed=11).run(bundled_item)
    b = ReerSearch(embedded_generator, embedded_scorer, config, seed=11).run(bundled_item)
    assert a.to_dict() == b.to_dict()


class OverlapScorer:
    """Forces the threshold branch: the more reference words a thinking contains, the likelier the
    reference (log-prob per token = -2 x share of reference words missing from the thinking)."""

    model_id = "overlap"

    def score(self, requests):
        from reer_assets.core.protocols import ScoreResult

        results = []
        for r in requests:
            words = set(r.continuation.lower().split())
            thinking = r.prefix.lower()
            missing = sum(1 for w in words if w not in thinking) / max(1, len(words))
            results.append(ScoreResult([-2.0 * missing] * 8))
        return results


def test_stops_once_below_threshold(bundled_item):
    preview = " ".join(bundled_item.reference.split()[-120:])
    edits = ["<analyze>x</analyze><refine>" + PARAGRAPH + " A sharper idea about the ending.</refine>",
             "<analyze>y</analyze><refine>I will write this: " + preview + "</refine>"]
    free = ReerSearch(ScriptedGenerator(_thinking(5), edits), OverlapScorer(),
                      SearchConfig(max_step=5, stop_thresh=0.0), seed=1).run(bundled_item)
    first = next(s for s in free.steps if s.choice is not None)
    assert first.index == 0 and first.choice == 1
    threshold = (first.best_score + free.initial_score) / 2
    stopped = ReerSearch(ScriptedGenerator(_thinking(5), edits), OverlapScorer(),
                         SearchConfig(max_step=5, stop_thresh=threshold), seed=1).run(bundled_item)
    assert stopped.stopped_reason == "below_threshold"
    assert len(stopped.steps) == 1 and len(free.steps) == 5
    assert stopped.final_score < threshold <= stopped.initial_score


@pytest.mark.model
def test_skips_search_when_initial_already_below_threshold(embedded_scorer, bundled_item):
    generator = ScriptedGenerator(_thinking(4), ["<refine>never used</refine>"])
    trace = ReerSearch(generator, embedded_scorer, SearchConfig(stop_thresh=100.0), seed=0).run(bundled_item)
    assert trace.skipped_search and trace.steps == []
    assert trace.final_score == trace.initial_score
    assert len(generator.calls) == 1


@pytest.mark.model
def test_respects_max_step_and_keeps_unvisited_segments(embedded_scorer, bundled_item):
    generator = ScriptedGenerator(_thinking(6), ["<analyze>a</analyze><refine>" + PARAGRAPH + "changed</refine>"])
    trace = ReerSearch(generator, embedded_scorer, SearchConfig(max_step=2, stop_thresh=0.0), seed=0).run(bundled_item)
    assert [s.index for s in trace.steps] == [0, 1]
    # stripped on both sides: with no edit accepted the final thinking is z0 exactly as sampled
    assert [s.strip() for s in trace.final_thinking.split("\n\n")[2:]] == [s.strip() for s in trace.initial_segments[2:]]


def test_edits_see_accepted_segments_before_and_original_ones_after(bundled_item):
    """The recomposed thinking is the official one: stripped segments joined by blank lines, and the
    final thinking is the text whose score is the final score."""
    preview = " ".join(bundled_item.reference.split()[-120:])
    edits = ["<analyze>y</analyze><refine>\nI will write this: " + preview + "\n</refine>"]
    generator = ScriptedGenerator(_thinking(4), edits)
    trace = ReerSearch(generator, OverlapScorer(), SearchConfig(max_step=2, stop_thresh=0.0), seed=1).run(bundled_item)
    assert trace.steps[0].choice == 0
    rewrite = "I will write this: " + preview
    original = [s.strip() for s in trace.initial_segments]
    assert trace.final_thinking == "\n\n".join([rewrite] + original[1:]) or \
        trace.final_thinking == "\n\n".join([rewrite, rewrite] + original[2:])
    second = generator.calls[2].messages[-1]["content"]  # the edit prompt of step 2
    assert rewrite in second and original[2] in second
    # every edit turn starts with the lead-in sentence, then <analyze>
    assert generator.calls[1].prefill.endswith("<analyze>\n") and len(generator.calls[1].prefill) > len("<analyze>\n")


def test_an_unclosed_refine_block_is_a_candidate_as_in_the_official_code(bundled_item):
    generator = ScriptedGenerator(_thinking(3), ["<analyze>a</analyze><refine>an unclosed rewrite"])
    trace = ReerSearch(generator, OverlapScorer(), SearchConfig(max_step=1, stop_thresh=0.0), seed=0).run(bundled_item)
    assert [c.text for c in trace.steps[0].candidates] == ["an unclosed rewrite"] * 2
    assert all(c.score is not None for c in trace.steps[0].candidates)


@pytest.mark.model
def test_candidates_without_refine_are_skipped(embedded_scorer, bundled_item):
    generator = ScriptedGenerator(_thinking(3), ["<analyze>only analysis, no rewrite</analyze>", "no tags at all"])
    trace = ReerSearch(generator, embedded_scorer, SearchConfig(max_step=3, stop_thresh=0.0), seed=0).run(bundled_item)
    for step in trace.steps:
        assert step.choice is None
        assert all(c.score is None and c.skipped_reason == "no_refine_block" for c in step.candidates)
    assert trace.final_thinking == trace.initial_thinking
    assert trace.tokens["scorer_calls"] == 1  # only z0 was scored


def test_rejects_short_rollout():
    generator = ScriptedGenerator(_thinking(4), [], initial_tokens=40)
    item = SearchItem("i", "Write a note.", "Some reference text.")
    trace = ReerSearch(generator, NeverScorer(), SearchConfig(), seed=0).run(item)
    assert trace.status == "rejected" and trace.reject_reason == "initial_rollout_too_short"


def test_rejects_unsegmentable_rollout():
    generator = ScriptedGenerator("One single thought without any break at all.</think>", [])
    item = SearchItem("i", "Write a note.", "Some reference text.")
    trace = ReerSearch(generator, NeverScorer(), SearchConfig(), seed=0).run(item)
    assert trace.status == "rejected" and trace.reject_reason == "initial_rollout_unsegmentable"


def test_chinese_query_uses_chinese_prompts_and_openers():
    generator = ScriptedGenerator("x</think>", [], initial_tokens=5)
    item = SearchItem("zh", "写一篇关于秋天的短文", "秋天来了。")
    trace = ReerSearch(generator, NeverScorer(), SearchConfig(), seed=3).run(item)
    assert trace.language == "zh" and trace.opener in ("好的", "嗯")
    assert "完成稿" in generator.calls[0].messages[-1]["content"]


def test_opener_distribution_follows_weights():
    import random
    from collections import Counter

    from reer_assets.core.prompts import ENGLISH

    counts = Counter(ENGLISH.draw_opener(random.Random(s)) for s in range(4000))
    assert abs(counts["Alright, the user"] / 4000 - 0.48) < 0.03
    assert abs(counts["Okay, I am given"] / 4000 - 0.2) < 0.03


@pytest.mark.model
def test_trace_round_trips_through_json(embedded_generator, embedded_scorer, bundled_item):
    config = SearchConfig(max_step=1, num_expansion=2, max_tokens=400, stop_thresh=0.0, **SMALL_MODEL)
    trace = searched(embedded_generator, embedded_scorer, bundled_item, config)
    data = json.loads(trace.to_json())
    assert {"initial_score", "final_score", "steps", "tokens", "generator_model", "prompt_set_version"} <= set(data)
    assert SearchTrace.from_json(trace.to_json()) == trace
