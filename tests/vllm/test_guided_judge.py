"""A guided judge always finishes: the embedded generator as judge, through a real vLLM server, default settings.

The embedded generator is a tiny toy model: given ``{"reason":"`` it never closes the string by itself. With
an unbounded reason it wrote until ``max_tokens`` and every criterion ended ``judge_failed: malformed_output
(cut at max_tokens)``. Now every reason has a ``maxLength`` that the regex form enforces, and the request's
``max_tokens`` covers the longest document the regex admits, so each verdict is complete on the first try.
The scores mean nothing (the model knows nothing about grading); what is tested is that every criterion gets
one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.model, pytest.mark.vllm]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "benchmarks"


def _writingbench_items() -> list[tuple[dict, str]]:
    """Every accepted WritingBench fixture item that has a response (three items, seven criteria)."""
    from reer_assets.core.evaluation.benchmarks import load_benchmark, load_responses

    responses, _ = load_responses(FIXTURES / "writingbench_responses.jsonl", "index")
    return [(item, responses[item["id"]]) for item in load_benchmark("writingbench", FIXTURES / "writingbench.jsonl")
            if item["status"] == "accepted" and responses.get(item["id"])]


@pytest.mark.timeout(600)
def test_the_embedded_generator_as_guided_judge_scores_every_criterion(vllm_server):
    from reer_assets.backends.judge import load_judge
    from reer_assets.core.evaluation.judge import (
        REASON_MAX_CHARS,
        guided_max_tokens,
        rubric_tasks,
        schema_for,
    )

    items = _writingbench_items()
    tasks = [t for item, response in items
             for t in rubric_tasks(item["id"], item["prompt"], response, item["criteria"], benchmark="writingbench")]
    assert len(items) >= 3 and len(tasks) == sum(len(item["criteria"]) for item, _ in items) >= 6
    # the settings that failed on main: auto structured output, no reason cap given, default sampling
    judge = load_judge({"REER_JUDGE_BACKEND": "openai", "REER_JUDGE_BASE_URL": vllm_server.base_url,
                        "REER_JUDGE_MAX_IN_FLIGHT": "2"})
    judged = judge.judge(tasks)
    assert judge.backend.structured == "vllm_regex"
    assert [(j.item_id, j.subject) for j in judged] == [(t.item_id, t.criteria[0].name) for t in tasks]
    bound = guided_max_tokens(schema_for(tasks[0]))
    for j in judged:
        assert j.status == "ok", (j.subject, j.failure, j.attempt_errors, j.raw_output[-200:])
        assert j.attempts == 1 and j.attempt_errors == []  # guided: complete on the first try
        [score] = j.scores
        assert isinstance(score["score"], int) and not isinstance(score["score"], bool) and 1 <= score["score"] <= 10
        assert isinstance(score["reason"], str) and score["reason"].strip()
        assert len(score["reason"]) <= REASON_MAX_CHARS["rubric"]
        assert 0 < j.completion_tokens <= bound
    assert judge.calls == len(tasks)


@pytest.mark.timeout(600)
def test_without_the_bound_this_judge_writes_past_the_whole_bounded_verdict(vllm_server):
    """The control: the same request with an unbounded reason is cut even at the bounded verdict's budget,
    so the test above passes because of the bound, not because the model stops by itself."""
    import openai

    from reer_assets.core.evaluation.judge import (
        compact_regex,
        guided_max_tokens,
        messages_for,
        rubric_tasks,
        schema_for,
    )

    item, response = _writingbench_items()[0]
    task = rubric_tasks(item["id"], item["prompt"], response, item["criteria"])[0]
    unbounded = json.loads(json.dumps(schema_for(task)))
    del unbounded["properties"]["reason"]["maxLength"]
    client = openai.OpenAI(base_url=vllm_server.base_url, api_key="unused", max_retries=0, timeout=300)
    reply = client.chat.completions.create(
        model=vllm_server.model, messages=messages_for(task), temperature=0.0, seed=0,
        max_tokens=guided_max_tokens(schema_for(task)),
        extra_body={"structured_outputs": {"regex": compact_regex(unbounded)}})
    choice = reply.choices[0]
    assert choice.finish_reason == "length" and choice.message.content.startswith('{"reason":"')


@pytest.mark.timeout(120)
def test_the_bound_covers_the_longest_verdict_in_the_embedded_tokenizer(embedded_path):
    """The worst case the regex admits (every reason at its bound, in 4-byte characters), tokenized by a real
    byte-level tokenizer: it and the end token fit in guided_max_tokens."""
    from transformers import AutoTokenizer

    from reer_assets.core.evaluation.judge import (
        checklist_task,
        guided_max_tokens,
        pairwise_tasks,
        quality_task,
        rubric_tasks,
        schema_for,
    )

    tokenizer = AutoTokenizer.from_pretrained(embedded_path)
    tasks = [rubric_tasks("i", "p", "r", [{"name": "A", "description": "d"}])[0], quality_task("i", "p", "r"),
             checklist_task("i", "p", "r", ["a?", "b?"]), pairwise_tasks("i", "p", "a", "b")[0]]
    for task in tasks:
        schema = schema_for(task)
        for char in ("\U0001d11e", "情", "x"):
            document = _fill(schema, char)
            assert len(tokenizer.encode(document, add_special_tokens=False)) + 1 <= guided_max_tokens(schema)


def _fill(schema: dict, char: str) -> str:
    if "enum" in schema:
        return json.dumps(schema["enum"][-1], ensure_ascii=False)
    if schema.get("type") == "string":
        return json.dumps(char * schema["maxLength"], ensure_ascii=False)
    if schema.get("type") == "integer":
        return str(schema["maximum"])
    return "{" + ",".join(f"{json.dumps(k)}:{_fill(v, char)}" for k, v in schema["properties"].items()) + "}"


@pytest.mark.timeout(600)
def test_an_in_process_guided_judge_refuses_a_prompt_that_leaves_no_room_for_the_verdict(vllm_engine):
    from reer_assets.backends.judge import VLLMJudgeBackend
    from reer_assets.backends.scored_span import encode, render
    from reer_assets.core.evaluation.judge import Judge, guided_max_tokens, messages_for, rubric_tasks, schema_for

    judge = Judge(VLLMJudgeBackend(vllm_engine, "vllm:reer-embedded"))
    item, response = _writingbench_items()[0]
    criteria = item["criteria"][:1]
    [fits] = judge.judge(rubric_tasks(item["id"], item["prompt"], response, criteria))
    assert fits.status == "ok" and fits.attempts == 1, (fits.failure, fits.raw_output[-200:])

    def prompt_tokens(text: str) -> int:
        task = rubric_tasks("long", item["prompt"], text, criteria)[0]
        return len(encode(vllm_engine.tokenizer, render(vllm_engine.tokenizer, messages_for(task))))

    sentence, bound = "The harbour wakes slowly under a grey sky. ", guided_max_tokens(schema_for(rubric_tasks(
        "long", item["prompt"], response, criteria)[0]))
    per_sentence = (prompt_tokens(sentence * 101) - prompt_tokens(sentence)) / 100
    long_response = sentence * int((vllm_engine.max_model_len - bound // 2 - prompt_tokens(sentence)) / per_sentence)
    room = vllm_engine.max_model_len - prompt_tokens(long_response)
    assert 0 < room < bound  # the prompt fits the context, the whole bounded verdict would not
    [refused] = judge.judge(rubric_tasks("long", item["prompt"], long_response, criteria))
    assert refused.status == "judge_failed" and refused.failure == "call_failed:prompt_too_long"
    assert refused.attempts == 1 and refused.scores == []  # refused at once, not cut three times
