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


@pytest.mark.model
def test_score_and_search_json(tmp_path, embedded_path, bundled_item):
    ref = tmp_path / "ref.txt"
    ref.write_text(bundled_item.reference, encoding="utf-8")
    thinking = tmp_path / "z.txt"
    thinking.write_text("Alright, the user wants this piece.\n\nI will plan it in order.", encoding="utf-8")
    score = reer("score", "--query", bundled_item.query, "--thinking", str(thinking), "--reference", str(ref), "--json")
    assert score.returncode == 0, score.stderr
    result = json.loads(score.stdout)
    assert 0 < result["score"] <= 2 and result["scored_tokens"] > 50

    search = reer("search", "--query", bundled_item.query, "--reference", str(ref), "--seed", "3", "--max-step", "2",
                  "--num-expansion", "2", "--max-tokens", "500", "--json")
    assert search.returncode in (0, 3), search.stderr
    trace = json.loads(search.stdout)
    assert {"initial_score", "final_score", "steps", "tokens", "seed"} <= set(trace)
    if trace["status"] == "ok":
        assert trace["final_score"] <= trace["initial_score"]
        for step in trace["steps"]:
            assert "choice" in step and len(step["candidates"]) == 2


def test_bad_lineage_sql_is_a_clear_error(tmp_path):
    out = reer("lineage", "sql", "SELECT no_such_column FROM trajectories", env={"REER_LINEAGE_DB": str(tmp_path / "l.duckdb")})
    assert out.returncode == 2 and "no_such_column" in out.stderr and "Traceback" not in out.stderr
