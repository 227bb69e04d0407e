"""The `reer` command as a user runs it (subprocesses, real embedded model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def reer(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reer_assets.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


def test_segment_json(tmp_path):
    a = "Alright, the user wants an essay for a school magazine about why repair skills matter to teenagers today."
    b = "Hmm, maybe I should open with a concrete scene: a bike chain slipping on the way to school on a wet morning."
    path = tmp_path / "t.txt"
    path.write_text(f"{a}\n\n\n{b}\n\nEnd.", encoding="utf-8")
    out = reer("segment", str(path), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [a, f"\n\n\n{b}\n\nEnd."]  # exact text: the segments rejoin to the file


def test_missing_file_is_a_clear_error(tmp_path):
    out = reer("segment", str(tmp_path / "nope.txt"), "--json")
    assert out.returncode == 2 and "nope.txt" in out.stderr and "Traceback" not in out.stderr


def test_unknown_backend_is_a_clear_error(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("x", encoding="utf-8")
    out = reer("score", "--query", "q", "--thinking", str(path), "--reference", str(path), "--json",
               env={"REER_SCORER_BACKEND": "nonsense"})
    assert out.returncode == 2 and "unknown backend 'nonsense'" in out.stderr


PLAN = ("Alright, the user wants this piece, so I should first settle who reads it and why they care.\n\n"
        "Then I will lay out the main points in order, one paragraph each, with a concrete example.\n\n"
        "Finally I will close with a short line that sends the reader back to the opening image.")


@pytest.mark.model
def test_score_and_search_json(tmp_path, embedded_path, bundled_item):
    """The search starts from a given three-paragraph thinking, so what it must do is known whatever the
    toy model writes: two steps (max_step 2 of 3 segments at the test profile's 40 characters), two
    candidates each, the initial score equal to `reer score` of the same thinking, never worse at the end."""
    ref = tmp_path / "ref.txt"
    ref.write_text(bundled_item.reference, encoding="utf-8")
    thinking = tmp_path / "z.txt"
    thinking.write_text(PLAN, encoding="utf-8")
    score = reer("score", "--query", bundled_item.query, "--thinking", str(thinking), "--reference", str(ref), "--json")
    assert score.returncode == 0, score.stderr
    result = json.loads(score.stdout)
    assert 0 < result["score"] <= 2 and result["scored_tokens"] > 50

    search = reer("search", "--query", bundled_item.query, "--reference", str(ref), "--initial-thinking", str(thinking),
                  "--seed", "3", "--max-step", "2", "--num-expansion", "2", "--json", env={"REER_PROFILE": "test"})
    assert search.returncode == 0, search.stderr
    trace = json.loads(search.stdout)
    assert trace["status"] == "ok" and trace["initial_thinking"] == PLAN and len(trace["initial_segments"]) == 3
    assert trace["config"]["min_segment_chars"] == 40 and trace["config"]["max_tokens"] == 480  # the test profile
    assert abs(trace["initial_score"] - result["score"]) < 1e-5
    assert trace["initial_score"] >= trace["config"]["stop_thresh"]  # so the search ran its steps
    assert [step["index"] for step in trace["steps"]] == [0, 1]
    assert all(len(step["candidates"]) == 2 for step in trace["steps"])
    assert trace["final_score"] <= trace["initial_score"]
    accepted = [s for s in trace["steps"] if s["choice"] is not None]
    if accepted:  # a kept rewrite is in the final thinking and lowered the score
        assert trace["final_score"] < trace["initial_score"]
        assert accepted[-1]["candidates"][accepted[-1]["choice"]]["text"].strip() in trace["final_thinking"]
    else:
        assert trace["final_thinking"] == PLAN and trace["final_score"] == trace["initial_score"]


@pytest.mark.model
def test_an_unsegmentable_thinking_is_rejected_with_advice_that_can_help(tmp_path, embedded_path, bundled_item):
    ref = tmp_path / "ref.txt"
    ref.write_text(bundled_item.reference, encoding="utf-8")
    thinking = tmp_path / "z.txt"
    thinking.write_text("One short plan.\n\nAnd a second.", encoding="utf-8")
    search = reer("search", "--query", bundled_item.query, "--reference", str(ref), "--initial-thinking", str(thinking),
                  "--json")
    assert search.returncode == 3
    assert json.loads(search.stdout)["reject_reason"] == "initial_rollout_unsegmentable"
    assert "--min-segment-chars 50" in search.stderr and "--min-rollout-tokens" not in search.stderr


def test_bad_lineage_sql_is_a_clear_error(tmp_path):
    out = reer("lineage", "sql", "SELECT no_such_column FROM trajectories", env={"REER_LINEAGE_DB": str(tmp_path / "l.duckdb")})
    assert out.returncode == 2 and "no_such_column" in out.stderr and "Traceback" not in out.stderr
