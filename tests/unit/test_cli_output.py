"""What the `reer` command prints where: `--json` is one JSON document on stdout (logs on stderr), progress
bars only on a terminal's stderr and never with `--json`, a rejected search says why and what to try,
and the exit codes are documented in `reer --help`. (The in-process vLLM and HTTP backends: tests/vllm/.)"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REER = [sys.executable, "-m", "reer_assets.cli"]
VALIDATE = f"{sys.executable} -c 'import json,sys; json.load(sys.stdin)'"


def reer(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*REER, *args], capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=timeout, cwd=REPO)


def piped_to_json_load(args: list[str], env: dict[str, str], keep: Path) -> tuple[subprocess.CompletedProcess, str]:
    """``reer ARGS | python -c 'import json,sys; json.load(sys.stdin)'`` in bash with pipefail (what went
    through the pipe is kept in ``keep``): the completed pipeline and that stdout."""
    import shlex

    command = (f"set -o pipefail; {' '.join(map(shlex.quote, [*REER, *args]))} | tee {shlex.quote(str(keep))} "
               f"| {VALIDATE}")
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env={**os.environ, **env},
                         timeout=600, cwd=REPO)
    return out, keep.read_text(encoding="utf-8") if keep.exists() else ""


def with_stderr_on_a_terminal(args: list[str]) -> tuple[int, str, str]:
    """Run ``reer ARGS`` with stdout a pipe and stderr a pseudo-terminal; (rc, stdout, terminal output)."""
    master, slave = pty.openpty()
    process = subprocess.Popen([*REER, *args], stdout=subprocess.PIPE, stderr=slave, cwd=REPO)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    stdout = process.stdout.read().decode()
    process.wait(timeout=60)
    os.close(master)
    return process.returncode, stdout, seen.decode(errors="replace")


@pytest.fixture()
def score_files(tmp_path, bundled_item):
    ref = tmp_path / "ref.txt"
    ref.write_text(bundled_item.reference, encoding="utf-8")
    thinking = tmp_path / "z.txt"
    thinking.write_text("Alright, the user wants this piece.\n\nI will plan it in order.", encoding="utf-8")
    return ["--query", bundled_item.query, "--thinking", str(thinking), "--reference", str(ref)]


def test_help_documents_the_exit_codes():
    out = reer("--help")
    assert out.returncode == 0
    epilog = out.stdout.split("exit codes:", 1)[1]
    for code, words in (("0", "done"), ("1", "found nothing"), ("2", "usage or configuration error"),
                        ("3", "rejected"), ("130", "interrupted")):
        assert any(line.split()[:1] == [code] and words in line for line in epilog.splitlines()), (code, epilog)
    assert "exit codes:" in reer("search", "--help").stdout


@pytest.mark.model
@pytest.mark.parametrize("backend", ["embedded", "hf"])
def test_score_json_is_one_document(backend, score_files, scorer_path, tmp_path):
    env = {"REER_SCORER_BACKEND": backend, **({"REER_SCORER_MODEL": str(scorer_path)} if backend == "hf" else {})}
    out, stdout = piped_to_json_load(["score", *score_files, "--json"], env, tmp_path / "stdout.json")
    assert out.returncode == 0, out.stderr
    assert len(stdout.splitlines()) == 1, stdout
    assert 0 < json.loads(stdout)["score"] <= 2


@pytest.mark.model
def test_rejected_search_says_why_and_what_to_try(tmp_path, bundled_item, embedded_path):
    ref = tmp_path / "ref.txt"
    ref.write_text(bundled_item.reference, encoding="utf-8")
    args = ["search", "--query", bundled_item.query, "--reference", str(ref), "--max-tokens", "120",
            "--min-rollout-tokens", "100000", "--json"]
    rc, stdout, terminal = with_stderr_on_a_terminal(args)
    assert rc == 3, terminal
    trace = json.loads(stdout)  # still one JSON document
    assert trace["status"] == "rejected" and trace["reject_reason"] == "initial_rollout_too_short"
    assert "the initial thinking was rejected (initial_rollout_too_short)" in terminal
    assert "fewer than --min-rollout-tokens 100000" in terminal
    for advice in ("try: --min-rollout-tokens", "another --seed (e.g. --seed 1)", "REER_GENERATOR_BACKEND"):
        assert advice in terminal, terminal
    assert "\x1b[?25l" not in terminal  # --json: no progress bar, even on a terminal


@pytest.mark.model
def test_search_over_items_prints_one_document(tmp_path, embedded_path):
    from reer_assets import data

    pieces = [p for p in data.corpus("essays") if p["language"] == "en"][:2]
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"item_id": p["id"], "query": p["request"], "reference": p["text"]}) + "\n"
                             for p in pieces), encoding="utf-8")
    out, stdout = piped_to_json_load(["search", "--items", str(items), "--max-step", "1", "--num-expansion", "1",
                                      "--max-tokens", "200", "--min-rollout-tokens", "8", "--json"], {},
                                     tmp_path / "stdout.json")
    assert out.returncode in (0, 3), out.stderr  # 3 only when every item was rejected
    result = json.loads(stdout)
    assert result["items"] == 2 and result["ok"] + result["rejected"] == 2
    assert [t["item_id"] for t in result["traces"]] == [p["id"] for p in pieces]
    assert "\x1b[" not in out.stderr  # stderr is not a terminal: no bar


def test_search_needs_an_item():
    out = reer("search", "--json")
    assert out.returncode == 2 and "--query and --reference, or --items" in out.stderr


def test_ingest_progress_bar_only_on_a_terminal(tmp_path):
    records = tmp_path / "notes.jsonl"
    records.write_text("".join(json.dumps({"id": f"n{i}", "text": f"Note {i}: " + "a plain sentence here. " * 20})
                               + "\n" for i in range(40)), encoding="utf-8")
    args = ["ingest", "--reader", "generic", str(records), "--option", "min_units=5", "--jsonl"]
    rc, stdout, terminal = with_stderr_on_a_terminal(args)
    assert rc == 0 and len(stdout.splitlines()) == 40
    assert "\x1b[?25l" in terminal and "ingesting" in terminal  # rich drew its bar on the terminal
    assert '"rows": 40' in terminal  # the summary, printed above the bar
    piped = reer(*args)
    assert piped.returncode == 0 and len(piped.stdout.splitlines()) == 40
    assert "\x1b[" not in piped.stderr and "ingesting" not in piped.stderr  # not a terminal: no bar
