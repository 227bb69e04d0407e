"""The ablation statistics and report (core/experiments.py): pairing of the variants, intervals over items
and seeds, and a report that renders whatever is missing."""

import json
import random

from reer_assets.core.experiments import (
    ALL,
    render_report,
    summarise,
    variant_problems,
    variant_rows,
    with_ids,
)
from reer_assets.core.trace import Candidate, SearchTrace, Step

VARIANTS = ["searched", "initial", "no_thinking", "random_edits"]


def _results(variants, domains=("essays", "business"), prompts=4, seeds=(0, 1), shift=None):
    rng = random.Random(3)
    shift = shift or {}
    rows = []
    for domain in domains:
        for p in range(prompts):
            for seed in seeds:
                for v in variants:
                    rows.append({"domain": domain, "variant": v, "seed": seed, "prompt_id": f"{domain}-{p}",
                                 "heldout_nll": 1.5 + rng.gauss(0, 0.01), "format_ok": bool(p % 2),
                                 "heldout_nll_own_thinking": 1.4 + shift.get(v, 0.0) + rng.gauss(0, 0.01),
                                 "length_score": 50.0 + p, "judge_score": None})
    return rows


def _experiment(variants, domains=("essays", "business")):
    return {"id": "exp_test", "domains": list(domains), "variants": list(variants), "seeds": [0, 1],
            "base_model": "reer-embedded:x", "budget_json": json.dumps({"kind": "steps", "max_steps": 4,
                                                                          "recipe": "embedded", "global_batch": 4}),
            "config_json": json.dumps({"evaluation": {"prompts_per_domain": 4, "max_tokens": 16}})}


def test_means_over_items_and_seeds_and_paired_differences():
    rows = summarise(_results(VARIANTS, shift={"searched": -0.2}), VARIANTS, resamples=300)
    index = {(r["domain"], r["variant"], r["metric"]): r for r in rows}
    overall = index[(ALL, "searched", "heldout_nll_own_thinking")]
    assert overall["n"] == 8 and overall["seeds"] == 2 and overall["ci_low"] < overall["value"] < overall["ci_high"]
    assert index[("essays", "searched", "heldout_nll_own_thinking")]["n"] == 4
    diff = index[(ALL, "searched-initial", "heldout_nll_own_thinking")]
    assert diff["kind"] == "difference" and diff["ci_high"] < 0 and "searched is better" in diff["reading"]
    same = index[(ALL, "searched-random_edits", "heldout_nll")]
    assert "no difference detectable; this experiment could detect ≥" in same["reading"] and "n = 8" in same["reading"]
    assert same["mde"] > abs(same["value"]) and same["n_needed"] > 8  # too small to see, and how many would
    assert not any(r["metric"] == "judge_score" for r in rows)  # no judge: no judge rows at all
    assert index[(ALL, "initial", "format_ok")]["value"] == 0.5  # booleans count as 0/1
    ids = {r["id"] for r in with_ids("exp_test", rows)}
    assert len(ids) == len(rows)


def test_the_report_renders_when_a_variant_has_no_rows():
    present = ["searched", "initial", "no_thinking"]  # random_edits was asked for but nothing came back
    wanted = [*present, "random_edits", "no_reflection"]
    rows = summarise(_results(present), wanted, resamples=200)
    missing = [r for r in rows if r["variant"] == "random_edits" and r["kind"] == "mean"]
    assert missing and all(r["n"] == 0 and r["value"] is None for r in missing)
    report = render_report(_experiment(wanted), rows, "![plot](plot.png)")
    assert "| random_edits | no rows |" in report and "| no_reflection | no rows |" in report
    assert "`random_edits`: no rows" in report and "`no_reflection`: no rows" in report
    assert "searched − random_edits on heldout_nll_own_thinking: no paired items" in report
    assert "searched − initial" in report and "judge scores: none" in report and "![plot](plot.png)" in report
    # nothing evaluated at all still renders
    empty = render_report(_experiment(wanted, domains=()), summarise([], wanted))
    assert "no evaluation rows at all" in empty and "_no evaluation rows_" in empty


def test_one_item_has_no_interval():
    rows = summarise(_results(VARIANTS, domains=("essays",), prompts=1, seeds=(0,)), VARIANTS, resamples=100)
    one = next(r for r in rows if r["domain"] == "essays" and r["variant"] == "searched" and r["kind"] == "mean")
    assert one["n"] == 1 and one["ci_low"] is None
    assert "(one item, no interval)" in render_report(_experiment(VARIANTS, ("essays",)), rows)


def _trace(item, accepted):
    steps = [Step(index=i, segment=f"s{i}", candidates=[Candidate(text=f"r{i}", raw="", score=1.0)],
                  choice=0 if i in accepted else None, best_score=1.0) for i in range(3)]
    return SearchTrace(item_id=item, rollout=0, language="en", seed=0, generator_model="g", scorer_model="s",
                       prompt_set_version="v", config={}, initial_thinking="s0\n\ns1\n\ns2",
                       initial_segments=["s0", "\n\ns1", "\n\ns2"], steps=steps, final_thinking="Wait, r1.")


def test_variant_rows_share_items_and_answers_and_problems_are_named():
    items = [{"id": f"row_{k}", "domain": "essays", "trajectory_id": f"traj_{k}", "query": f"Write {k}.",
              "thinking": "Wait, r1.", "reference": f"Answer {k}.", "trace": _trace(f"d{k}", [1] if k else [])}
             for k in range(3)]
    rows = variant_rows(items, [*VARIANTS, "no_reflection"], seed=0)
    assert variant_problems(rows) == []
    by = {(r["variant"], r["item_id"]): r for r in rows}
    assert by[("no_reflection", "row_1")]["thinking"] == "R1."
    assert by[("random_edits", "row_1")]["edits"] == by[("searched", "row_1")]["edits"] == 1
    assert by[("no_thinking", "row_2")]["messages"][-1]["content"].startswith("<think>\n\n</think>")
    broken = [r for r in rows if not (r["variant"] == "initial" and r["item_id"] == "row_0")]
    assert variant_problems(broken)


def test_the_budget_in_steps_or_tokens():
    from reer_assets.workloads.experiments import budget_steps

    assert budget_steps({"kind": "steps", "max_steps": 12}, rows=8, batch=4, tokens_per_row=300.0) == 12
    assert budget_steps({"kind": "steps", "max_steps": None}, rows=8, batch=4, tokens_per_row=300.0) is None  # epochs
    # the same supervised tokens: rows without thinking are shorter, so they take more steps
    searched = budget_steps({"kind": "tokens", "train_tokens": 12000}, rows=8, batch=4, tokens_per_row=300.0)
    bare = budget_steps({"kind": "tokens", "train_tokens": 12000}, rows=8, batch=4, tokens_per_row=100.0)
    assert (searched, bare) == (10, 30)
    assert budget_steps({"kind": "tokens", "train_tokens": 100}, rows=2, batch=96, tokens_per_row=500.0) == 1
    import pytest

    with pytest.raises(ValueError, match="train_tokens"):
        budget_steps({"kind": "tokens"}, rows=2, batch=4, tokens_per_row=1.0)
    with pytest.raises(ValueError, match="budget"):
        budget_steps({"kind": "epochs"}, rows=2, batch=4, tokens_per_row=1.0)
