"""The hf scorer's three modes (naive, span, shared-prefix) give the same log-probs.

Requests are built the way the search builds a step: one item's thinking with one
segment swapped for each candidate rewrite, so the requests share the chat template,
the query and the accepted segments before the edited one.
"""

from __future__ import annotations

import pytest

from reer_assets import data
from reer_assets.core.objective import build_score_request
from reer_assets.core.protocols import ScoreRequest
from reer_assets.core.segment import segment

pytestmark = pytest.mark.model

TOLERANCE = 1e-4


def _item(language: str) -> tuple[dict, dict]:
    """A bundled corpus piece of ``language`` and its worked initial thinking."""
    thinking_by_piece = {e["piece_id"]: e for e in data.initial_thinking_examples()}
    piece = next(p for p in data.corpus() if p["language"] == language and p["id"] in thinking_by_piece)
    return piece, thinking_by_piece[piece["id"]]


def _step_requests(language: str, edited: int, rewrites: list[str] | None = None) -> list[ScoreRequest]:
    """One search step: candidate rewrites of segment ``edited``, each recomposed into a full request."""
    piece, example = _item(language)
    thinking = segment(example["thinking"])
    target = thinking.segments[edited]
    cue = "嗯，我再想想细节。" if language == "zh" else " Hmm, maybe I should be more concrete here."
    rewrites = rewrites or [target + cue, target[: len(target) // 2] + cue, cue.strip() + target]
    return [
        build_score_request(piece["request"],
                            "".join(thinking.segments[:edited] + [r] + thinking.segments[edited + 1 :]),
                            segment(piece["text"]))
        for r in rewrites
    ]


def _assert_same(results_a, results_b):
    assert len(results_a) == len(results_b)
    for a, b in zip(results_a, results_b):
        assert a.context_tokens == b.context_tokens
        assert len(a.token_logprobs) == len(b.token_logprobs) > 0  # > 0: both scored something; the lengths are compared exactly
        assert max(abs(x - y) for x, y in zip(a.token_logprobs, b.token_logprobs)) < TOLERANCE


@pytest.fixture(scope="module")
def scorers(embedded_loaded):
    from reer_assets.backends.hf import HFScorer

    return {
        "naive": HFScorer(embedded_loaded, mode="naive"),
        "span": HFScorer(embedded_loaded, mode="span"),
        "prefix": HFScorer(embedded_loaded, mode="prefix"),
        "prefix-batched": HFScorer(embedded_loaded, mode="prefix", suffix_batch=4),
    }


def _all_agree(scorers, requests):
    naive = scorers["naive"].score(requests)
    for name in ("span", "prefix", "prefix-batched"):
        _assert_same(scorers[name].score(requests), naive)
    return naive


@pytest.mark.parametrize("language,edited", [("en", 0), ("en", 2), ("zh", 1), ("zh", 3)])
def test_modes_agree_on_a_search_step(scorers, language, edited):
    requests = _step_requests(language, edited)
    before = scorers["prefix"].stats.forwarded_tokens
    _all_agree(scorers, requests)
    # the prefix really was shared: fewer tokens went through the decoder than the texts hold
    full = sum(len(scorers["prefix"].tokenize(r)[0]) for r in requests)
    assert scorers["prefix"].stats.forwarded_tokens - before < full


def test_shared_prefix_covers_template_query_and_accepted_segments(scorers):
    from reer_assets.backends.hf import shared_prefix_length

    scorer = scorers["prefix"]
    late = [scorer.tokenize(r) for r in _step_requests("en", 3)]
    early = [scorer.tokenize(r) for r in _step_requests("en", 0)]
    # editing a later segment shares more: the accepted segments before it are common
    assert shared_prefix_length(late) > shared_prefix_length(early) > 0  # ordering, and a shared prefix exists
    assert all(shared_prefix_length(late) <= first - 1 for _, first in late)


def test_batch_without_a_shared_prefix_beyond_the_template(scorers):
    requests = _step_requests("en", 1)[:1] + _step_requests("zh", 1)[:1] + [
        build_score_request("Write a note to a neighbour about a lost cat.", "Short plan.",
                            segment("Dear neighbour, our cat is missing since Tuesday evening, and she is grey.\n\n"
                                    "If you see her near your shed, please call us; she is shy but friendly."))]
    _all_agree(scorers, requests)


def test_batch_of_one(scorers):
    _all_agree(scorers, _step_requests("zh", 2)[:1])
    _all_agree(scorers, _step_requests("en", 2)[:1])


def test_requests_of_very_different_lengths(scorers):
    piece, example = _item("en")
    thinking = segment(example["thinking"])
    long_rewrite = " ".join(thinking.segments)  # the whole plan folded into one segment: hundreds of tokens longer
    requests = _step_requests("en", 1, rewrites=["Short.", long_rewrite, thinking.segments[1]])
    lengths = sorted(len(scorers["naive"].tokenize(r)[0]) for r in requests)
    assert lengths[-1] - lengths[0] > 200
    _all_agree(scorers, requests)


def test_identical_requests_keep_a_suffix_to_score(scorers):
    requests = _step_requests("en", 1)[:1] * 3
    results = scorers["prefix"].score(requests)
    _assert_same(results, scorers["naive"].score(requests))
    assert results[0].token_logprobs == results[2].token_logprobs


def test_shared_prefix_stops_before_the_first_scored_position():
    from reer_assets.backends.hf import shared_prefix_length

    ids = list(range(10, 30))
    assert shared_prefix_length([(ids, 12), (ids, 8)]) == 7  # identical texts: cut before the earliest scored token
    assert shared_prefix_length([(ids, 15), (ids[:5] + [99] + ids[6:], 15)]) == 5
    assert shared_prefix_length([([1, 2, 3], 2), ([4, 5, 6], 2)]) == 0
    assert shared_prefix_length([(ids, 1), (ids, 9)]) == 0
    assert shared_prefix_length([(ids, 15)]) == 14
    assert shared_prefix_length([]) == 0


def test_logits_are_projected_in_bounded_chunks(embedded_loaded, scorers):
    from reer_assets.backends.hf import HFScorer

    requests = _step_requests("en", 2)
    chunked = HFScorer(embedded_loaded, mode="prefix", logits_chunk=7)
    _assert_same(chunked.score(requests), scorers["naive"].score(requests))
    assert chunked.stats.max_logits_rows == 7
    assert scorers["naive"].stats.max_logits_rows >= max(len(scorers["naive"].tokenize(r)[0]) for r in requests)


def test_mode_switch_and_the_older_span_only_flag(embedded_loaded):
    from reer_assets.backends.hf import HFScorer

    assert HFScorer(embedded_loaded).mode == "prefix"
    assert HFScorer(embedded_loaded, span_only=False).mode == "naive"
    assert HFScorer(embedded_loaded, span_only=True).mode == "prefix"
    assert HFScorer(embedded_loaded, mode="span").span_only
    with pytest.raises(ValueError):
        HFScorer(embedded_loaded, mode="fast")
    with pytest.raises(ValueError):
        HFScorer(embedded_loaded, span_only=False, mode="prefix")


def test_scoring_bench_runs_and_ends_with_the_speedup_line(capsys):
    import re

    from reer_assets.perf.scoring import build_cases, main

    cases = build_cases(n_items=3, n_candidates=4)
    assert [c.language for c in cases] == ["en", "en", "zh"]
    assert all(len({r.prefix for r in c.requests}) == 4 for c in cases)  # four distinct candidates per step
    # without row (d): an in-process vLLM engine is a vLLM test (tests/vllm/test_backend_parity.py runs the bench's
    # row (d) on the session engine), and this module is in make check
    assert main(["--items", "2", "--candidates", "2", "--repeats", "1", "--no-vllm"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"scoring_speedup=\d+\.\d\d", lines[-1])
    assert any(line.startswith("(c) span-only + shared-prefix KV") for line in lines)
    assert not any(line.startswith("(d)") for line in lines)
