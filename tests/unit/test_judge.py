"""The LLM judge: stripping, parsing, schemas, cache keys, attempts, pairwise combination, and the
openai judge backend against the fault server (a real HTTP server on 127.0.0.1).

No model is loaded: the fault server answers judge requests from the request's own JSON schema
(``judge``), with prose and no JSON (``judge_malformed``) or with scores out of range.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from reer_assets.backends.judge import JudgeNotConfigured, judge_spec, load_judge
from reer_assets.core.call_cache import CallCache
from reer_assets.core.evaluation.judge import (
    PROMPT_VERSION,
    QUALITY_DIMENSIONS,
    REASON_MAX_CHARS,
    Criterion,
    Judge,
    JudgeOutputError,
    JudgeReply,
    JudgeSampling,
    JudgeTask,
    Judgment,
    checklist_task,
    combine_pair,
    compact_regex,
    extract_json_object,
    guided_max_tokens,
    messages_for,
    pairwise_tasks,
    parse_output,
    quality_task,
    rubric_tasks,
    schema_for,
    score_rows,
    strip_thinking,
    token_totals,
    win_rate,
)
from tests.support.fault_server import JUDGE_REASON, FaultServer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "benchmarks"
CRITERION = Criterion("Imagery", "How concrete and sensory the images are.",
                      (("1-2", "no images"), ("3-4", "a few stock images"), ("5-6", "some fresh images"),
                       ("7-8", "mostly concrete images"), ("9-10", "vivid and precise throughout")))
PROMPT = "Write four lines about a harbour at dawn."
RESPONSE = "<think>\nI will start with the gulls, then the ropes.\n</think>\n<answer>\nGulls stitch the grey.\nRopes creak awake.\n</answer>"


def _rubric(item_id: str = "item-1", response: str = RESPONSE, prompt: str = PROMPT) -> JudgeTask:
    return rubric_tasks(item_id, prompt, response, [CRITERION])[0]


# --------------------------------------------------------------------------------------------------
# stripping and prompts


@pytest.mark.parametrize("raw,judged", [
    (RESPONSE, "Gulls stitch the grey.\nRopes creak awake."),
    ("<think>\nplan\n</think>\nNo answer tags here.", "No answer tags here."),
    ("Plain text, no format at all.  ", "Plain text, no format at all."),
    ("<think>\na plan that never closes", ""),
    ("<think>\none\n</think>\n<think>\ntwo\n</think>\n<answer>\nLast.\n</answer>", "Last."),
    ("<answer>\nOnly answer tags\n</answer>", "Only answer tags"),
])
def test_strip_thinking(raw, judged):
    assert strip_thinking(raw) == judged


def test_the_judge_sees_the_answer_not_the_thinking():
    task = _rubric()
    assert task.texts == ("Gulls stitch the grey.\nRopes creak awake.",)
    text = "\n".join(m["content"] for m in messages_for(task))
    assert "gulls, then the ropes" not in text and "<think>" not in text and "<answer>" not in text
    assert PROMPT in text and "Gulls stitch the grey." in text and "9-10: vivid and precise throughout" in text
    quality = "\n".join(m["content"] for m in messages_for(quality_task("i", PROMPT, RESPONSE)))
    assert "Length is not part of quality" in quality and all(d in quality for d in QUALITY_DIMENSIONS)
    assert "(the response is empty)" in messages_for(quality_task("i", PROMPT, "<think>\nonly thinking"))[1]["content"]


def test_task_shapes_are_checked():
    with pytest.raises(ValueError, match="unknown judge mode"):
        JudgeTask("vibes", "i", PROMPT, ("x",))
    with pytest.raises(ValueError, match="exactly one criterion"):
        JudgeTask("rubric", "i", PROMPT, ("x",), (CRITERION, CRITERION))
    assert [t.order for t in pairwise_tasks("i", PROMPT, "first text", "second text")] == ["AB", "BA"]
    ab, ba = pairwise_tasks("i", PROMPT, "first text", "second text")
    assert ab.texts == ("first text", "second text") and ba.texts == ("second text", "first text")


def test_writingbench_criterion_dicts_are_read():
    c = Criterion.from_dict({"name": "Tone", "criteria_description": "Is it polite?", "1-2": "rude", "3-4": "curt",
                             "5-6": "neutral", "7-8": "polite", "9-10": "warm"})
    assert c.description == "Is it polite?" and dict(c.bands)["9-10"] == "warm"
    assert Criterion.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="name"):
        Criterion.from_dict({"criteria_description": "x"})


# --------------------------------------------------------------------------------------------------
# parsing


@pytest.mark.parametrize("text", [
    '{"reason": "fine", "score": 7}',
    'Sure. Here it is:\n```json\n{"reason": "fine", "score": 7}\n```\nAnything else?',
    'My verdict {"reason": "fine", "score": 7} as requested.',
    '<think>\nthe judge deliberates {not json}\n</think>\n{"reason": "fine", "score": 7}',
])
def test_a_json_object_is_found_clean_or_embedded(text):
    assert extract_json_object(text) == {"reason": "fine", "score": 7}


@pytest.mark.parametrize("text,code", [("", "empty_output"), ("   \n", "empty_output"),
                                       ("a seven out of ten", "no_json_object"), ('{"reason": "cut', "no_json_object")])
def test_no_json_object_is_an_error_with_a_code(text, code):
    with pytest.raises(JudgeOutputError) as info:
        extract_json_object(text)
    assert info.value.code == code


@pytest.mark.parametrize("score,expected", [(7, 7), ("7", 7), (7.0, 7), (1, 1), (10, 10)])
def test_rubric_scores_are_integers_1_to_10(score, expected):
    parsed = parse_output(_rubric(), json.dumps({"reason": "concrete gulls", "score": score}))
    assert parsed.scores == [{"criterion": "Imagery", "score": expected, "reason": "concrete gulls"}]


@pytest.mark.parametrize("answer,code", [
    ({"reason": "x", "score": 7.5}, "bad_score"), ({"reason": "x", "score": 11}, "score_out_of_range"),
    ({"reason": "x", "score": 0}, "score_out_of_range"), ({"reason": "x", "score": True}, "bad_score"),
    ({"reason": "x", "score": "seven"}, "bad_score"), ({"score": 7}, "missing_reason"),
    ({"reason": "  ", "score": 7}, "missing_reason"), ({"reason": "x"}, "missing_score"),
])
def test_bad_rubric_answers_have_reasons(answer, code):
    with pytest.raises(JudgeOutputError) as info:
        parse_output(_rubric(), json.dumps(answer))
    assert info.value.code == code


def test_quality_needs_all_six_dimensions_1_to_5_and_accepts_longwriter_key_spelling():
    task = quality_task("i", PROMPT, RESPONSE)
    answer = {"Relevance": {"reason": "on topic", "score": 4}, "Accuracy": {"reason": "no errors", "score": 5},
              "Coherence": {"reason": "ordered", "score": 4}, "Clarity": {"reason": "plain", "score": "3"},
              "Breadth and Depth": {"reason": "thin", "score": 2}, "Reading Experience": {"reason": "ok", "score": 3}}
    parsed = parse_output(task, json.dumps(answer))
    assert [(s["criterion"], s["score"]) for s in parsed.scores] == list(zip(QUALITY_DIMENSIONS, [4, 5, 4, 3, 2, 3]))
    for broken, code in [({k: v for k, v in answer.items() if k != "Clarity"}, "missing_dimension"),
                         ({**answer, "Clarity": {"reason": "x", "score": 6}}, "score_out_of_range"),
                         ({**answer, "Clarity": 3}, "not_an_object:clarity")]:
        with pytest.raises(JudgeOutputError) as info:
            parse_output(task, json.dumps(broken))
        assert info.value.code == code


def test_checklist_scores_take_the_five_helloBench_values():
    task = checklist_task("i", PROMPT, RESPONSE, ["Is it about a harbour?", "Is it four lines?"])
    parsed = parse_output(task, '{"1": {"reason": "yes", "score": 1}, "2": {"reason": "two lines", "score": "0.25"}}')
    assert [(s["criterion"], s["score"]) for s in parsed.scores] == [("1", 1.0), ("2", 0.25)]
    for text, code in [('{"1": {"reason": "yes", "score": 0.3}, "2": {"reason": "x", "score": 0}}', "bad_score"),
                       ('{"1": {"reason": "yes", "score": 1}}', "missing_checklist_item")]:
        with pytest.raises(JudgeOutputError) as info:
            parse_output(task, text)
        assert info.value.code == code


@pytest.mark.parametrize("winner,verdict", [("A", "A"), ("b", "B"), ("Tie", "tie"), ("tie", "tie")])
def test_pairwise_verdicts(winner, verdict):
    ab, _ = pairwise_tasks("i", PROMPT, "one", "two")
    assert parse_output(ab, json.dumps({"reason": "clearer", "winner": winner})).verdict == verdict
    with pytest.raises(JudgeOutputError, match="bad_verdict"):
        parse_output(ab, json.dumps({"reason": "clearer", "winner": "both"}))


# --------------------------------------------------------------------------------------------------
# schemas


def _compact(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def test_the_compact_regex_matches_exactly_the_schema_shape():
    import re

    checklist = checklist_task("i", PROMPT, RESPONSE, ["a?", "b?", "c?"])
    cases = [
        (_rubric(), {"reason": "Concrete gulls.", "score": 10}, {"reason": "x", "score": 11}),
        (quality_task("i", PROMPT, RESPONSE), {d: {"reason": "fine", "score": 5} for d in QUALITY_DIMENSIONS},
         {d: {"reason": "fine", "score": 6} for d in QUALITY_DIMENSIONS}),
        (checklist, {str(i): {"reason": "ok", "score": s} for i, s in zip((1, 2, 3), (0.25, 1.0, 0.0))},
         {str(i): {"reason": "ok", "score": 0.3} for i in (1, 2, 3)}),
        (pairwise_tasks("i", PROMPT, "x", "y")[0], {"reason": "B reads better", "winner": "B"},
         {"reason": "x", "winner": "C"}),
    ]
    for task, good, bad in cases:
        schema = schema_for(task, reason_max_chars=40)
        assert schema["additionalProperties"] is False and schema["required"] == list(schema["properties"])
        pattern = re.compile(compact_regex(schema))
        assert pattern.fullmatch(_compact(good)), task.mode
        assert not pattern.fullmatch(json.dumps(good, indent=1)), "whitespace is not allowed"
        assert not pattern.fullmatch(_compact(bad)), task.mode
        parse_output(task, _compact(good))  # what the regex admits, the parser accepts
    assert not re.fullmatch(compact_regex(schema_for(_rubric(), 5)), _compact({"reason": "too long", "score": 3}))
    assert re.fullmatch(compact_regex(schema_for(_rubric(), 400)), _compact({"reason": "x" * 400, "score": 3}))
    assert not re.fullmatch(compact_regex(schema_for(_rubric(), 400)), _compact({"reason": "x" * 401, "score": 3}))
    # a bounded reason is plain characters: no escapes (a quote, backslash or line break), in any language
    assert not re.fullmatch(compact_regex(schema_for(_rubric())), _compact({"reason": 'a "quote"', "score": 3}))
    assert not re.fullmatch(compact_regex(schema_for(_rubric())), _compact({"reason": "two\nlines", "score": 3}))
    assert re.fullmatch(compact_regex(schema_for(_rubric())), _compact({"reason": "情节完整，细节生动。", "score": 3}))


def _strings(schema: dict) -> list[dict]:
    """The free-text fields (a pairwise winner is a string too, bounded by its enum)."""
    if schema.get("type") == "string" and "enum" not in schema:
        return [schema]
    return [s for sub in schema.get("properties", {}).values() for s in _strings(sub)]


ALL_MODES = [_rubric(), quality_task("i", PROMPT, RESPONSE), checklist_task("i", PROMPT, RESPONSE, ["a?", "b?", "c?"]),
             pairwise_tasks("i", PROMPT, "x", "y")[0]]


@pytest.mark.parametrize("task", ALL_MODES, ids=lambda t: t.mode)
def test_every_free_text_field_is_bounded_by_default_and_scores_have_their_range(task):
    schema = schema_for(task)
    strings = _strings(schema)
    assert strings and all(s["maxLength"] == REASON_MAX_CHARS[task.mode] and s["minLength"] == 1 for s in strings)
    assert all(s["maxLength"] == 25 for s in _strings(schema_for(task, 25)))
    if task.mode == "rubric":
        assert schema["properties"]["score"] == {"type": "integer", "minimum": 1, "maximum": 10}
    with pytest.raises(ValueError):
        schema_for(task, -1)


def _longest_document(schema: dict) -> str:
    """The longest text compact_regex admits: every reason its bound of 4-byte characters, the longest score."""
    if "enum" in schema:
        return max((json.dumps(v, ensure_ascii=False) for v in schema["enum"]), key=lambda t: len(t.encode()))
    if schema.get("type") == "string":
        return json.dumps("\U0001d11e" * schema["maxLength"], ensure_ascii=False)
    if schema["type"] == "integer":
        return max((str(schema["minimum"]), str(schema["maximum"])), key=len)
    return "{" + ",".join(f"{json.dumps(k)}:{_longest_document(v)}" for k, v in schema["properties"].items()) + "}"


@pytest.mark.parametrize("task", ALL_MODES, ids=lambda t: t.mode)
def test_guided_max_tokens_covers_the_longest_admitted_document(task):
    """Each generated token carries at least one byte, so the longest document's UTF-8 length plus the end
    token bounds the tokens; max_tokens from guided_max_tokens is never smaller."""
    import re

    for cap in (None, 7, 300):
        schema = schema_for(task, cap)
        longest = _longest_document(schema)
        assert re.fullmatch(compact_regex(schema), longest), "the worst case is a document the regex admits"
        assert len(longest.encode()) + 1 <= guided_max_tokens(schema) <= len(longest.encode()) + 1 + 32
        parse_output(task, longest)
    assert guided_max_tokens({"type": "object", "properties": {"reason": {"type": "string", "minLength": 1}},
                              "required": ["reason"], "additionalProperties": False}) is None  # unbounded: no bound


# --------------------------------------------------------------------------------------------------
# the judge with an in-process fake backend


class ScriptedBackend:
    """Answers judge calls from a list of outputs (the last repeats); raises objects that are exceptions."""

    model_id = "fake:judge-1"
    max_in_flight = 1

    def __init__(self, *outputs):
        self.outputs = list(outputs)
        self.seeds: list[int] = []

    def complete(self, messages, schema, name, sampling, seed):
        self.seeds.append(seed)
        out = self.outputs.pop(0) if len(self.outputs) > 1 else self.outputs[0]
        if isinstance(out, BaseException):
            raise out
        return JudgeReply(out, prompt_tokens=100, completion_tokens=20, finish_reason="stop")


class Classified(RuntimeError):
    error_class = "http_500"


GOOD = '{"reason": "The gulls and ropes are concrete.", "score": 8}'


def test_a_malformed_output_is_retried_and_the_third_attempt_counts():
    backend = ScriptedBackend("no json here", '{"reason": "x", "score": 42}', GOOD)
    judgment = Judge(backend, sampling=JudgeSampling(seed=5)).judge_one(_rubric())
    assert judgment.status == "ok" and judgment.attempts == 3 and backend.seeds == [5, 6, 7]
    assert judgment.scores == [{"criterion": "Imagery", "score": 8, "reason": "The gulls and ropes are concrete."}]
    assert judgment.attempt_errors == ["malformed_output:no_json_object", "malformed_output:score_out_of_range"]
    assert (judgment.prompt_tokens, judgment.completion_tokens) == (300, 60)  # all three attempts cost


def test_three_malformed_outputs_give_a_judge_failed_record_not_a_default_score():
    judge = Judge(ScriptedBackend("I would say about a seven."))
    judgment = judge.judge_one(_rubric())
    assert judgment.status == "judge_failed" and judgment.scores == [] and judge.calls == 3
    assert judgment.failure == "malformed_output:no_json_object" and len(judgment.attempt_errors) == 3
    assert judgment.raw_output == "I would say about a seven."
    [row] = score_rows([judgment])
    assert row["status"] == "judge_failed" and row["score"] is None and row["reason"] == judgment.failure


def test_a_call_that_failed_for_good_is_recorded_and_a_bug_is_not_swallowed():
    judgment = Judge(ScriptedBackend(Classified("server down"))).judge_one(_rubric())
    assert judgment.status == "judge_failed" and judgment.failure == "call_failed:http_500" and judgment.attempts == 1
    with pytest.raises(ZeroDivisionError):
        Judge(ScriptedBackend(ZeroDivisionError("a bug"))).judge_one(_rubric())


def test_every_score_records_model_prompt_version_sampling_date_and_judged_text():
    sampling = JudgeSampling(temperature=0.3, top_p=0.9, max_tokens=256, seed=11)
    judgment = Judge(ScriptedBackend(GOOD), sampling=sampling).judge_one(_rubric())
    assert judgment.judge_model == "fake:judge-1" and judgment.prompt_version == PROMPT_VERSION
    assert judgment.sampling == {"temperature": 0.3, "top_p": 0.9, "max_tokens": 256, "seed": 11}
    assert datetime.fromisoformat(judgment.judged_at).utcoffset().total_seconds() == 0
    assert judgment.judged_text == "Gulls stitch the grey.\nRopes creak awake."
    [row] = score_rows([judgment])
    assert row["judge_model"] == "fake:judge-1" and row["prompt_version"] == PROMPT_VERSION
    assert json.loads(row["sampling"])["seed"] == 11 and row["judged_text"] == judgment.judged_text


def test_the_cache_key_covers_model_version_sampling_item_prompt_text_and_criterion():
    judge = Judge(ScriptedBackend(GOOD))
    base = judge.key(_rubric())
    assert judge.key(_rubric()) == base
    assert judge.key(_rubric(response="<think>\nother thinking\n</think>\n<answer>\nGulls stitch the grey.\n"
                                      "Ropes creak awake.\n</answer>")) == base  # only the judged text counts
    other_backend = ScriptedBackend(GOOD)
    other_backend.model_id = "fake:judge-2"
    variants = [
        Judge(other_backend).key(_rubric()),
        Judge(ScriptedBackend(GOOD), prompt_version="reer-judge-v0").key(_rubric()),
        Judge(ScriptedBackend(GOOD), sampling=JudgeSampling(temperature=0.7)).key(_rubric()),
        Judge(ScriptedBackend(GOOD), sampling=JudgeSampling(seed=1)).key(_rubric()),
        Judge(ScriptedBackend(GOOD), reason_max_chars=40).key(_rubric()),  # another bound: another prompt and schema
        judge.key(_rubric(item_id="item-2")),
        judge.key(_rubric(prompt="Write four lines about a river.")),
        judge.key(_rubric(response="Gulls stitch the grey.")),
        judge.key(replace(_rubric(), criteria=(replace(CRITERION, description="How vivid?"),))),
        judge.key(quality_task("item-1", PROMPT, RESPONSE)),
        judge.key(pairwise_tasks("item-1", PROMPT, RESPONSE, "x")[0]),
        judge.key(pairwise_tasks("item-1", PROMPT, RESPONSE, "x")[1]),
    ]
    assert base not in variants and len(set(variants)) == len(variants)


def test_a_persistent_cache_answers_a_rerun_without_calls(tmp_path):
    path = tmp_path / "judge_cache.jsonl"
    first = Judge(ScriptedBackend(GOOD), cache=CallCache(path))
    tasks = [_rubric("a"), _rubric("b"), quality_task("a", PROMPT, RESPONSE)]
    assert first.judge(tasks[:2])[0].cached is False and first.calls == 2
    again = Judge(ScriptedBackend(RuntimeError("must not be called")), cache=CallCache(path))
    judged = again.judge(tasks[:2])
    assert again.calls == 0 and all(j.cached for j in judged) and judged[0].scores[0]["score"] == 8
    assert judged[0].judged_at and judged[0].prompt_tokens == 100  # the record of when and what it cost
    totals = token_totals(judged, by=None)["all"]
    assert totals["prompt_tokens"] == 200 and totals["fresh_prompt_tokens"] == 0 and totals["cached"] == 2


def test_failures_are_not_cached(tmp_path):
    path = tmp_path / "cache.jsonl"
    Judge(ScriptedBackend("no json"), cache=CallCache(path)).judge_one(_rubric())
    retry = Judge(ScriptedBackend(GOOD), cache=CallCache(path))
    assert retry.judge_one(_rubric()).status == "ok" and retry.calls == 1


def test_token_totals_sum_per_benchmark():
    judge = Judge(ScriptedBackend(GOOD))
    a = [replace(t, benchmark="writingbench") for t in rubric_tasks("x", PROMPT, RESPONSE, [CRITERION, replace(CRITERION, name="Rhythm")])]
    judged = judge.judge(a + [replace(_rubric("y"), benchmark="hellobench")])
    totals = token_totals(judged)
    assert totals["writingbench"]["judgments"] == 2 and totals["writingbench"]["prompt_tokens"] == 200
    assert totals["hellobench"]["completion_tokens"] == 20 and totals["hellobench"]["ok"] == 1


# --------------------------------------------------------------------------------------------------
# pairwise combination


def _verdict(order: str, verdict: str | None, item: str = "p1", status: str = "ok") -> Judgment:
    return Judgment(item, "pairwise", f"pairwise:{order}", status, [], verdict, None if status == "ok" else "x", [],
                    ["", ""], order, "", "m", PROMPT_VERSION, {}, "", 1, 0, 0, "k")


@pytest.mark.parametrize("ab,ba,winner,consistent", [
    ("A", "B", "a", True),     # a shown first wins, and a shown second wins
    ("B", "A", "b", True),
    ("A", "A", "tie", False),  # always the first: the swap turns it into a tie
    ("B", "B", "tie", False),  # always the second
    ("tie", "tie", "tie", True),
    ("A", "tie", "tie", False),
])
def test_pairs_are_combined_over_both_orders(ab, ba, winner, consistent):
    pair = combine_pair(_verdict("AB", ab), _verdict("BA", ba))
    assert (pair.status, pair.winner, pair.consistent) == ("ok", winner, consistent)


def test_a_failed_order_fails_the_pair_and_win_rate_counts_it():
    failed = combine_pair(_verdict("AB", None, status="judge_failed"), _verdict("BA", "A"))
    assert failed.status == "judge_failed" and failed.winner is None and "AB" in failed.failure
    pairs = [combine_pair(_verdict("AB", "A", f"p{i}"), _verdict("BA", "B", f"p{i}")) for i in range(6)]
    pairs += [combine_pair(_verdict("AB", "B", "q"), _verdict("BA", "A", "q")),
              combine_pair(_verdict("AB", "A", "r"), _verdict("BA", "A", "r")), failed]
    rate = win_rate(pairs, resamples=500)
    assert rate["wins_a"] == 6 and rate["wins_b"] == 1 and rate["ties"] == 1 and rate["failed"] == 1
    assert rate["win_rate_a"] == pytest.approx(6.5 / 8) and rate["items"] == 8
    assert rate["ci_low"] <= rate["win_rate_a"] <= rate["ci_high"] and rate["inconsistent"] == 1


# --------------------------------------------------------------------------------------------------
# against the fault server, over HTTP


@pytest.fixture
def server():
    srv = FaultServer().start()
    yield srv
    srv.stop()


def _env(server, **extra) -> dict:
    return {"REER_JUDGE_BACKEND": "openai", "REER_JUDGE_BASE_URL": server.base_url, "REER_JUDGE_MAX_ATTEMPTS": "1",
            **extra}


def _chat(server) -> list:
    return [r for r in server.requests if r.path.endswith("/chat/completions")]


def test_structured_output_is_requested_as_json_schema_and_scores_come_back(server):
    server.on("", "judge")
    judge = load_judge(_env(server))
    judged = judge.judge(rubric_tasks("wb-1", PROMPT, RESPONSE, [CRITERION, replace(CRITERION, name="Rhythm")]))
    assert [(j.status, j.scores[0]["criterion"], j.scores[0]["score"]) for j in judged] == [
        ("ok", "Imagery", 5), ("ok", "Rhythm", 5)]
    assert judged[0].scores[0]["reason"] == JUDGE_REASON and judge.judge_model == "openai:fake-model"
    body = json.loads(_chat(server)[0].body)
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "reer_judge_rubric"
    assert fmt["json_schema"]["strict"] is True and fmt["json_schema"]["schema"]["required"] == ["reason", "score"]
    assert "minLength" not in json.dumps(fmt)  # OpenAI's strict mode refuses string-length keywords
    assert body["temperature"] == 0.0 and body["seed"] == 0 and "gulls, then the ropes" not in _chat(server)[0].body
    assert judged[0].prompt_tokens == 50 and judged[0].completion_tokens == 150  # from the server's usage


def test_malformed_output_three_times_gives_judge_failed_rows_with_a_reason(server):
    server.on("BROKEN", "judge_malformed")
    server.on("", "judge")
    judge = load_judge(_env(server))
    tasks = rubric_tasks("wb-2", "BROKEN request: " + PROMPT, RESPONSE, [CRITERION, replace(CRITERION, name="Rhythm")])
    judged = judge.judge(tasks + [quality_task("lbw-1", PROMPT, RESPONSE)])
    assert [j.status for j in judged] == ["judge_failed", "judge_failed", "ok"]
    assert len(_chat(server)) == 3 + 3 + 1 and judge.calls == 7
    rows = score_rows(judged)
    failed = [r for r in rows if r["status"] == "judge_failed"]
    assert [(r["criterion"], r["score"], r["reason"]) for r in failed] == [
        ("Imagery", None, "malformed_output:no_json_object"), ("Rhythm", None, "malformed_output:no_json_object")]
    assert len(rows) == 2 + 6  # two failure rows and the six quality scores, none dropped
    assert {r["score"] for r in rows if r["mode"] == "quality"} == {3}


def test_scores_out_of_range_are_retried_then_recorded_as_failed(server):
    server.on("ALWAYS_OFF_SCALE", "judge_out_of_range")
    server.on("", "judge_out_of_range", "judge_out_of_range", "judge")
    judgment = load_judge(_env(server)).judge_one(_rubric())
    assert judgment.status == "ok" and judgment.attempts == 3
    assert judgment.attempt_errors == ["malformed_output:score_out_of_range"] * 2
    failed = load_judge(_env(server)).judge_one(_rubric("other", prompt="ALWAYS_OFF_SCALE " + PROMPT))
    assert failed.status == "judge_failed" and failed.failure == "malformed_output:score_out_of_range"


def test_a_rerun_with_the_persistent_cache_makes_no_judge_calls(server, tmp_path):
    server.on("", "judge")
    cache = tmp_path / "judge.jsonl"
    tasks = (rubric_tasks("wb-3", PROMPT, RESPONSE, [CRITERION]) + [quality_task("lbw-2", PROMPT, RESPONSE)]
             + list(pairwise_tasks("pw-1", PROMPT, RESPONSE, "Another answer.")))
    first = load_judge(_env(server), cache=cache).judge(tasks)
    assert len(_chat(server)) == 4 and all(j.status == "ok" for j in first)
    before = len(_chat(server))
    judge = load_judge(_env(server), cache=cache)
    again = judge.judge(tasks)
    assert len(_chat(server)) == before and judge.calls == 0  # counted at the server
    assert [j.scores for j in again] == [j.scores for j in first] and all(j.cached for j in again)


def test_the_swap_turns_an_always_prefer_first_judge_into_ties(server):
    server.on("", "judge")  # the fake judge's verdict is the schema's first option, "A": always the first shown
    judge = load_judge(_env(server))
    pairs = judge.judge_pairs([(f"pw-{i}", f"Request {i}: {PROMPT}", f"answer a{i}", f"answer b{i}") for i in range(4)])
    assert [p.winner for p in pairs] == ["tie"] * 4 and not any(p.consistent for p in pairs)
    assert all(p.ab.verdict == p.ba.verdict == "A" for p in pairs)
    rate = win_rate(pairs)
    assert rate["win_rate_a"] == 0.5 and rate["ties"] == 4 and rate["inconsistent"] == 4
    bodies = [json.loads(r.body)["messages"][1]["content"] for r in _chat(server)]
    assert len(bodies) == 8  # both orders of every pair reached the server
    for i in range(4):
        shown_first = {b.split("[Response A", 1)[1].split("\n", 2)[1] for b in bodies if f"Request {i}:" in b}
        assert shown_first == {f"answer a{i}", f"answer b{i}"}


def test_the_regex_form_asks_for_enough_tokens_for_the_bounded_verdict_and_the_others_as_configured(server):
    server.on("", "judge")
    sampling = JudgeSampling(max_tokens=64)
    tasks = [_rubric(), quality_task("q", PROMPT, RESPONSE)]
    for form in ("vllm_regex", "vllm_json", "json_schema", "none"):
        judge = load_judge(_env(server, REER_JUDGE_STRUCTURED=form), sampling=sampling, reason_max_chars=50,
                           max_attempts=1)
        assert judge.judge_one(tasks[0]).status == "ok"
        judge.judge_one(tasks[1])  # (the fault server answers a quality request well only given a JSON schema)
        sent = [json.loads(r.body)["max_tokens"] for r in _chat(server)[-2:]]
        if form == "vllm_regex":  # raised to the whole bounded document, never below the configured value
            assert sent == [guided_max_tokens(schema_for(t, 50)) for t in tasks] and min(sent) > 64
        else:  # unguided or unbounded forms: as configured (parse retries and judge_failed rows as before)
            assert sent == [64, 64]
    big = load_judge(_env(server, REER_JUDGE_STRUCTURED="vllm_regex"), sampling=JudgeSampling(max_tokens=4096))
    big.judge_one(_rubric("big"))
    assert json.loads(_chat(server)[-1].body)["max_tokens"] == 4096
    body = json.loads(_chat(server)[-1].body)
    assert "{1,300}" in body["structured_outputs"]["regex"]  # the default bound reaches the server
    assert "within 300 characters" in body["messages"][1]["content"]  # and the judge is told it


def test_a_server_that_refuses_structured_output_is_asked_without_it(server):
    server.on("response_format", "400")  # the structured request is refused ...
    server.on(PROMPT, "judge")  # ... the plain one answers with JSON embedded in prose
    judge = load_judge(_env(server))
    judged = [judge.judge_one(_rubric("a")), judge.judge_one(_rubric("b"))]
    assert [j.status for j in judged] == ["ok", "ok"] and judged[0].scores[0]["score"] == 6
    assert judge.backend.structured == "none" and judge.backend.structured_fallbacks == 1
    assert ["response_format" in r.body for r in _chat(server)] == [True, False, False]


def test_the_structured_form_can_be_chosen(server):
    server.on("", "judge")
    judge = load_judge(_env(server, REER_JUDGE_STRUCTURED="vllm_json"))
    assert judge.judge_one(_rubric()).status == "ok"
    body = json.loads(_chat(server)[-1].body)
    assert body["structured_outputs"]["json"]["properties"]["score"]["maximum"] == 10 and "response_format" not in body
    load_judge(_env(server, REER_JUDGE_STRUCTURED="vllm_regex")).judge_one(_rubric("x"))
    assert "regex" in json.loads(_chat(server)[-1].body)["structured_outputs"]
    with pytest.raises(JudgeNotConfigured, match="REER_JUDGE_STRUCTURED"):
        load_judge(_env(server, REER_JUDGE_STRUCTURED="grammar"))


def test_the_api_key_goes_to_the_server_and_nowhere_else(server, tmp_path):
    server.on("", "judge")
    key = "sk-judge-test-0123456789abcdef"
    cache = tmp_path / "cache.jsonl"
    env = _env(server, REER_JUDGE_API_KEY_ENV="MY_JUDGE_KEY")
    os.environ["MY_JUDGE_KEY"] = key
    try:
        judged = load_judge(env, cache=cache).judge([_rubric(), quality_task("q", PROMPT, RESPONSE)])
    finally:
        del os.environ["MY_JUDGE_KEY"]
    assert all(r.headers.get("authorization") == f"Bearer {key}" for r in _chat(server))
    records = json.dumps([j.to_dict() for j in judged]) + json.dumps(score_rows(judged))
    assert key not in records and key not in cache.read_text() and "MY_JUDGE_KEY" not in records


def test_no_judge_configured_names_the_settings():
    with pytest.raises(JudgeNotConfigured) as info:
        load_judge({})
    message = str(info.value)
    assert "REER_JUDGE_BACKEND" in message and "REER_JUDGE_BASE_URL" in message and "REER_JUDGE_API_KEY_ENV" in message
    with pytest.raises(JudgeNotConfigured, match="REER_JUDGE_BACKEND='hf'"):
        judge_spec({"REER_JUDGE_BACKEND": "hf", "REER_JUDGE_MODEL": "/some/model"})
    with pytest.raises(JudgeNotConfigured, match="REER_JUDGE_BASE_URL"):
        judge_spec({"REER_JUDGE_BACKEND": "openai"})
    spec = judge_spec({"REER_JUDGE_BASE_URL": "http://127.0.0.1:9/v1", "REER_JUDGE_MAX_IN_FLIGHT": "3"})
    assert spec.backend == "openai" and spec.max_in_flight == 3  # read in the same place as the other roles


# --------------------------------------------------------------------------------------------------
# `reer eval judge`


def _reer(*args: str, env: dict) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REER_JUDGE_")}
    return subprocess.run([sys.executable, "-m", "reer_assets.cli", *args], capture_output=True, text=True,
                          env={**clean, **env}, timeout=120)


def _criteria_file(tmp_path) -> Path:
    line = (FIXTURES / "writingbench.jsonl").read_text(encoding="utf-8").splitlines()[1]
    path = tmp_path / "criteria.json"
    path.write_text(line, encoding="utf-8")  # a whole WritingBench item: its checklist is used
    return path


def test_cli_judge_without_a_judge_exits_2_naming_the_settings(tmp_path):
    response = tmp_path / "response.txt"
    response.write_text(RESPONSE, encoding="utf-8")
    out = _reer("eval", "judge", "--query", PROMPT, "--response", str(response), "--json", env={})
    assert out.returncode == 2 and "REER_JUDGE_BACKEND" in out.stderr and "REER_JUDGE_BASE_URL" in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_judge_scores_every_criterion(server, tmp_path):
    server.on("", "judge")
    response = FIXTURES / "writingbench_responses.jsonl"
    answer = tmp_path / "answer.txt"
    answer.write_text(json.loads(response.read_text(encoding="utf-8").splitlines()[1])["response"], encoding="utf-8")
    out = _reer("eval", "judge", "--query", "Turn these notes into minutes.", "--response", str(answer),
                "--criteria", str(_criteria_file(tmp_path)), "--json", env=_env(server))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["status"] == "ok" and doc["prompt_version"] == PROMPT_VERSION and doc["judge_model"] == "openai:fake-model"
    assert [s["criterion"] for s in doc["scores"]] == ["Completeness", "Register", "Action_Items"]
    assert all(isinstance(s["score"], int) and s["reason"] for s in doc["scores"])
    quality = _reer("eval", "judge", "--query", PROMPT, "--response", str(answer), "--json", env=_env(server))
    assert quality.returncode == 0 and len(json.loads(quality.stdout)["scores"]) == 6


def test_cli_judge_reports_judge_failed_with_exit_3(server, tmp_path):
    server.on("", "judge_malformed")
    answer = tmp_path / "answer.txt"
    answer.write_text("Some answer.", encoding="utf-8")
    out = _reer("eval", "judge", "--query", PROMPT, "--response", str(answer), "--mode", "quality", "--json",
                env=_env(server))
    assert out.returncode == 3, out.stderr
    doc = json.loads(out.stdout)
    assert doc["status"] == "judge_failed" and doc["scores"] == []
    assert doc["failures"][0]["reason"] == "malformed_output:no_json_object" and doc["failures"][0]["attempts"] == 3


def test_core_evaluation_imports_no_model_or_orchestration_library():
    code = ("import sys, reer_assets.core.evaluation.judge, reer_assets.core.evaluation.benchmarks; "
            "print(sorted(m for m in ('torch', 'transformers', 'vllm', 'dagster', 'openai') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
