"""The ``published`` ablation variant (issue 24 §3, their thinking beside ours), without models: its rows exist
only for items whose source published a thinking, the pairing check accepts that subset and nothing else,
searched − published is paired over the held-out prompts both variants answered (with n, interval and MDE),
and the report says where the variant is absent or partial."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from reer_assets.core.experiments import (
    ALL,
    DETECTION_FACTOR,
    render_report,
    summarise,
    variant_problems,
    variant_rows,
    variant_thinking,
)
from reer_assets.core.trace import SearchTrace


def _trace(item: str) -> SearchTrace:
    return SearchTrace(item_id=item, rollout=0, language="en", seed=0, generator_model="g", scorer_model="s",
                       prompt_set_version="v", config={}, initial_thinking="ours, first draft",
                       initial_segments=["ours, first draft"], final_thinking="ours, searched")


ITEMS = [  # k = 0 and 2 come with the writer's own thinking, k = 1 without
    {"id": f"row_{k}", "domain": "essays", "trajectory_id": f"traj_{k}", "query": f"Write {k}.",
     "thinking": "ours, searched", "reference": f"Answer {k}.", "trace": _trace(f"d{k}"),
     "published_thinking": None if k == 1 else f"their plan {k}"} for k in range(3)]


def test_published_rows_only_where_the_source_published_a_thinking():
    rows = variant_rows(ITEMS, ["searched", "initial", "published"], seed=0)
    published = {r["item_id"]: r for r in rows if r["variant"] == "published"}
    assert sorted(published) == ["row_0", "row_2"]
    assert [published[i]["thinking"] for i in ("row_0", "row_2")] == ["their plan 0", "their plan 2"]
    assert all(r["edits"] == 0 and r["edited_segments"] == [] for r in published.values())
    assert published["row_2"]["answer"] == "Answer 2." and published["row_2"]["query"] == "Write 2."
    assert published["row_0"]["messages"][-1]["content"].startswith("<think>\ntheir plan 0\n</think>")
    assert len(rows) == 3 + 3 + 2 and variant_problems(rows) == []  # a subset is a valid pairing
    # no item with a thinking: no row at all (the asset then leaves the variant out)
    none = [{**item, "published_thinking": None} for item in ITEMS]
    assert [r for r in variant_rows(none, ["searched", "published"]) if r["variant"] == "published"] == []
    with pytest.raises(ValueError, match="variant_rows"):
        variant_thinking("published", ITEMS[0]["trace"], 0)


def test_the_pairing_check_still_catches_a_published_row_that_breaks_it():
    rows = variant_rows(ITEMS, ["searched", "published"], seed=0)
    stray = {**next(r for r in rows if r["variant"] == "published"), "item_id": "row_9"}
    assert variant_problems([*rows, stray]) == ["published has items ['row_9'] that searched lacks or has"]
    other = [{**r, "answer": "another answer"} if r["variant"] == "published" and r["item_id"] == "row_2" else r
             for r in rows]
    assert variant_problems(other) == ["published has a different answer than searched for some items"]
    # a full variant still has to hold every item
    short = [r for r in rows if not (r["variant"] == "searched" and r["item_id"] == "row_1")]
    assert variant_problems([*short, *variant_rows(ITEMS, ["initial"])]) == [
        "searched has items ['row_1'] that initial lacks or has"]


# held-out NLL per prompt (multiples of 1/8, so every difference is exact): essays has both variants,
# business only searched (no item of it had a published thinking)
SEARCHED = {("essays", 0): 1.5, ("essays", 1): 1.25, ("essays", 2): 1.75, ("essays", 3): 1.0,
            ("business", 0): 3.0, ("business", 1): 0.5}
PUBLISHED = {("essays", 0): 1.75, ("essays", 1): 1.375, ("essays", 2): 2.125, ("essays", 3): 1.25}


def _results():
    rows = []
    for variant, values in (("searched", SEARCHED), ("published", PUBLISHED)):
        for (domain, p), value in values.items():
            rows.append({"domain": domain, "variant": variant, "seed": 0, "prompt_id": f"{domain}-{p}",
                         "heldout_nll_own_thinking": value})
    return rows


def test_searched_minus_published_is_paired_over_the_prompts_both_answered():
    rows = summarise(_results(), ["searched", "published"], resamples=500)
    index = {(r["domain"], r["variant"], r["metric"]): r for r in rows}
    diffs = [-0.25, -0.125, -0.375, -0.25]  # essays' four prompts; business has no published answer
    sd = statistics.stdev(diffs)
    for domain in ("essays", ALL):
        diff = index[(domain, "searched-published", "heldout_nll_own_thinking")]
        assert diff["kind"] == "difference" and diff["n"] == 4 and diff["seeds"] == 1
        assert diff["value"] == -0.25 and diff["ci_low"] <= -0.25 <= diff["ci_high"]
        assert diff["mde"] == pytest.approx(DETECTION_FACTOR * sd / 2, abs=1e-12)
        assert diff["n_needed"] == math.ceil((DETECTION_FACTOR * sd / 0.25) ** 2 - 1e-9)
        assert f"(95% CI {diff['ci_low']:+.4f} to {diff['ci_high']:+.4f}, n = 4)" in diff["reading"]
    business = index[("business", "searched-published", "heldout_nll_own_thinking")]
    assert business["n"] == 0 and business["value"] is None and "no paired items" in business["reading"]
    assert index[(ALL, "searched", "heldout_nll_own_thinking")]["n"] == 6  # the mean still has every prompt
    assert index[(ALL, "published", "heldout_nll_own_thinking")]["n"] == 4


def test_the_report_says_where_published_is_absent_or_partial():
    from reer_assets.defs.experiments.assets import published_notes

    notes = published_notes({"essays": {"published_items": 4, "items": 4},
                             "business": {"published_items": 0, "items": 3},
                             "advertising": {"published_items": 2, "items": 5},
                             "education": {"published_items": None, "items": 3},  # not requested there
                             "science_engineering": {"published_items": 0, "items": 2}})
    assert notes == [
        "`published` is absent for business, science_engineering: no accepted item there has a published thinking "
        "(the source gave none)",
        "`published` covers 2 of 5 items of advertising (those whose source published a thinking); its "
        "checkpoints trained on those items only"]
    rows = summarise(_results(), ["searched", "published"], resamples=200)
    experiment = {"id": "exp_pub", "domains": ["business", "essays"], "variants": ["searched", "published"],
                  "seeds": [0], "base_model": "reer-embedded:x", "budget_json": json.dumps({}),
                  "config_json": json.dumps({"notes": notes[:1]})}
    report = render_report(experiment, rows)
    assert "| searched − published |" in report
    assert "- `published` is absent for business, science_engineering" in report


def test_the_asset_config_adds_published_unless_told_not_to():
    from reer_assets.defs.experiments.assets import AblationDatasetConfig

    assert AblationDatasetConfig(profile="test").variant_list() == [
        "searched", "initial", "no_thinking", "random_edits", "shuffled", "published"]
    assert AblationDatasetConfig(profile="test", variants=["searched"]).variant_list() == ["searched", "published"]
    assert AblationDatasetConfig(profile="test", variants=["searched", "published"], published=False
                                 ).variant_list() == ["searched"]
