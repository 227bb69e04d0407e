"""Batch mode over a provider's Files and Batches API (backends/batch.py), against the loopback fake.

What is checked: the file and batch a provider sees (upload with ``purpose=batch``, one
``{custom_id, method, url, body}`` line per request, endpoint and ``completion_window=24h``), polling
through the in-progress states, results mapped back by ``custom_id`` into the synthesis workload's rows and
the judge's records, an expired batch (only its missing requests go out again), a failed batch, a partial
failure in the error file (a transient 503 resubmitted, a 400 recorded as the judgment's failure), each
request's outcome and tokens in lineage, and the API key nowhere but in the request header. Then the
restarts: the workload killed while the fake holds its batch ``in_progress``, and killed after the fake
created a batch whose id never reached it; each resume submits nothing twice (the fake counts uploads and
creates). The workloads run unchanged: in this process, or as ``python -m reer_assets.workloads.synthesis``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import polars as pl
import pytest

from reer_assets.backends.spec import BackendSpec
from reer_assets.lib import duckdb_store, storage
from tests.support.batch_docs import synthesis_extras, write_documents
from tests.support.fake_batches_api import SYNTHESIZED, FakeBatchesAPI, Plan

KEY = "sk-fake-batch-key-7f3a"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake():
    api = FakeBatchesAPI(api_key=KEY).start()
    yield api
    if api.hold_create is not None:
        api.hold_create.set()
    for plan in api.plans:
        if plan.hold is not None:
            plan.hold.set()
    api.stop()


def batch_env(tmp_path: Path, api: FakeBatchesAPI, role: str = "GENERATOR") -> dict[str, str]:
    return {f"REER_{role}_BACKEND": "openai", f"REER_{role}_BASE_URL": api.base_url,
            f"REER_{role}_API_KEY_ENV": "FAKE_BATCH_KEY", f"REER_{role}_BATCH": "1", "FAKE_BATCH_KEY": KEY,
            "REER_LINEAGE_DB": str(tmp_path / "lineage.duckdb"), "REER_BATCH_POLL_INTERVAL_S": "0"}


@pytest.fixture
def env(tmp_path, fake, monkeypatch):
    values = batch_env(tmp_path, fake)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("REER_LINEAGE_MODE", raising=False)
    return values


def lineage(tmp_path: Path, sql: str) -> pl.DataFrame:
    """A query of the test's lineage: the file, or (REER_LINEAGE_MODE=fragments) the fragments."""
    if os.environ.get("REER_LINEAGE_MODE") == "fragments":
        return duckdb_store.query(sql, mode="fragments")
    return duckdb_store.query(sql, path=tmp_path / "lineage.duckdb")


def run_synthesis(extras: dict) -> tuple[dict, list[str]]:
    from reer_assets.workloads import synthesis

    lines: list[str] = []
    return synthesis.run(extras, lines.append), lines


def all_text(tmp_path: Path) -> str:
    """Every lineage table and every file under tmp_path, as text (to look for the key)."""
    parts = []
    for table in lineage(tmp_path, "SELECT table_name FROM duckdb_tables()")["table_name"]:
        parts.append(json.dumps(lineage(tmp_path, f"SELECT * FROM {table}").to_dicts(), default=str))
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix != ".duckdb":
            parts.append(path.read_bytes().decode("utf-8", errors="replace"))
    return "\n".join(parts)


# --- settings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("true", True), ("On", True), ("0", False),
                                               ("false", False), ("no", False)])
def test_batch_flag_is_read_from_the_role_variables(raw, expected):
    assert BackendSpec.from_env("generator", {"REER_GENERATOR_BATCH": raw}).batch is expected
    spec = BackendSpec.from_env("judge", {"REER_JUDGE_BACKEND": "vllm", "REER_JUDGE_BATCH": raw})
    assert BackendSpec.from_env("judge", spec.env("judge")).batch is expected  # what a workload receives


def test_a_malformed_batch_flag_names_its_variable():
    with pytest.raises(ValueError, match="REER_GENERATOR_BATCH='sometimes'"):
        BackendSpec.from_env("generator", {"REER_GENERATOR_BATCH": "sometimes"})


