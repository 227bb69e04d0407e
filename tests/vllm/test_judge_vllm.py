"""The judge against a real `vllm serve` (the session's ``vllm_server`` fixture: the embedded model).

The embedded model knows nothing about grading, so the numbers mean nothing; what is tested is the
mechanics: the server honours the structured-output request, so every criterion of a rubric item gets an
integer 1-10 and a reason, and quality mode gives six 1-5 scores, parsed on the first attempt, with
token counts from the server and the cache answering a re-run. Small ``max_tokens`` and capped reasons
keep each call well under a second on two cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.model, pytest.mark.vllm]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "benchmarks"


def _env(server) -> dict:
    return {"REER_JUDGE_BACKEND": "openai", "REER_JUDGE_BASE_URL": server.base_url, "REER_JUDGE_MAX_IN_FLIGHT": "2"}


def _writingbench_item(index: str):
    from reer_assets.core.evaluation.benchmarks import load_benchmark, load_responses

    items = {r["id"]: r for r in load_benchmark("writingbench", FIXTURES / "writingbench.jsonl") if r["status"] == "accepted"}
    responses, _ = load_responses(FIXTURES / "writingbench_responses.jsonl", "index")
    return items[index], responses[index]


@pytest.mark.parametrize("index", ["2", "3"])  # an English and a Chinese item
def test_every_rubric_criterion_gets_an_integer_and_a_reason(vllm_server, tmp_path, index):
    from reer_assets.backends.judge import load_judge
    from reer_assets.core.evaluation.judge import JudgeSampling, rubric_tasks, score_rows, token_totals

    item, response = _writingbench_item(index)
    cache = tmp_path / "judge.jsonl"
    judge = load_judge(_env(vllm_server), cache=cache, reason_max_chars=40,
                       sampling=JudgeSampling(max_tokens=96, seed=3))
    tasks = rubric_tasks(item["id"], item["prompt"], response, item["criteria"], benchmark="writingbench")
    judged = judge.judge(tasks)
    assert judge.backend.structured == "vllm_regex"  # auto: the server says it is vLLM
    assert judge.judge_model == f"openai:{vllm_server.model}"
    assert [j.subject for j in judged] == [c["name"] for c in item["criteria"]]
    for j in judged:
        assert j.status == "ok", (j.failure, j.raw_output)
        [score] = j.scores
        assert isinstance(score["score"], int) and 1 <= score["score"] <= 10 and score["reason"].strip()
        assert j.attempts == 1 and j.prompt_tokens > 0 and j.completion_tokens > 0  # > 0: the exact count depends on what the model writes
        assert "<think>" not in j.judged_text and "</answer>" not in j.judged_text
    assert len(score_rows(judged)) == len(item["criteria"])
    assert token_totals(judged)["writingbench"]["prompt_tokens"] == sum(j.prompt_tokens for j in judged)

    again = load_judge(_env(vllm_server), cache=cache, reason_max_chars=40, sampling=JudgeSampling(max_tokens=96, seed=3))
    assert [j.scores for j in again.judge(tasks)] == [j.scores for j in judged] and again.calls == 0


def test_quality_mode_gives_six_scores_from_1_to_5(vllm_server):
    from reer_assets.backends.judge import load_judge
    from reer_assets.core.evaluation.benchmarks import quality_score
    from reer_assets.core.evaluation.judge import QUALITY_DIMENSIONS, JudgeSampling, quality_task

    judge = load_judge(_env(vllm_server), reason_max_chars=24, sampling=JudgeSampling(max_tokens=320))
    judgment = judge.judge_one(quality_task("lbw-0003", "Explain in about 150 words why bread goes stale.",
                                            "<think>\nstarch, then water\n</think>\nBread stales because its starch "
                                            "slowly recrystallises and pushes water out, even inside a bag."))
    assert judgment.status == "ok", (judgment.failure, judgment.raw_output)
    assert [s["criterion"] for s in judgment.scores] == list(QUALITY_DIMENSIONS)
    assert all(isinstance(s["score"], int) and 1 <= s["score"] <= 5 and s["reason"] for s in judgment.scores)
    assert 20 <= quality_score({s["criterion"]: s["score"] for s in judgment.scores}) <= 100


def test_the_server_enforces_the_json_schema_response_format(vllm_server):
    """OpenAI's ``response_format`` json_schema is accepted by vLLM 0.32 and constrains the output. With the
    server's default JSON grammar (any whitespace allowed) this tiny model then fills the object with blank
    lines, which is why ``auto`` sends the whitespace-free regex form to a vLLM server."""
    import openai

    from reer_assets.core.evaluation.judge import rubric_tasks, schema_for

    client = openai.OpenAI(base_url=vllm_server.base_url, api_key="unused", max_retries=0, timeout=60)
    task = rubric_tasks("probe", "Write a line about rain.", "Rain on the roof.",
                        [{"name": "Imagery", "description": "Concrete images?"}])[0]
    messages = [{"role": "user", "content": "Grade this line about rain with a score and a reason: Rain on the roof."}]
    response = client.chat.completions.create(
        model=vllm_server.model, messages=messages, max_tokens=24, temperature=0.0, seed=0,
        response_format={"type": "json_schema",
                         "json_schema": {"name": "probe", "schema": schema_for(task, 20), "strict": True}})
    text = response.choices[0].message.content or ""
    assert text.startswith("{"), text  # constrained (unconstrained, this model writes words)
    assert not text[1:].strip() or text[1:].lstrip().startswith('"reason"'), text  # only the schema's first key


def test_an_in_process_vllm_judge_makes_the_same_records(vllm_engine):
    from reer_assets.backends.judge import VLLMJudgeBackend
    from reer_assets.core.evaluation.judge import Judge, JudgeSampling, checklist_task

    judge = Judge(VLLMJudgeBackend(vllm_engine, "vllm:reer-embedded"), reason_max_chars=32,
                  sampling=JudgeSampling(max_tokens=128))
    judgment = judge.judge_one(checklist_task("hb-1", "Why do cats land on their feet?", "They twist in the air.",
                                              ["Does it explain the twist?", "Is it accurate?"]))
    assert judgment.status == "ok", (judgment.failure, judgment.raw_output)
    assert [s["criterion"] for s in judgment.scores] == ["1", "2"]
    assert all(s["score"] in (0.0, 0.25, 0.5, 0.75, 1.0) and s["reason"] for s in judgment.scores)
    assert judgment.judge_model == "vllm:reer-embedded" and judgment.prompt_tokens > 0  # > 0: the exact count depends on what the model writes
