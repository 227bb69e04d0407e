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


def test_each_reject_reason_gets_the_hints_that_can_help():
    from reer_assets.cli.search import rejection_hints
    from reer_assets.core.refinement import SearchConfig

    config = SearchConfig(min_segment_chars=40, min_rollout_tokens=48, max_tokens=480)
    split = rejection_hints("initial_rollout_unsegmentable", config, seed=4)
    assert split[0].startswith("--min-segment-chars 20 ") and "another --seed (e.g. --seed 5)" in split
    assert not any("--min-rollout-tokens" in h for h in split)  # a lower token floor cannot split a segment
    given = rejection_hints("initial_rollout_unsegmentable", config, seed=4, given_thinking=True)
    assert given[0] == split[0] and not any("--seed" in h or "GENERATOR" in h for h in given)  # not sampled
    short = rejection_hints("initial_rollout_too_short", config, seed=0)
    assert short[0].startswith("--min-rollout-tokens 24 ") and short[1].startswith("--max-tokens above 480")
    assert not any("--min-segment-chars" in h for h in short)


def test_every_command_with_a_profile_resolves_it_one_way(monkeypatch):
    """--profile, else REER_PROFILE, else default: one option and one resolver for search, synthesis and plan."""
    from reer_assets.cli.common import run_profile
    from reer_assets.cli.main import build_parser
    from reer_assets.lib.profiles import profile

    parser = build_parser()
    monkeypatch.setenv("REER_PROFILE", "demo")
    for argv in (["search", "--query", "q"], ["synthesize-query", "--reference", "r"], ["plan"]):
        args = parser.parse_args(argv)
        assert run_profile(args) == profile("demo"), argv
        assert run_profile(parser.parse_args([*argv, "--profile", "test"])) == profile("test"), argv
    assert run_profile(parser.parse_args(["search", "--query", "q"]))["search"]["min_segment_chars"] == 40  # demo's


def test_bad_lineage_sql_is_a_clear_error(tmp_path):
    out = reer("lineage", "sql", "SELECT no_such_column FROM trajectories", env={"REER_LINEAGE_DB": str(tmp_path / "l.duckdb")})
    assert out.returncode == 2 and "no_such_column" in out.stderr and "Traceback" not in out.stderr