# --- the Batches API path ------------------------------------------------------------------------------


def test_synthesis_goes_out_as_one_batch_and_maps_back_by_custom_id(tmp_path, fake, env):
    extras = synthesis_extras(tmp_path, write_documents(tmp_path, given=1))
    summary, logs = run_synthesis(extras)

    # what the provider saw: one upload for batch use, one batch on the chat endpoint with a 24h window
    assert (fake.uploads, fake.creates) == (1, 1)
    upload = next(f for f in fake.files.values() if f["purpose"] == "batch")
    batch = fake.batches["batch_0001"]
    assert (batch["endpoint"], batch["completion_window"], batch["input_file_id"]) == (
        "/v1/chat/completions", "24h", upload["id"])
    lines = fake.input_lines("batch_0001")
    assert len(lines) == 3  # the document with a given request asks nothing
    assert {(line["method"], line["url"]) for line in lines} == {("POST", "/v1/chat/completions")}
    assert len({line["custom_id"] for line in lines}) == 3
    assert all(line["body"]["model"] is not None and line["body"]["max_tokens"] == 64 for line in lines)
    # polled through the in-progress states, each change recorded, then collected
    assert [entry.split(" ", 2)[2] for entry in logs if " -> " in entry] == [
        "validating -> in_progress", "in_progress -> finalizing", "finalizing -> completed"]
    assert fake.polls == 3

    rows = storage.read_parquet(extras["out"]).sort("document_id")
    assert rows["synthesized"].to_list() == [False, True, True, True]
    made = rows.filter(pl.col("synthesized"))
    assert made["query"].to_list() == [SYNTHESIZED] * 3
    assert made["model"].to_list() == ["openai:served-default"] * 3  # as the live generator records it
    assert made["prompt_tokens"].to_list() == [40] * 3 and made["completion_tokens"].to_list() == [12] * 3
    assert summary["batch"]["submitted"] == 1 and summary["batch"]["results"] == {"ok": 3}

    recorded = lineage(tmp_path, "SELECT * FROM batches")
    assert recorded.height == 1
    row = recorded.row(0, named=True)
    assert (row["batch_id"], row["status"], row["transport"], row["scope"], row["role"], row["collected"]) == (
        "batch_0001", "completed", "openai", "synthesis", "generator", True)
    assert sorted(row["custom_ids"]) == sorted(line["custom_id"] for line in lines)
    assert row["target"] == fake.base_url and row["input_file_id"] == upload["id"]
    outcomes = lineage(tmp_path, "SELECT status, prompt_tokens, completion_tokens FROM batch_requests")
    assert outcomes.rows() == [("ok", 40, 12)] * 3

    # the key went only into the Authorization header
    assert all(headers.get("authorization") == f"Bearer {KEY}" for _, _, headers in fake.requests)
    assert KEY not in all_text(tmp_path) and KEY not in "\n".join(logs) and KEY not in json.dumps(summary)

    # a rerun: every document is checkpointed, nothing is uploaded or created again
    run_synthesis(extras)
    assert (fake.uploads, fake.creates) == (1, 1)


@pytest.mark.parametrize("mode", ["single", "fragments"])
def test_an_expired_batch_resubmits_only_its_missing_requests(tmp_path, fake, env, monkeypatch, mode):
    if mode == "fragments":  # no shared file: each write a Parquet fragment under the storage root
        monkeypatch.setenv("REER_LINEAGE_MODE", "fragments")
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    fake.plans = [Plan(end="expired", answered=1), Plan()]
    extras = synthesis_extras(tmp_path, write_documents(tmp_path, count=3))
    summary, _ = run_synthesis(extras)

    first, second = fake.input_lines("batch_0001"), fake.input_lines("batch_0002")
    assert fake.creates == 2 and len(first) == 3
    answered = json.loads(fake.files[fake.batches["batch_0001"]["output_file_id"]]["data"])["custom_id"]
    assert sorted(line["custom_id"] for line in second) == sorted(
        line["custom_id"] for line in first if line["custom_id"] != answered)
    assert storage.read_parquet(extras["out"])["synthesized"].to_list() == [True] * 3
    assert summary["batch"]["resubmitted"] == 2

    batches = lineage(tmp_path, "SELECT batch_id, status, generation, request_count FROM batches ORDER BY generation")
    assert batches.rows() == [("batch_0001", "expired", 1, 3), ("batch_0002", "completed", 2, 2)]
    outcomes = lineage(tmp_path, "SELECT batch_id, status, error_class, count(*) AS n FROM batch_requests "
                                 "GROUP BY ALL ORDER BY ALL")
    assert outcomes.rows() == [("batch_0001", "missing", "batch_expired", 2), ("batch_0001", "ok", None, 1),
                               ("batch_0002", "ok", None, 2)]


