"""`reer ... --json` with the vLLM backends, and `reer serve`, as a user runs them (subprocesses).

* ``REER_SCORER_BACKEND=vllm`` (the engine in process): stdout is one JSON document, vLLM's engine
  log goes to stderr, and the engine shuts down before the interpreter does (no "terminate called
  without an active exception", exit 0);
* ``REER_SCORER_BACKEND=openai`` against the session's vLLM server;
* ``reer serve``: comes up, prints the ``REER_<ROLE>_*`` settings, a ``reer score --json`` through those
  settings works, and SIGTERM (with --json) or SIGINT (the export lines) stops it and its server cleanly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.unit.test_cli_output import REER, piped_to_json_load

pytestmark = [pytest.mark.model, pytest.mark.vllm, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
ROLE_PREFIXES = ("REER_GENERATOR_", "REER_SCORER_", "REER_JUDGE_")


@pytest.fixture()
def score_args(tmp_path, bundled_item):
    ref = tmp_path / "ref.txt"
    ref.write_text(bundled_item.reference, encoding="utf-8")
    thinking = tmp_path / "z.txt"
    thinking.write_text("Alright, the user wants this piece.\n\nI will plan it in order.", encoding="utf-8")
    return ["score", "--query", bundled_item.query, "--thinking", str(thinking), "--reference", str(ref), "--json"]


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith(ROLE_PREFIXES)}, **extra}


def test_score_json_with_the_in_process_engine(score_args, tmp_path, scorer_path):
    started = time.monotonic()
    # INFO: the shutdown check below reads vLLM's own log lines (an earlier in-process `reer bench` may have
    # set VLLM_LOGGING_LEVEL=WARNING in this process's environment)
    # vLLM's default multiprocess executor (the suite runs `uni`, tests/conftest.py): its shutdown is checked
    out, stdout = piped_to_json_load(score_args, {"REER_SCORER_BACKEND": "vllm", "VLLM_LOGGING_LEVEL": "INFO",
                                                  "REER_VLLM_CPU_EXECUTOR": "mp"}, tmp_path / "stdout.json")
    assert out.returncode == 0, out.stderr[-4000:]
    assert len(stdout.splitlines()) == 1, stdout[:2000]  # the engine's ~40 log lines are not on stdout ...
    result = json.loads(stdout)
    assert result["scorer_model"].startswith("vllm:reer-embedded-scorer:") and 0 < result["score"] <= 2
    assert "[shutdown] MPClient: complete" in out.stderr  # ... they are on stderr, down to a clean shutdown
    assert "terminate called" not in out.stderr and "force killing" not in out.stderr, out.stderr[-3000:]
    print(f"\n[vllm] reer score --json (in-process engine) took {time.monotonic() - started:.1f}s")


def test_score_json_over_http(score_args, tmp_path, vllm_server, embedded_path):
    env = {"REER_SCORER_BACKEND": "openai", "REER_SCORER_BASE_URL": vllm_server.base_url,
           "REER_SCORER_MODEL": str(embedded_path)}
    out, stdout = piped_to_json_load(score_args, env, tmp_path / "stdout.json")
    assert out.returncode == 0, out.stderr[-4000:]
    assert json.loads(stdout)["scorer_model"] == f"openai:{embedded_path}"


def _serve(args: list[str], log: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """``reer serve ARGS`` in its own session; returns once it printed its settings (stdout)."""
    process = subprocess.Popen([*REER, "serve", *args], stdout=subprocess.PIPE, stderr=open(log, "wb"),
                               cwd=REPO, env=clean_env(env or {}), start_new_session=True, text=True)
    lines = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"reer serve exited ({process.wait()}):\n{log.read_text()[-4000:]}")
        lines.append(line)
        if args.count("--json") or line.startswith("export REER_") and len(lines) == 4:
            return process, "".join(lines)
    raise AssertionError("reer serve did not come up")


def _stop(process: subprocess.Popen, sig: int) -> tuple[int, float]:
    started = time.monotonic()
    os.kill(process.pid, sig)
    rc = process.wait(timeout=90)
    return rc, time.monotonic() - started


def _group_gone(pgid: int, grace_s: float = 20.0) -> bool:
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)  # wait: a polling interval until the process group is gone
    return False


def test_serve_json_scores_through_its_settings_and_stops_on_sigterm(score_args, tmp_path, scorer_path):
    # vLLM's default multiprocess executor (the suite runs `uni`): its engine and worker processes must go too
    process, printed = _serve(["--role", "scorer", "--json"], tmp_path / "serve.log", {"REER_VLLM_CPU_EXECUTOR": "mp"})
    try:
        settings = json.loads(printed)
        env = settings["env"]
        assert env == {"REER_SCORER_BACKEND": "openai", "REER_SCORER_BASE_URL": settings["base_url"],
                       "REER_SCORER_MODEL": "scorer", "REER_SCORER_TOKENIZER": str(scorer_path)}
        assert settings["base_url"].startswith("http://127.0.0.1:")
        out, stdout = piped_to_json_load(score_args, env, tmp_path / "stdout.json")
        assert out.returncode == 0, out.stderr[-4000:]
        assert json.loads(stdout)["scorer_model"] == "openai:scorer"
    finally:
        rc, seconds = _stop(process, signal.SIGTERM)
    assert rc == 0, (tmp_path / "serve.log").read_text()[-4000:]
    assert _group_gone(settings["pid"]), "the vLLM server outlived reer serve"
    assert process.stdout.read() == ""  # nothing after the one JSON document
    print(f"\n[serve] SIGTERM: stopped in {seconds:.1f}s")


def test_serve_prints_exports_and_stops_on_sigint(tmp_path):
    from reer_assets.backends.vllm_server import free_port

    port = free_port()
    process, printed = _serve(["--role", "generator", "--port", str(port)], tmp_path / "serve.log")
    try:
        exports = dict(line.removeprefix("export ").split("=", 1) for line in printed.splitlines())
        assert exports["REER_GENERATOR_BACKEND"] == "openai"
        assert exports["REER_GENERATOR_BASE_URL"] == f"http://127.0.0.1:{port}/v1"
        assert exports["REER_GENERATOR_MODEL"] == "generator"
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10) as response:
            assert [m["id"] for m in json.loads(response.read())["data"]] == ["generator"]
    finally:
        rc, seconds = _stop(process, signal.SIGINT)
    assert rc == 0, (tmp_path / "serve.log").read_text()[-4000:]
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5)
    print(f"\n[serve] SIGINT: stopped in {seconds:.1f}s")
