"""Batch mode on the local model: vLLM's ``run-batch`` for real, on the embedded generator (backends/batch.py).

Two run-batch invocations in all (each starts an engine, about a minute on two cores): the synthesis
workload with ``REER_GENERATOR_BATCH=1`` (backend embedded), and a round of judgments with
``REER_JUDGE_BACKEND=vllm`` and ``REER_JUDGE_BATCH=1``. The embedded model writes nonsense requests and
verdicts; what is tested is the mechanics: one input file of ``{custom_id, method, url, body}`` lines, one
subprocess, every result mapped back by ``custom_id`` with the engine's token counts, the regex constraint
honoured (every verdict parses on its first attempt), and the submission and each request's outcome in
lineage. A rerun finds everything done (checkpoints, the judge's cache) and starts no engine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reer_assets.lib import duckdb_store, storage
from tests.support.batch_docs import synthesis_extras, write_documents

pytestmark = [pytest.mark.model, pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture
def lineage_db(tmp_path, monkeypatch):
    monkeypatch.setenv("REER_LINEAGE_DB", str(tmp_path / "lineage.duckdb"))
    monkeypatch.delenv("REER_LINEAGE_MODE", raising=False)
    for name in ("BACKEND", "BASE_URL", "MODEL"):
        monkeypatch.delenv(f"REER_GENERATOR_{name}", raising=False)
        monkeypatch.delenv(f"REER_JUDGE_{name}", raising=False)
    return tmp_path / "lineage.duckdb"


def query(db: Path, sql: str):
    return duckdb_store.query(sql, path=db)


def input_lines(folder: Path) -> list[dict]:
    [path] = folder.glob("*.input.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_synthesis_through_run_batch(embedded_path, tmp_path, lineage_db, monkeypatch):
    from transformers import AutoTokenizer

    from reer_assets.backends.embedded import build_key
    from reer_assets.backends.scored_span import encode, render
    from reer_assets.core.synthesis import parse_synthesized
    from reer_assets.workloads import synthesis

    monkeypatch.setenv("REER_GENERATOR_BATCH", "1")
    extras = synthesis_extras(tmp_path, write_documents(tmp_path, given=1), max_tokens=48)
    logs: list[str] = []
    summary = synthesis.run(extras, logs.append)

    folder = Path(extras["work"]) / "batches"
    lines = input_lines(folder)
    assert len(lines) == 3 and {line["url"] for line in lines} == {"/v1/chat/completions"}
    assert summary["batch"]["submitted"] == 1 and summary["batch"]["results"] == {"ok": 3}
    rows = storage.read_parquet(extras["out"]).sort("document_id")
    made = rows.filter(rows["synthesized"])
    assert made.height == 3
    assert made["model"].to_list() == [f"vllm:reer-embedded:{build_key()}"] * 3  # the engine that wrote them
    assert made["query"].to_list() == [parse_synthesized(raw) for raw in made["raw_output"]]
    # the engine's prompt counts are the chat template's tokens of each request
    tokenizer = AutoTokenizer.from_pretrained(embedded_path)
    by_id = {line["custom_id"]: line for line in lines}
    outcomes = query(lineage_db, "SELECT custom_id, status, prompt_tokens, completion_tokens FROM batch_requests")
    assert outcomes["status"].to_list() == ["ok"] * 3
    for custom_id, _, prompt_tokens, completion_tokens in outcomes.rows():
        messages = by_id[custom_id]["body"]["messages"]
        assert prompt_tokens == len(encode(tokenizer, render(tokenizer, messages)))
        assert 1 <= completion_tokens <= 48  # what it writes is up to the model, within max_tokens
    assert sorted(made["prompt_tokens"].to_list()) == sorted(outcomes["prompt_tokens"].to_list())
    assert sorted(made["completion_tokens"].to_list()) == sorted(outcomes["completion_tokens"].to_list())
    batch = query(lineage_db, "SELECT * FROM batches").row(0, named=True)
    assert (batch["transport"], batch["status"], batch["target"], batch["collected"]) == (
        "vllm-run-batch", "completed", str(embedded_path), True)
    assert sorted(batch["custom_ids"]) == sorted(by_id)

    synthesis.run(extras, logs.append)  # a rerun: every document checkpointed, no engine
    assert query(lineage_db, "SELECT count(*) FROM batches").item() == 1
    assert len(list(folder.glob("*.input.jsonl"))) == 1


def test_judging_through_run_batch(embedded_path, tmp_path, lineage_db, monkeypatch):
    from reer_assets.backends.embedded import build_key
    from reer_assets.backends.judge import load_judge
    from reer_assets.core.evaluation.judge import JudgeSampling, pairwise_tasks, quality_task

    monkeypatch.setenv("REER_JUDGE_BACKEND", "vllm")
    monkeypatch.setenv("REER_JUDGE_BATCH", "1")
    options = dict(cache=tmp_path / "judge.jsonl", batch_dir=tmp_path / "batches", reason_max_chars=24,
                   sampling=JudgeSampling(max_tokens=64, seed=3), max_attempts=1)  # one round: one engine start
    judge = load_judge(**options)
    tasks = [quality_task("q1", "Explain in about 100 words why bread goes stale.",
                          "<think>starch</think>Bread stales because its starch recrystallises."),
             *pairwise_tasks("p1", "Write one line about the sea.", "The sea is grey today.", "Waves, waves.")]
    judged = judge.judge(tasks)

    assert judge.backend.structured == "vllm_regex"
    for j in judged:
        assert j.status == "ok", (j.failure, j.raw_output)
        assert j.attempts == 1 and j.judge_model == f"vllm:reer-embedded:{build_key()}"
    assert [s["criterion"] for s in judged[0].scores][:1] == ["relevance"] and len(judged[0].scores) == 6
    assert all(1 <= s["score"] <= 5 for s in judged[0].scores)
    assert {judged[1].verdict, judged[2].verdict} <= {"A", "B", "tie"}
    lines = input_lines(tmp_path / "batches")
    assert len(lines) == 3 and all("regex" in line["body"]["structured_outputs"] for line in lines)
    outcomes = query(lineage_db, "SELECT custom_id, status, prompt_tokens, completion_tokens FROM batch_requests")
    assert outcomes["status"].to_list() == ["ok"] * 3
    assert sorted(outcomes["prompt_tokens"].to_list()) == sorted(j.prompt_tokens for j in judged)
    assert sorted(outcomes["completion_tokens"].to_list()) == sorted(j.completion_tokens for j in judged)

    again = load_judge(**options)  # the cache answers; no submission, no engine
    assert [j.scores for j in again.judge(tasks)] == [j.scores for j in judged]
    assert again.calls == 0 and query(lineage_db, "SELECT count(*) FROM batches").item() == 1