def test_a_batch_that_fails_validation_is_submitted_again(tmp_path, fake, env):
    fake.plans = [Plan(statuses=(), end="failed"), Plan()]
    extras = synthesis_extras(tmp_path, write_documents(tmp_path, count=2))
    run_synthesis(extras)
    assert fake.creates == 2 and len(fake.input_lines("batch_0002")) == 2
    failed = lineage(tmp_path, "SELECT status, errors FROM batches WHERE batch_id = 'batch_0001'").row(0, named=True)
    assert failed["status"] == "failed" and json.loads(failed["errors"])[0]["code"] == "invalid_request"
    assert storage.read_parquet(extras["out"])["synthesized"].to_list() == [True] * 2


def test_a_request_that_keeps_failing_fails_the_stage_and_the_rerun_asks_only_for_it(tmp_path, fake, env):
    marker = "allotments"  # in the second document's text, so in its request's body
    fake.plans = [Plan(errors={marker: 400})]
    extras = synthesis_extras(tmp_path, write_documents(tmp_path, count=3))
    from reer_assets.backends.openai_compat import BackendCallError

    with pytest.raises(BackendCallError, match="1 of 3 batch synthesis request"):
        run_synthesis(extras)
    assert fake.creates == 1  # a 400 is not transient: not sent again in this run
    assert len(list(Path(extras["work"]).glob("*.json"))) == 2  # the other two are checkpointed
    fake.plans = [Plan()]
    run_synthesis(extras)  # the next run asks again, for that request only
    assert fake.creates == 2 and len(fake.input_lines("batch_0002")) == 1
    assert marker in json.dumps(fake.input_lines("batch_0002")[0]["body"])
    assert storage.read_parquet(extras["out"])["synthesized"].to_list() == [True] * 3


def test_judging_in_batches_with_a_partial_failure_in_the_error_file(tmp_path, fake, monkeypatch):
    from reer_assets.backends.judge import load_judge
    from reer_assets.core.evaluation import judge as judging

    for name, value in batch_env(tmp_path, fake, "JUDGE").items():
        monkeypatch.setenv(name, value)
    # a transient 503 for one request (sent again, answered) and a 400 for another (every batch)
    fake.plans = [Plan(errors={"FLAKY": 503, "REFUSED": 400}), Plan(errors={"REFUSED": 400})]
    judge = load_judge(cache=tmp_path / "judge_cache.jsonl", batch_dir=tmp_path / "batches")
    tasks = [judging.quality_task("1", "Write about rain.", "It rained all day."),
             judging.quality_task("2", "Write about FLAKY weather.", "Sun, then hail."),
             judging.quality_task("3", "Write a REFUSED piece.", "Nothing."),
             *judging.pairwise_tasks("4", "Write a note.", "<think>x</think>A note.", "Another note.")]
    results = judge.judge(tasks)

    by_item = {(j.item_id, j.order): j for j in results}
    assert [by_item[(i, "")].status for i in ("1", "2", "3")] == ["ok", "ok", "judge_failed"]
    assert by_item[("3", "")].failure == "call_failed:http_400"  # asked with, then without, the constraint
    assert by_item[("3", "")].attempt_errors == ["call_failed:http_400"]
    assert [by_item[("4", o)].verdict for o in ("AB", "BA")] == ["A", "A"]
    assert all(j.judge_model == "openai:fake-model" and j.prompt_version == judging.PROMPT_VERSION for j in results)
    ok = [j for j in results if j.status == "ok"]
    assert [(j.attempts, j.prompt_tokens, j.completion_tokens) for j in ok] == [(1, 40, 12)] * 4
    # round 1: five requests in one batch, the 503 alone in a second; round 2: the 400 without the constraint
    assert fake.creates == 3
    assert [len(fake.input_lines(b)) for b in fake.order] == [5, 1, 1]
    assert fake.input_lines("batch_0001")[0]["body"]["response_format"]["type"] == "json_schema"
    assert "response_format" not in fake.input_lines("batch_0003")[0]["body"]
    assert judge.calls == 6 and judge.backend.structured == "json_schema"  # the fallback never succeeded
    outcomes = lineage(tmp_path, "SELECT b.batch_id, r.status, r.error_class, count(*) AS n FROM batch_requests r "
                                 "JOIN batches b ON b.id = r.submission_id GROUP BY ALL ORDER BY ALL")
    assert outcomes.rows() == [("batch_0001", "failed", "http_400", 1), ("batch_0001", "failed", "http_503", 1),
                               ("batch_0001", "ok", None, 3), ("batch_0002", "ok", None, 1),
                               ("batch_0003", "failed", "http_400", 1)]
    # the successful judgments are cached: judging again asks only for the failed one
    again = judge.judge(tasks)
    assert [j.cached for j in again] == [True, True, False, True, True]
    assert KEY not in all_text(tmp_path)


