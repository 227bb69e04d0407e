"""The statistics and variant rules of the built-in ablations (core/experiments.py)."""

import random

from reer_assets.core.experiments import (
    bootstrap_mean,
    paired_difference,
    random_edit_thinking,
    reading,
    strip_reflection,
    variant_thinking,
)
from reer_assets.core.trace import Candidate, SearchTrace, Step


def test_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time():
    """Repeated draws of a known distribution (normal, mean 0.5): the stated tolerance is 0.88-0.99 over
    300 draws of 30 items (the percentile bootstrap under-covers a little at small n)."""
    rng = random.Random(7)
    covered = 0
    trials = 300
    for t in range(trials):
        items = {i: [rng.gauss(0.5, 1.0)] for i in range(30)}
        ci = bootstrap_mean(items, resamples=400, seed=t)
        covered += ci.low <= 0.5 <= ci.high
    assert 0.88 <= covered / trials <= 0.99, covered / trials


def test_items_not_seeds_are_resampled():
    # two seeds per item that agree perfectly: the interval is that of 10 items, not 20 values
    one = bootstrap_mean({i: [float(i)] for i in range(10)}, seed=1)
    two = bootstrap_mean({i: [float(i), float(i)] for i in range(10)}, seed=1)
    assert one.n == two.n == 10 and (one.low, one.high) == (two.low, two.high)


def test_paired_difference_and_readings():
    a = {i: [1.0 + 0.01 * i] for i in range(20)}
    b = {i: [1.2 + 0.01 * i] for i in range(20)}
    diff = paired_difference(a, b, seed=3)
    assert abs(diff.mean + 0.2) < 1e-9 and diff.high < 0
    assert "searched is better" in reading("searched − initial", diff, "heldout_nll", lower_is_better=True)
    noise = paired_difference({i: [random.Random(i).gauss(0, 1)] for i in range(8)},
                              {i: [random.Random(100 + i).gauss(0, 1)] for i in range(8)}, seed=3)
    assert "no difference detectable at n = 8" in reading("searched − initial", noise, "heldout_nll", True)
    assert "no paired items" in reading("a − b", paired_difference({}, {}), "m", True)


def _trace(accepted_steps):
    steps = []
    for i in range(4):
        cands = [Candidate(text=f"rewrite {i}.{k}", raw="", score=1.0) for k in range(2)]
        if i == 3:
            cands = [Candidate(text=None, raw="no block", score=None, skipped_reason="no_refine_block")] * 2
        steps.append(Step(index=i, segment=f"s{i}", candidates=cands, choice=0 if i in accepted_steps else None,
                          best_score=1.0))
    return SearchTrace(item_id="x", rollout=0, language="en", seed=0, generator_model="g", scorer_model="s",
                       prompt_set_version="v", config={}, initial_thinking="s0\n\ns1\n\ns2\n\ns3\n\ns4",
                       initial_segments=["s0", "\n\ns1", "\n\ns2", "\n\ns3", "\n\ns4"], steps=steps,
                       final_thinking="searched")


def test_random_edits_make_exactly_as_many_edits_as_the_search():
    for accepted in ([], [1], [0, 2], [0, 1, 2]):
        trace = _trace(accepted)
        for seed in range(5):
            thinking, edits = random_edit_thinking(trace, seed)
            assert edits == len(accepted)
            assert sum("rewrite" in part for part in thinking.split("\n\n")) == len(accepted)
            assert "no block" not in thinking  # only parsed candidates are used
    assert random_edit_thinking(_trace([0, 2]), 1) == random_edit_thinking(_trace([0, 2]), 1)  # seeded


def test_variant_thinkings():
    trace = _trace([1])
    assert variant_thinking("searched", trace, 0) == "searched"
    assert variant_thinking("initial", trace, 0) == trace.initial_thinking
    assert variant_thinking("no_thinking", trace, 0) == ""


def test_reflection_rule():
    text = "Hmm, maybe I open on rain. Wait, the user said short.\n\nAlternatively, a list. Keep it. 嗯，先写场景。等等，要短。"
    assert strip_reflection(text) == "I open on rain. The user said short.\n\nA list. Keep it. 先写场景。要短。"
    assert strip_reflection("Waiting rooms are quiet.") == "Waiting rooms are quiet."  # whole words only
