"""The statistics and variant rules of the built-in ablations (core/experiments.py)."""

import random

from reer_assets.core.experiments import (
    DETECTION_FACTOR,
    bootstrap_mean,
    minimum_detectable_effect,
    paired_difference,
    prompts_needed,
    random_edit_thinking,
    reading,
    shuffled_thinking,
    strip_reflection,
    variant_problems,
    variant_rows,
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
    line = reading("searched − initial", noise, "heldout_nll", True)
    assert f"no difference detectable; this experiment could detect ≥ {noise.mde:.4f}" in line and "n = 8" in line
    assert f"would need about {noise.prompts_needed()} prompts" in line
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


def test_the_detection_factor_is_80_percent_power_at_alpha_005():
    assert abs(DETECTION_FACTOR - (1.959964 + 0.841621)) < 1e-5


def test_the_mde_shrinks_as_one_over_root_n():
    rng = random.Random(11)
    sd = 0.3
    mdes = {}
    for n in (10, 40, 160):
        diffs = [rng.gauss(0.0, sd) for _ in range(n)]
        mdes[n] = paired_difference({i: [d] for i, d in enumerate(diffs)}, {i: [0.0] for i in range(n)},
                                    resamples=200).mde
        assert abs(mdes[n] - minimum_detectable_effect(sd, n)) < 0.35 * minimum_detectable_effect(sd, n)
    # four times the prompts, half the detectable effect (exactly, at a fixed spread)
    assert abs(minimum_detectable_effect(sd, 40) / minimum_detectable_effect(sd, 10) - 0.5) < 1e-12
    assert 0.4 < mdes[40] / mdes[10] < 0.6 and 0.4 < mdes[160] / mdes[40] < 0.6
    # and the prompts needed for a given effect invert it
    assert prompts_needed(sd, minimum_detectable_effect(sd, 40)) == 40


def test_a_planted_effect_above_the_mde_is_detected_in_most_draws():
    """200 simulated experiments of 30 paired items, true difference 1.2 x the MDE: the bootstrap interval
    excludes zero in at least 75% of them (the analytic power is about 92%); at zero effect, rarely."""
    rng = random.Random(5)
    n, sd = 30, 0.2
    planted = 1.2 * minimum_detectable_effect(sd, n)
    detected = false_alarms = 0
    for t in range(200):
        a = {i: [rng.gauss(planted, sd)] for i in range(n)}
        zero = {i: [0.0] for i in range(n)}
        diff = paired_difference(a, zero, resamples=300, seed=t)
        detected += not (diff.low <= 0 <= diff.high)
        null = paired_difference({i: [rng.gauss(0.0, sd)] for i in range(n)}, zero, resamples=300, seed=t)
        false_alarms += not (null.low <= 0 <= null.high)
    assert detected / 200 >= 0.75, detected
    assert false_alarms / 200 <= 0.12, false_alarms


def test_shuffled_gives_every_item_another_items_thinking_of_its_domain():
    items = [{"id": f"{d}-{k}", "domain": d, "thinking": f"plan of {d}-{k}"} for d in ("a", "b") for k in range(5)]
    items.append({"id": "c-0", "domain": "c", "thinking": "alone"})
    given = shuffled_thinking(items, seed=3)
    assert set(given) == {i["id"] for i in items if i["domain"] != "c"}  # a domain of one item has no donor
    for item in items[:-1]:
        donor = given[item["id"]].removeprefix("plan of ")
        assert donor != item["id"] and donor.split("-")[0] == item["domain"]
    assert sorted(given.values()) == sorted(i["thinking"] for i in items[:-1])  # each thinking used once
    assert shuffled_thinking(items, seed=3) == given and shuffled_thinking(items, seed=4) != given


def test_shuffled_rows_keep_the_items_answers():
    trace = _trace([0])
    items = [{"id": f"i{k}", "domain": "d", "trajectory_id": f"t{k}", "query": f"q{k}", "thinking": f"z{k}",
              "reference": f"answer {k}", "trace": trace} for k in range(3)]
    rows = variant_rows(items, ["searched", "shuffled"], seed=1)
    shuffled = {r["item_id"]: r for r in rows if r["variant"] == "shuffled"}
    assert len(shuffled) == 3 and not variant_problems(rows)
    assert all(r["answer"] == f"answer {r['item_id'][1:]}" and r["thinking"] != f"z{r['item_id'][1:]}"
               for r in shuffled.values())