# --- restarts -------------------------------------------------------------------------------------------


def start_workload(tmp_path: Path, extras: dict, env: dict[str, str], name: str) -> subprocess.Popen:
    path = tmp_path / f"{name}.extras.json"
    path.write_text(json.dumps(extras), encoding="utf-8")
    full = {**{k: v for k, v in os.environ.items() if not k.startswith("REER_")}, **env, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "reer_assets.workloads.synthesis", str(path)], cwd=ROOT, env=full,
                            stdout=open(tmp_path / f"{name}.out", "w"), stderr=open(tmp_path / f"{name}.err", "w"))


def finish(process: subprocess.Popen, tmp_path: Path, name: str) -> dict:
    assert process.wait(timeout=300) == 0, (tmp_path / f"{name}.err").read_text()[-3000:]
    return json.loads((tmp_path / f"{name}.out").read_text().strip().splitlines()[-1])


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL


def test_killed_while_polling_the_resumed_run_collects_the_recorded_batch(tmp_path, fake):
    hold = threading.Event()
    fake.plans = [Plan(statuses=("in_progress", "finalizing"), hold=hold)]
    env = batch_env(tmp_path, fake)
    extras = synthesis_extras(tmp_path, write_documents(tmp_path))
    first = start_workload(tmp_path, extras, env, "first")
    # the first poll comes after the batch id was recorded; the fake now holds the batch in_progress
    assert fake.polled.wait(timeout=300), (tmp_path / "first.err").read_text()[-3000:]
    kill(first)
    recorded = lineage(tmp_path, "SELECT batch_id, status, request_count, collected FROM batches")
    assert recorded["status"].item() in ("validating", "in_progress")  # killed as the first poll arrived
    assert recorded.select("batch_id", "request_count", "collected").rows() == [("batch_0001", 4, False)]
    assert fake.batches["batch_0001"]["status"] == "in_progress"
    assert not Path(extras["out"]).exists()

    hold.set()  # the provider finishes the batch while no workload is running
    summary = finish(start_workload(tmp_path, extras, env, "second"), tmp_path, "second")
    assert (fake.uploads, fake.creates) == (1, 1)  # polled and collected, nothing submitted twice
    assert summary["batch"]["adopted"] == 1 and summary["batch"]["submitted"] == 0
    assert "resuming recorded submission" in (tmp_path / "second.err").read_text()
    assert storage.read_parquet(extras["out"])["synthesized"].to_list() == [True] * 4
    assert lineage(tmp_path, "SELECT status, collected FROM batches").rows() == [("completed", True)]
    assert lineage(tmp_path, "SELECT count(*) FROM batch_requests WHERE status = 'ok'").item() == 4


