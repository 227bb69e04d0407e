"""Benchmark adapters on small fixture files (our own texts, in the benchmarks' real layouts), every bad
line's reason, and each benchmark's aggregation on hand-made scores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reer_assets.core.evaluation.benchmarks import (
    hellobench_item_score,
    hellobench_summary,
    hellobench_task,
    load_benchmark,
    load_responses,
    longbench_write_summary,
    quality_score,
    quality_score_longwriter_scale,
    summary,
    writingbench_summary,
)
from reer_assets.core.evaluation.judge import BANDS, QUALITY_DIMENSIONS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "benchmarks"
ROW_KEYS = {"id", "benchmark", "language", "prompt", "required_length", "criteria", "status", "reasons", "line", "meta"}


def _load(name: str, benchmark: str) -> list[dict]:
    return load_benchmark(benchmark, FIXTURES / name)


def _by_line(rows: list[dict]) -> dict[int, tuple[str, list[str]]]:
    return {r["line"]: (r["status"], r["reasons"]) for r in rows}


# --------------------------------------------------------------------------------------------------
# adapters


def test_longbench_write_rows_and_every_bad_line():
    rows = _load("longbench_write.jsonl", "longbench-write")
    assert all(set(r) == ROW_KEYS and r["benchmark"] == "longbench-write" for r in rows)
    assert _by_line(rows) == {  # line 4 is blank: skipped, not a row
        1: ("accepted", []), 2: ("accepted", []), 3: ("accepted", []), 5: ("accepted", []),
        6: ("rejected", ["invalid_json"]), 7: ("rejected", ["missing_field:length"]),
        8: ("rejected", ["not_an_object"]), 9: ("rejected", ["bad_field:length"]),
        10: ("rejected", ["missing_field:prompt"]), 11: ("rejected", ["empty_field:prompt"]),
    }
    good = [r for r in rows if r["status"] == "accepted"]
    assert [(r["id"], r["language"], r["required_length"], r["meta"]["type"]) for r in good] == [
        ("lbw-0001", "en", 300, "Functional Writing"), ("lbw-0002", "zh", 400, "Literature and Creative Writing"),
        ("lbw-0003", "en", 150, "Popular Science"), ("lbw-0005", "zh", 200, "Community Forum")]
    assert all(r["criteria"] == [] and r["prompt"] for r in good)


def test_writingbench_rows_criteria_and_every_bad_line():
    rows = _load("writingbench.jsonl", "writingbench")
    assert _by_line(rows) == {
        1: ("accepted", []), 2: ("accepted", []), 3: ("accepted", []),
        4: ("rejected", ["missing_field:checklist"]), 5: ("rejected", ["bad_criterion:1:missing_band:5-6"]),
        6: ("rejected", ["invalid_json"]), 7: ("rejected", ["duplicate_id:2"]),
        8: ("rejected", ["missing_field:query"]), 9: ("rejected", ["bad_field:checklist"]),
        10: ("rejected", ["not_an_object"]),
    }
    good = {r["id"]: r for r in rows if r["status"] == "accepted"}
    assert list(good) == ["1", "2", "3"]
    assert [good[i]["language"] for i in good] == ["en", "en", "zh"]
    assert good["2"]["meta"] == {"domain1": "Finance & Business", "domain2": "Meeting Minutes"}
    assert [c["name"] for c in good["2"]["criteria"]] == ["Completeness", "Register", "Action_Items"]
    first = good["1"]["criteria"][0]
    assert set(first) == {"name", "description", "bands", "weight"} and list(first["bands"]) == list(BANDS)
    assert first["description"].startswith("Can a teacher run the lesson")
    assert good["3"]["criteria"][0]["name"] == "情节完整"


def test_writingbench_reads_the_requirement_subset_spelling(tmp_path):
    line = json.loads((FIXTURES / "writingbench.jsonl").read_text(encoding="utf-8").splitlines()[0])
    line["criteria"] = line.pop("checklist")
    path = tmp_path / "length_subset.jsonl"
    path.write_text(json.dumps(line) + "\n", encoding="utf-8")
    [row] = load_benchmark("writingbench", path)
    assert row["status"] == "accepted" and len(row["criteria"]) == 2


def test_hellobench_rows_in_both_layouts_and_every_bad_line():
    rows = _load("hellobench.jsonl", "hellobench")
    assert _by_line(rows) == {
        1: ("accepted", []), 2: ("accepted", []), 3: ("accepted", []),
        4: ("rejected", ["bad_field:num_checklist"]), 5: ("rejected", ["missing_field:checklists"]),
        6: ("rejected", ["bad_checklist:2"]), 7: ("rejected", ["missing_field:id"]),
        8: ("rejected", ["bad_field:weights"]), 9: ("rejected", ["invalid_json"]),
    }
    good = {r["id"]: r for r in rows if r["status"] == "accepted"}
    old_layout = good["heuristic_text_generation_000"]  # the older files carry the prompt as chat_prompt
    assert old_layout["prompt"].startswith("Write a short story in which a lost umbrella")
    assert old_layout["meta"] == {"task": "heuristic_text_generation", "category": "story_writing"}
    assert [(c["name"], c["weight"]) for c in good["open_ended_qa_001"]["criteria"]] == [
        ("1", 1.0), ("2", 2.0), ("3", 1.0), ("4", 1.0)]
    assert good["open_ended_qa_000"]["criteria"][1]["description"].startswith("Does it address the second question")
    assert hellobench_task("open_ended_qa_012") == "open_ended_qa" and hellobench_task("chat") == "chat"


def test_responses_files():
    responses, rejected = load_responses(FIXTURES / "writingbench_responses.jsonl", "index")
    assert sorted(responses) == ["1", "2", "3"] and responses["2"].startswith("Minutes.")
    assert rejected == [{"line": 4, "status": "rejected", "reasons": ["missing_field:response"]}]
    hello, none = load_responses(FIXTURES / "hellobench_responses.jsonl", "id")
    assert len(hello) == 3 and none == []


def test_summary_and_unknown_format():
    rows = _load("writingbench.jsonl", "writingbench")
    assert summary(rows) == {"rows": 10, "accepted": 3, "rejected": 7, "reasons": {
        "bad_criterion:1:missing_band:5-6": 1, "bad_field:checklist": 1, "duplicate_id:2": 1, "invalid_json": 1,
        "missing_field:checklist": 1, "missing_field:query": 1, "not_an_object": 1}}
    with pytest.raises(ValueError, match="unknown benchmark format"):
        load_benchmark("alpacaeval", FIXTURES / "writingbench.jsonl")


def _reer(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reer_assets.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=120)


def test_cli_eval_load_prints_rows_and_a_summary():
    out = _reer("eval", "load", "--format", "hellobench", str(FIXTURES / "hellobench.jsonl"), "--jsonl")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 9 and {r["status"] for r in rows} == {"accepted", "rejected"} and set(rows[0]) == ROW_KEYS
    assert json.loads(out.stderr.strip().splitlines()[-1]) == summary(rows)
    plain = _reer("eval", "load", "--format", "longbench-write", str(FIXTURES / "longbench_write.jsonl"))
    assert plain.returncode == 0 and json.loads(plain.stdout)["rejected"] == 6


# --------------------------------------------------------------------------------------------------
# aggregation on hand-made scores


def _rows(item_id: str, scores: dict, status: str = "ok") -> list[dict]:
    return [{"item_id": item_id, "criterion": c, "score": s, "status": status if s is not None else "judge_failed"}
            for c, s in scores.items()]


def test_writingbench_summary_per_domain_and_requirement():
    items = [r for r in _load("writingbench.jsonl", "writingbench") if r["status"] == "accepted"]
    scores = (_rows("1", {"Feasibility": 8, "Age_Fit": 6}) + _rows("2", {"Completeness": 10, "Register": 8, "Action_Items": 6})
              + _rows("3", {"情节完整": 4, "细节描写": 6}))
    out = writingbench_summary(items, scores, requirements={"length": {"1": ["Feasibility"], "2": ["Completeness"]}},
                               resamples=200)
    assert out["items"] == 3 and out["incomplete"] == []
    assert out["overall"]["mean"] == pytest.approx(48 / 7)  # the mean of all criterion scores
    assert out["overall"]["ci_low"] <= out["overall"]["mean"] <= out["overall"]["ci_high"]
    assert {k: v["mean"] for k, v in out["domain1"].items()} == {
        "Education": 7.0, "Finance & Business": 8.0, "Literature & Arts": 5.0}
    assert out["domain2"]["Meeting Minutes"] == {"mean": 8.0, "items": 1}
    assert out["requirements"]["length"] == {"R": 7.5, "C": 9.0, "items": 2}


def test_writingbench_summary_leaves_out_items_with_failed_or_missing_judgments():
    items = [r for r in _load("writingbench.jsonl", "writingbench") if r["status"] == "accepted"]
    scores = (_rows("1", {"Feasibility": 8, "Age_Fit": 6}) + _rows("2", {"Completeness": 10, "Register": None})
              + _rows("3", {"情节完整": 4}))
    out = writingbench_summary(items, scores, resamples=50)
    assert out["items"] == 1 and out["overall"]["mean"] == 7.0
    assert out["incomplete"] == [{"id": "2", "why": "judge_failed"}, {"id": "3", "why": "missing:细节描写"}]


def test_quality_score_is_twenty_times_the_mean():
    assert quality_score(dict.fromkeys(QUALITY_DIMENSIONS, 4)) == 80.0
    assert quality_score(dict.fromkeys(QUALITY_DIMENSIONS, 5)) == 100.0
    assert quality_score(dict.fromkeys(QUALITY_DIMENSIONS, 1)) == 20.0
    mixed = dict(zip(QUALITY_DIMENSIONS, [5, 4, 4, 3, 2, 3]))
    assert quality_score(mixed) == pytest.approx(20 * 21 / 6)
    assert quality_score_longwriter_scale(dict.fromkeys(QUALITY_DIMENSIONS, 4)) == 75.0
    with pytest.raises(ValueError, match="missing clarity"):
        quality_score({k: 3 for k in QUALITY_DIMENSIONS if k != "clarity"})
    with pytest.raises(ValueError, match="must lie in"):
        quality_score(dict.fromkeys(QUALITY_DIMENSIONS, 6))


def test_longbench_write_summary_combines_length_and_quality():
    items = [r for r in _load("longbench_write.jsonl", "longbench-write") if r["status"] == "accepted"]
    answers = {
        "lbw-0001": "<think>\n" + "planning words " * 200 + "\n</think>\n<answer>\n" + "word " * 300 + "\n</answer>",
        "lbw-0002": "秋" * 400,  # characters count in Chinese
        "lbw-0003": "word " * 75,  # half the 150 words asked for: S_l = 100·(1 − (150/75 − 1)/2) = 50
    }
    scores = (_rows("lbw-0001", dict.fromkeys(QUALITY_DIMENSIONS, 4)) + _rows("lbw-0002", {"relevance": None})
              + _rows("lbw-0003", dict.fromkeys(QUALITY_DIMENSIONS, 3))
              + _rows("lbw-0005", dict.fromkeys(QUALITY_DIMENSIONS, 5)))
    out = longbench_write_summary(items, answers, scores, resamples=200)
    per_item = {r["id"]: (r["S_l"], r["S_q"]) for r in out["per_item"]}
    assert per_item == {"lbw-0001": (100.0, 80.0), "lbw-0002": (100.0, None), "lbw-0003": (50.0, 60.0),
                        "lbw-0005": (None, 100.0)}
    assert out["S_l"]["mean"] == pytest.approx(250 / 3) and out["S_q"]["mean"] == pytest.approx(80.0)
    assert out["S"] == pytest.approx((250 / 3 + 80) / 2) and out["S_items_with_both"] == 2
    assert {"id": "lbw-0002", "why": "judge_failed"} in out["incomplete"]
    assert {"id": "lbw-0005", "why": "no_answer"} in out["incomplete"]
    assert out["type"]["Popular Science"] == {"S_l": 50.0, "S_q": 60.0, "items": 1}


def test_hellobench_item_score_is_a_weighted_checklist_mean_out_of_100():
    assert hellobench_item_score([1, 0.5, 0, 0.75]) == pytest.approx(56.25)
    assert hellobench_item_score([1, 0.5, 0, 0.75], [40, 20, 20, 20]) == pytest.approx(65.0)
    assert hellobench_item_score([1, 1, 1]) == 100.0 and hellobench_item_score([0, 0]) == 0.0
    with pytest.raises(ValueError, match="weights"):
        hellobench_item_score([1, 0.5], [1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        hellobench_item_score([1, 2])


def test_hellobench_summary_uses_item_weights_then_the_weights_map_then_equal():
    items = [r for r in _load("hellobench.jsonl", "hellobench") if r["status"] == "accepted"]
    weights = json.loads((FIXTURES / "hellobench_weights.json").read_text())
    scores = (_rows("open_ended_qa_000", {"1": 1.0, "2": 0.5, "3": 0.0, "4": 0.75})
              + _rows("open_ended_qa_001", {"1": 1.0, "2": 0.25, "3": 0.5, "4": 1.0})
              + _rows("heuristic_text_generation_000", {"1": 0.5, "2": 1.0, "3": None}))
    out = hellobench_summary(items, scores, weights, resamples=100)
    per_item = {r["id"]: (r["score"], r["weights"]) for r in out["per_item"]}
    assert per_item == {"open_ended_qa_000": (pytest.approx(65.0), "weights_map"),
                        "open_ended_qa_001": (pytest.approx(60.0), "item")}  # (1 + 0.5 + 0.5 + 1) / 5
    assert out["incomplete"] == [{"id": "heuristic_text_generation_000", "why": "judge_failed"}]
    assert out["task"] == {"open_ended_qa": {"mean": pytest.approx(62.5), "items": 2}}
    assert out["weights"] == {"weights_map": 1, "item": 1}
    equal = hellobench_summary(items, scores, None, resamples=100)
    assert {r["id"]: r["weights"] for r in equal["per_item"]}["open_ended_qa_000"] == "equal"
    assert equal["overall"]["mean"] == pytest.approx((56.25 + 60.0) / 2)