def test_killed_before_the_batch_id_was_recorded_the_resumed_run_finds_the_batch(tmp_path, fake):
    fake.hold_create = threading.Event()  # the fake creates the batch and keeps its id from the workload
    env = batch_env(tmp_path, fake)
    extras = synthesis_extras(tmp_path, write_documents(tmp_path, count=2))
    first = start_workload(tmp_path, extras, env, "first")
    assert fake.created.wait(timeout=300), (tmp_path / "first.err").read_text()[-3000:]
    kill(first)
    fake.hold_create.set()
    # lineage knows the uploaded file (recorded before the create) but no batch id
    assert lineage(tmp_path, "SELECT batch_id, status FROM batches").rows() == [(None, "uploaded")]

    summary = finish(start_workload(tmp_path, extras, env, "second"), tmp_path, "second")
    assert (fake.uploads, fake.creates) == (1, 1)  # found by its metadata, not uploaded or created again
    assert summary["batch"]["adopted"] == 1
    assert lineage(tmp_path, "SELECT batch_id, status FROM batches").rows() == [("batch_0001", "completed")]
    assert storage.read_parquet(extras["out"])["synthesized"].to_list() == [True] * 2


# --- the search's initial rollouts -----------------------------------------------------------------------


@pytest.mark.model  # the embedded scorer scores the thinkings
def test_initial_rollouts_go_out_as_one_batch_and_the_edits_stay_live(tmp_path, fake, env):
    from reer_assets.core.refinement import SearchConfig
    from reer_assets.core.schemas import QUERIES
    from reer_assets.lib.profiles import profile
    from reer_assets.workloads import refinement
    from tests.support.batch_docs import TEXTS
    from tests.support.fault_server import THINKING, _ok_body

    fake.answer = lambda url, body: _ok_body(url, body, "ok")  # a two-paragraph thinking, then <refine> edits
    queries = []
    for k, text in enumerate(TEXTS[:2]):
        row = QUERIES.empty_row()
        row.update(id=f"qry_{k}", document_id=f"doc_{k}", domain="essays", language="en", query="Describe the scene.",
                   reference=text, synthesized=False, status="accepted", reject_reasons=[])
        queries.append(row)
    storage.write_parquet(QUERIES.frame(queries), tmp_path / "queries.parquet")
    search = {**profile("test")["search"], "max_step": 1}
    extras = {"queries": str(tmp_path / "queries.parquet"), "work": str(tmp_path / "work"), "config_hash": "cfg",
              "outputs": {name: str(tmp_path / "out" / f"{name}.parquet")
                          for name in ("trajectories", "search_steps", "candidates")},
              "config": {"search": SearchConfig(**search).to_dict(), "seed": 0},
              "generator_id": "openai:served-default", "scorer_id": "embedded-scorer"}
    logs: list[str] = []
    summary = refinement.run(extras, logs.append)

    # one batch with both initial rollouts, pre-filled with <think> and the opener
    assert (fake.uploads, fake.creates) == (1, 1)
    lines = fake.input_lines("batch_0001")
    assert len(lines) == 2
    assert all(line["body"]["continue_final_message"] and line["body"]["messages"][-1]["content"].startswith("<think>")
               for line in lines)
    # the live calls are the edit steps only (one per item: max_step 1)
    assert len(fake.live) == 2 and all("<analyze>" in body["messages"][-1]["content"] for body in fake.live)
    assert summary["batch"]["answered"] == 2 and summary["generator_calls"] == 2

    rows = storage.read_parquet(extras["outputs"]["trajectories"])
    assert rows["status"].to_list() == ["ok", "ok"]
    assert all(THINKING.split("\n\n")[1].split("\n")[0] in thinking for thinking in rows["initial_thinking"])
    # the batch's usage counts as the live call's would: 50 + 50 prompt tokens, 150 + 150 completion tokens
    assert rows["prompt_tokens"].to_list() == [100, 100] and rows["completion_tokens"].to_list() == [300, 300]
    assert rows["generator_calls"].to_list() == [2, 2]
    assert lineage(tmp_path, "SELECT scope, status FROM batches").rows() == [("initial_rollouts", "completed")]

    refinement.run(extras, logs.append)  # a rerun: every item checkpointed, no batch, no live call
    assert fake.creates == 1 and len(fake.live) == 2
