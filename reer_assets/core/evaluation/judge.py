"""LLM-as-judge: versioned prompts, structured-output schemas, tolerant parsing, retries, cache, records.

Four modes, each one judge call per *judgment*:

``rubric``     (WritingBench) one criterion of an item with its five score bands → an integer 1-10 and a
               reason; an item with five criteria is five judgments.
``quality``    (LongBench-Write S_q) six dimensions as in LongWriter's evaluator (relevance, accuracy,
               coherence, clarity, breadth and depth, reading experience) → an integer 1-5 and a reason
               each, in one call; length is explicitly excluded from quality (S_l measures it).
``checklist``  (HelloBench) every checklist question of an item → one of 0, 0.25, 0.5, 0.75, 1 and a
               reason each, in one call.
``pairwise``   two responses to one prompt → "A", "B" or "tie"; always judged in both orders (A/B and
               B/A) and combined by :func:`combine_pair`: when the orders disagree the verdict is a tie.

What the judge reads is the *answer*: :func:`strip_thinking` removes everything up to and including
``</think>`` and the ``<answer>`` tags, and the judged text is recorded with every score.

A judgment is tried at most :data:`MAX_ATTEMPTS` (3) times: an output that is not a JSON object of the
mode's shape (or is out of range) is asked again with the next seed. After the last failure the judgment
is a ``judge_failed`` record with its reason: it is never dropped and never given a default score.
Transport faults (HTTP 5xx, timeouts) are retried by the backend client first; a call that fails for good
ends the judgment as ``judge_failed`` with ``call_failed:<error class>``.

Every record carries the judge model, :data:`PROMPT_VERSION`, the sampling settings, the UTC date, the
attempts and the prompt/completion tokens spent (summable with :func:`token_totals`). Successful
judgments are stored in a :class:`~reer_assets.core.call_cache.CallCache` under :meth:`Judge.key`, a hash
of (judge model, prompt version, sampling, item id + prompt, judged text, mode and criterion), so a re-run
with the same cache file makes no judge call at all. Failures are not cached: a re-run asks again.

:func:`schema_for` gives the JSON schema a server can enforce (vLLM's guided decoding, OpenAI's
``json_schema`` response format); :func:`compact_regex` compiles the same shape into a whitespace-free
regular expression for servers whose JSON grammar lets a small model fill the object with blank lines.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from reer_assets.core.call_cache import CallCache
from reer_assets.core.experiments import bootstrap_mean
from reer_assets.core.protocols import Message

# Bump on ANY change to the wording below, the schemas or the parsing rules: it is part of every cache
# key and of every recorded score, so old and new judgments are never mixed silently.
PROMPT_VERSION = "reer-judge-v2"  # v2: every reason bounded (REASON_MAX_CHARS)
MODES = ("rubric", "quality", "checklist", "pairwise")
MAX_ATTEMPTS = 3
BANDS = ("1-2", "3-4", "5-6", "7-8", "9-10")
RUBRIC_RANGE = (1, 10)
QUALITY_RANGE = (1, 5)
CHECKLIST_SCORES = (0.0, 0.25, 0.5, 0.75, 1.0)
VERDICTS = ("A", "B", "tie")

# The six LongBench-Write quality dimensions (LongWriter's evaluator), described in our own words.
QUALITY_DIMENSIONS: dict[str, str] = {
    "relevance": "the response does what the request asks and stays on its subject and purpose",
    "accuracy": "facts, names, figures and reasoning are correct; nothing is invented or contradicted",
    "coherence": "the parts come in a sensible order and each follows from what precedes it",
    "clarity": "sentences are easy to follow and the wording is precise, without padding",
    "breadth_and_depth": "it covers the aspects the request implies and develops them with substance",
    "reading_experience": "it is engaging and well paced, in a register that suits the request",
}


# --------------------------------------------------------------------------------------------------
# What is judged


def strip_thinking(text: str) -> str:
    """The answer a judge reads: everything up to and including the last ``</think>`` removed, and the
    ``<answer>``/``</answer>`` tags. A ``<think>`` that never closes makes the rest of the text thinking,
    so only what came before it (usually nothing) is judged."""
    _, closed, tail = (text or "").rpartition("</think>")
    body = tail if closed else (text or "")
    if not closed and "<think>" in body:
        body = body.split("<think>", 1)[0]
    return body.replace("<answer>", "").replace("</answer>", "").strip()


@dataclass(frozen=True)
class Criterion:
    """A rubric criterion (name, description, score bands "1-2" … "9-10") or a checklist question
    (name = its number, description = the question, optional weight)."""

    name: str
    description: str
    bands: tuple[tuple[str, str], ...] = ()
    weight: float | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "Criterion":
        """From the normalised form ``{name, description, bands, weight}`` or WritingBench's
        ``{name, criteria_description, "1-2", …, "9-10"}``."""
        if not isinstance(raw, Mapping):
            raise ValueError("a criterion must be a JSON object")
        name, description = raw.get("name"), raw.get("description", raw.get("criteria_description"))
        if not isinstance(name, str) or not name.strip():
            raise ValueError("a criterion needs a non-empty 'name'")
        if not isinstance(description, str):
            raise ValueError(f"criterion {name!r} needs a 'description' (or 'criteria_description') string")
        bands = raw.get("bands") or {band: raw[band] for band in BANDS if band in raw}
        if not isinstance(bands, Mapping):
            raise ValueError(f"criterion {name!r}: 'bands' must be an object")
        weight = raw.get("weight")
        return cls(name.strip(), description.strip(), tuple((k, str(bands[k])) for k in BANDS if k in bands),
                   float(weight) if isinstance(weight, (int, float)) and not isinstance(weight, bool) else None)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "bands": dict(self.bands), "weight": self.weight}


@dataclass(frozen=True)
class JudgeSampling:
    """Sampling for judge calls; greedy by default, so a judgment is as repeatable as the server allows."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 1024
    seed: int = 0  # attempt k (from 1) uses seed + k - 1


@dataclass(frozen=True)
class JudgeTask:
    """One judgment to make. ``texts`` are the judged texts, already stripped: one, or for pairwise the
    text shown as A then the one shown as B (``order`` "AB": A is response a; "BA": A is response b)."""

    mode: str
    item_id: str
    prompt: str
    texts: tuple[str, ...]
    criteria: tuple[Criterion, ...] = ()
    order: str = ""
    benchmark: str = ""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown judge mode {self.mode!r}; known: {', '.join(MODES)}")
        if len(self.texts) != (2 if self.mode == "pairwise" else 1):
            raise ValueError(f"a {self.mode} judgment takes {2 if self.mode == 'pairwise' else 1} text(s)")
        if self.mode == "rubric" and len(self.criteria) != 1:
            raise ValueError("a rubric judgment takes exactly one criterion (one call per criterion)")
        if self.mode == "checklist" and not self.criteria:
            raise ValueError("a checklist judgment needs at least one checklist question")

    @property
    def subject(self) -> str:
        """What the judgment is about: the criterion name, or the mode (pairwise with its order)."""
        if self.mode == "rubric":
            return self.criteria[0].name
        return f"pairwise:{self.order}" if self.mode == "pairwise" else self.mode


def rubric_tasks(item_id: str, prompt: str, response: str, criteria: Sequence[Criterion | Mapping[str, Any]],
                 benchmark: str = "") -> list[JudgeTask]:
    """One judgment per criterion of the item."""
    text = strip_thinking(response)
    return [JudgeTask("rubric", item_id, prompt, (text,), (c if isinstance(c, Criterion) else Criterion.from_dict(c),),
                      benchmark=benchmark) for c in criteria]


def quality_task(item_id: str, prompt: str, response: str, benchmark: str = "") -> JudgeTask:
    return JudgeTask("quality", item_id, prompt, (strip_thinking(response),), benchmark=benchmark)


def checklist_task(item_id: str, prompt: str, response: str, checklist: Sequence[Criterion | Mapping[str, Any] | str],
                   benchmark: str = "") -> JudgeTask:
    """All checklist questions of the item in one judgment; plain strings are numbered from 1."""
    items = tuple(c if isinstance(c, Criterion) else Criterion(str(i), c) if isinstance(c, str) else Criterion.from_dict(c)
                  for i, c in enumerate(checklist, 1))
    return JudgeTask("checklist", item_id, prompt, (strip_thinking(response),), items, benchmark=benchmark)


def pairwise_tasks(item_id: str, prompt: str, response_a: str, response_b: str,
                   benchmark: str = "") -> tuple[JudgeTask, JudgeTask]:
    """The same comparison in both orders: (a shown first, b shown first)."""
    a, b = strip_thinking(response_a), strip_thinking(response_b)
    return (JudgeTask("pairwise", item_id, prompt, (a, b), order="AB", benchmark=benchmark),
            JudgeTask("pairwise", item_id, prompt, (b, a), order="BA", benchmark=benchmark))


# --------------------------------------------------------------------------------------------------
# Prompts (our own wording; PROMPT_VERSION names this text)

_JSON_ONLY = "Reply with one JSON object and nothing else"

RUBRIC_SYSTEM = (
    "You are a careful writing assessor. You will see a writing request, the response a model wrote for it, "
    "and one assessment criterion with score bands. Judge the response on that criterion alone and give a "
    "whole-number score from 1 (worst) to 10 (best).\n\n"
    "Rules:\n"
    "- Read the whole response before scoring, and point to the passages that decide the score.\n"
    "- Use the bands literally: find the band whose description fits, then choose its lower or upper number.\n"
    "- Do not let length, language or surface polish sway a criterion that is not about them.\n"
    f"- {_JSON_ONLY}: {{\"reason\": \"<why, in one to three sentences>\", \"score\": <integer 1-10>}}."
)

QUALITY_SYSTEM = (
    "You assess the quality of a piece of writing produced for a request, on six dimensions, each scored as a "
    "whole number from 1 (very poor) to 5 (excellent):\n"
    + "".join(f"- {name}: {text}.\n" for name, text in QUALITY_DIMENSIONS.items())
    + "\nLength is not part of quality here. Whether the response is as long as the request asks is measured "
    "separately, so neither reward nor punish a response for being long or short.\n\n"
    f"{_JSON_ONLY}, with exactly these six keys, each holding {{\"reason\": \"<one or two sentences>\", "
    "\"score\": <integer 1-5>}: " + ", ".join(QUALITY_DIMENSIONS) + "."
)

CHECKLIST_SYSTEM = (
    "You check a response against a numbered list of yes-or-no questions about it (a checklist). For each "
    "question decide how fully the response satisfies it, and score it with one of five values: 0 (not "
    "satisfied at all), 0.25 (satisfied only in a small part), 0.5 (partly satisfied, or the evidence is "
    "mixed), 0.75 (largely satisfied, with small gaps), 1 (completely satisfied; you cannot name an "
    "improvement). Be demanding: give 1 only when nothing could be done better for that question.\n\n"
    f"{_JSON_ONLY}, keyed by the question numbers as strings (\"1\", \"2\", ...), each holding "
    "{\"reason\": \"<one or two sentences>\", \"score\": <one of 0, 0.25, 0.5, 0.75, 1>}."
)

PAIRWISE_SYSTEM = (
    "You compare two responses to the same writing request, shown as Response A and Response B. Decide which "
    "one fulfils the request better as a piece of writing: doing what was asked, accuracy, organisation, "
    "clarity and how well it reads. The order in which the responses are shown carries no information: do "
    "not prefer one for coming first or last, nor for being longer. If neither is clearly better, answer tie.\n\n"
    f"{_JSON_ONLY}: {{\"reason\": \"<the decisive differences, in one to three sentences>\", "
    "\"winner\": \"A\" | \"B\" | \"tie\"}."
)


def _shown(text: str) -> str:
    return text if text.strip() else "(the response is empty)"


def _request_and_response(prompt: str, text: str, label: str = "Response") -> str:
    return (f"[Request]\n{prompt}\n\n[{label}; it ends at the line \"[End of {label.lower()}]\"]\n"
            f"{_shown(text)}\n[End of {label.lower()}]")


def _reason_rule(task: JudgeTask, reason_max_chars: int | None) -> str:
    """The bound the schema puts on reasons, told to the judge so that a capable one is not cut mid-sentence."""
    limit = reason_max_chars or REASON_MAX_CHARS[task.mode]
    return f" Keep each reason within {limit} characters, on one line, without double quotes."


def messages_for(task: JudgeTask, reason_max_chars: int | None = None) -> list[Message]:
    """System and user turns for one judgment (``reason_max_chars``: the schema's bound on reasons)."""
    rule = _reason_rule(task, reason_max_chars)
    if task.mode == "rubric":
        criterion = task.criteria[0]
        bands = "".join(f"{band}: {text}\n" for band, text in criterion.bands)
        user = (f"{_request_and_response(task.prompt, task.texts[0])}\n\n[Criterion] {criterion.name}\n"
                f"{criterion.description}\n" + (f"\n[Score bands]\n{bands}" if bands else "")
                + "\nGive your JSON verdict for this criterion." + rule)
        return [{"role": "system", "content": RUBRIC_SYSTEM}, {"role": "user", "content": user}]
    if task.mode == "quality":
        user = (f"{_request_and_response(task.prompt, task.texts[0])}\n\n"
                f"Give your JSON assessment of the six dimensions.{rule}")
        return [{"role": "system", "content": QUALITY_SYSTEM}, {"role": "user", "content": user}]
    if task.mode == "checklist":
        questions = "".join(f"{c.name}. {c.description}\n" for c in task.criteria)
        user = (f"{_request_and_response(task.prompt, task.texts[0])}\n\n[Checklist]\n{questions}\n"
                f"Give your JSON scores for all {len(task.criteria)} questions.{rule}")
        return [{"role": "system", "content": CHECKLIST_SYSTEM}, {"role": "user", "content": user}]
    first, second = task.texts
    user = (f"[Request]\n{task.prompt}\n\n[Response A; it ends at the line \"[End of response A]\"]\n{_shown(first)}\n"
            f"[End of response A]\n\n[Response B; it ends at the line \"[End of response B]\"]\n{_shown(second)}\n"
            f"[End of response B]\n\nGive your JSON verdict.{rule}")
    return [{"role": "system", "content": PAIRWISE_SYSTEM}, {"role": "user", "content": user}]


# --------------------------------------------------------------------------------------------------
# Schemas for structured output


# The longest reason a schema admits, per mode, from the length each prompt asks for: "one to three sentences"
# (rubric, pairwise), "one or two sentences" per entry (quality, checklist). Every free-text field is bounded
# so that guided decoding ends a reason there: a weak judge that never closes its string (the embedded
# model writes `{"reason":"` and then text until max_tokens) still gives a complete verdict.
REASON_MAX_CHARS: dict[str, int] = {"rubric": 300, "pairwise": 300, "quality": 200, "checklist": 200}


def _reason_schema(max_chars: int) -> dict[str, Any]:
    if max_chars < 1:
        raise ValueError("a reason's bound must be at least 1 character")
    return {"type": "string", "minLength": 1, "maxLength": int(max_chars)}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _scored(score: dict[str, Any], max_chars: int) -> dict[str, Any]:
    return _object({"reason": _reason_schema(max_chars), "score": score})  # the reason first: reason, then decide


def schema_for(task: JudgeTask, reason_max_chars: int | None = None) -> dict[str, Any]:
    """The JSON schema of a well-formed answer: every reason at most ``reason_max_chars`` characters (default
    :data:`REASON_MAX_CHARS` of the mode), every score in its range, so the whole document is bounded."""
    reason_max_chars = reason_max_chars or REASON_MAX_CHARS[task.mode]
    if task.mode == "rubric":
        return _scored({"type": "integer", "minimum": RUBRIC_RANGE[0], "maximum": RUBRIC_RANGE[1]}, reason_max_chars)
    if task.mode == "quality":
        score = {"type": "integer", "minimum": QUALITY_RANGE[0], "maximum": QUALITY_RANGE[1]}
        return _object({name: _scored(score, reason_max_chars) for name in QUALITY_DIMENSIONS})
    if task.mode == "checklist":
        score = {"type": "number", "enum": list(CHECKLIST_SCORES)}
        return _object({c.name: _scored(score, reason_max_chars) for c in task.criteria})
    return _object({"reason": _reason_schema(reason_max_chars), "winner": {"type": "string", "enum": list(VERDICTS)}})


def schema_name(task: JudgeTask) -> str:
    return f"reer_judge_{task.mode}"


_PLAIN_CHAR = r'[^"\\\x00-\x1f]'  # a string character that needs no escape
_JSON_CHAR = r'([^"\\\x00-\x1f]|\\["\\/bfnrt])'  # ... or a short escape


def compact_regex(schema: Mapping[str, Any]) -> str:
    """A regular expression matching exactly the whitespace-free JSON texts of ``schema`` (properties in
    schema order). Covers what :func:`schema_for` produces: objects with required properties, strings
    (bounded by ``maxLength`` when the schema says so), integer ranges and enums of numbers or strings."""
    kind = schema.get("type")
    if "enum" in schema:
        options = sorted((json.dumps(v, ensure_ascii=False) for v in schema["enum"]), key=len, reverse=True)
        return "(" + "|".join(re.escape(o) for o in options) + ")"
    if kind == "object":
        parts = [re.escape(json.dumps(name)) + ":" + compact_regex(sub) for name, sub in schema["properties"].items()]
        return r"\{" + ",".join(parts) + r"\}"
    if kind == "string":
        low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
        if high is not None:
            # A bounded string takes plain characters only (no escapes, so no quote, backslash or line break):
            # xgrammar precomputes a character class's bounded repetition (about 0.5 ms a token at any bound),
            # but runs an alternation group's repetition state by state (0.35-1 s a token at {1,300}, 150k vocab).
            return f'"{_PLAIN_CHAR}{{{low},{int(high)}}}"'
        return f'"{_JSON_CHAR}{"+" if low >= 1 else "*"}"'
    if kind == "integer" and "minimum" in schema and "maximum" in schema:
        values = range(int(schema["minimum"]), int(schema["maximum"]) + 1)
        if len(values) <= 1000:
            return "(" + "|".join(sorted((str(v) for v in values), key=len, reverse=True)) + ")"
    raise ValueError(f"compact_regex does not cover this schema: {json.dumps(schema)[:120]}")


UTF8_MAX_BYTES = 4  # a character of a bounded string: at most 4 bytes of UTF-8
GUIDED_TOKEN_MARGIN = 16  # on top of the worst case: room for a tokenizer's odd end-of-text handling


def max_document_bytes(schema: Mapping[str, Any]) -> int | None:
    """The longest whitespace-free text :func:`compact_regex` admits for ``schema``, in UTF-8 bytes; None
    when a string has no ``maxLength`` (then nothing bounds the document)."""
    kind = schema.get("type")
    if "enum" in schema:
        return max(len(json.dumps(v, ensure_ascii=False).encode()) for v in schema["enum"])
    if kind == "object":
        total = 2 + max(0, len(schema["properties"]) - 1)  # braces and commas
        for name, sub in schema["properties"].items():
            size = max_document_bytes(sub)
            if size is None:
                return None
            total += len(json.dumps(name)) + 1 + size  # the key as compact_regex writes it (ASCII), the colon
        return total
    if kind == "string":
        return None if schema.get("maxLength") is None else 2 + UTF8_MAX_BYTES * int(schema["maxLength"])
    if kind == "integer" and "minimum" in schema and "maximum" in schema:
        return max(len(str(int(schema["minimum"]))), len(str(int(schema["maximum"]))))
    raise ValueError(f"max_document_bytes does not cover this schema: {json.dumps(schema)[:120]}")


def guided_max_tokens(schema: Mapping[str, Any]) -> int | None:
    """Enough ``max_tokens`` for any document :func:`compact_regex` admits, so a regex-guided verdict is
    never cut off: every generated token carries at least one byte of text (byte-level BPE, SentencePiece
    byte fallback), plus the end-of-sequence token and :data:`GUIDED_TOKEN_MARGIN`. None when unbounded."""
    size = max_document_bytes(schema)
    return None if size is None else size + 1 + GUIDED_TOKEN_MARGIN


def portable_schema(schema: Any) -> Any:
    """``schema`` without string-length keywords, which OpenAI's strict structured outputs refuse (the parser
    still rejects an empty reason, and a cap on reasons is a vLLM-side convenience)."""
    if isinstance(schema, dict):
        return {k: portable_schema(v) for k, v in schema.items() if k not in ("minLength", "maxLength")}
    if isinstance(schema, list):
        return [portable_schema(v) for v in schema]
    return schema


def verdict_max_tokens(schema: dict[str, Any], sampling: JudgeSampling, mode: str) -> int:
    """``max_tokens`` for one call: under the regex forms at least :func:`guided_max_tokens` of the schema
    (the whole bounded document always fits, so a guided verdict is never cut off); otherwise as configured
    (the JSON-grammar forms allow unbounded whitespace, and unguided answers are parsed and retried)."""
    if mode == "vllm_regex":
        bound = guided_max_tokens(schema)
        if bound is not None:
            return max(sampling.max_tokens, bound)
    return sampling.max_tokens


# --------------------------------------------------------------------------------------------------
# Parsing


class JudgeOutputError(ValueError):
    """A judge output that is not a well-formed answer; ``code`` goes into the failure record."""

    def __init__(self, code: str, detail: str = ""):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code


def extract_json_object(text: str) -> dict[str, Any]:
    """The JSON object in a judge's output: the whole output, or the first object embedded in text (code
    fences and prose around it are fine). A reasoning judge's own ``…</think>`` is skipped first."""
    _, closed, tail = (text or "").rpartition("</think>")
    body = (tail if closed else (text or "")).strip()
    if not body:
        raise JudgeOutputError("empty_output")
    try:
        value = json.loads(body)
        if isinstance(value, dict):
            return value
    except json.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    start = body.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(body, start)
            if isinstance(value, dict):
                return value
        except json.JSONDecodeError:
            pass
        start = body.find("{", start + 1)
    raise JudgeOutputError("no_json_object", body[:80])


def _integer(value: Any, low: int, high: int) -> int:
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise JudgeOutputError("bad_score", repr(value)[:40])
    if not low <= value <= high:
        raise JudgeOutputError("score_out_of_range", str(value))
    return value


def _checklist_value(value: Any) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    for allowed in CHECKLIST_SCORES:
        if number is not None and abs(number - allowed) < 1e-9:
            return allowed
    raise JudgeOutputError("bad_score", repr(value)[:40])


def _entry(obj: Any, where: str) -> tuple[Any, str]:
    if not isinstance(obj, Mapping):
        raise JudgeOutputError(f"not_an_object:{where}" if where else "not_an_object")
    if "score" not in obj:
        raise JudgeOutputError(f"missing_score:{where}" if where else "missing_score")
    reason = obj.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise JudgeOutputError(f"missing_reason:{where}" if where else "missing_reason")
    return obj["score"], reason.strip()


def _key(name: Any) -> str:
    return re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_")  # "Breadth and Depth" -> breadth_and_depth


@dataclass(frozen=True)
class Parsed:
    scores: list[dict[str, Any]]  # [{criterion, score, reason}]
    verdict: str | None = None


def parse_output(task: JudgeTask, text: str) -> Parsed:
    """Check a judge output against the task's mode; raises :class:`JudgeOutputError` with a reason code."""
    obj = extract_json_object(text)
    if task.mode == "rubric":
        score, reason = _entry(obj, "")
        return Parsed([{"criterion": task.criteria[0].name, "score": _integer(score, *RUBRIC_RANGE), "reason": reason}])
    if task.mode == "pairwise":
        reason = obj.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise JudgeOutputError("missing_reason")
        winner = str(obj.get("winner", "")).strip().strip('"').upper()
        if winner not in ("A", "B", "TIE"):
            raise JudgeOutputError("bad_verdict", repr(obj.get("winner"))[:40])
        verdict = "tie" if winner == "TIE" else winner
        return Parsed([{"criterion": "preference", "score": None, "reason": reason.strip()}], verdict)
    keyed = {_key(k): v for k, v in obj.items()}
    scores = []
    if task.mode == "quality":
        for name in QUALITY_DIMENSIONS:
            if name not in keyed:
                raise JudgeOutputError("missing_dimension", name)
            score, reason = _entry(keyed[name], name)
            scores.append({"criterion": name, "score": _integer(score, *QUALITY_RANGE), "reason": reason})
        return Parsed(scores)
    for criterion in task.criteria:
        if _key(criterion.name) not in keyed:
            raise JudgeOutputError("missing_checklist_item", criterion.name)
        score, reason = _entry(keyed[_key(criterion.name)], criterion.name)
        scores.append({"criterion": criterion.name, "score": _checklist_value(score), "reason": reason})
    return Parsed(scores)


# --------------------------------------------------------------------------------------------------
# The judge


@dataclass(frozen=True)
class JudgeReply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"


class JudgeBackend(Protocol):
    """A chat model that can be asked for one answer, ideally constrained to ``schema``.

    Failures that already had their transport retries raise an exception with an ``error_class``
    attribute (``BackendCallError`` of the openai backend); the judge records those as ``judge_failed``.
    """

    model_id: str

    def complete(self, messages: list[Message], schema: dict[str, Any], name: str, sampling: JudgeSampling,
                 seed: int) -> JudgeReply: ...


@dataclass
class Judgment:
    """One judgment's record. ``scores`` is empty unless ``status`` is "ok"; ``failure`` says why not."""

    item_id: str
    mode: str
    subject: str
    status: str  # "ok" | "judge_failed"
    scores: list[dict[str, Any]]
    verdict: str | None  # pairwise: "A" | "B" | "tie", as shown (A = the first text)
    failure: str | None
    attempt_errors: list[str]
    judged_text: str | list[str]  # pairwise: [text shown as A, text shown as B]
    order: str
    benchmark: str
    judge_model: str
    prompt_version: str
    sampling: dict[str, Any]
    judged_at: str  # UTC, ISO 8601
    attempts: int
    prompt_tokens: int
    completion_tokens: int
    cache_key: str
    raw_output: str = ""  # the judge's last output, for audit
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> "Judgment":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in value.items() if k in names})


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Judge:
    """Runs judgments through a backend, with the cache, the attempts and the records.

    ``calls`` counts the backend calls this judge made (cache hits make none). Judgments run ``workers``
    at a time (default: the backend's ``max_in_flight``, else 1).
    """

    def __init__(self, backend: JudgeBackend, cache: CallCache | None = None, sampling: JudgeSampling | None = None,
                 max_attempts: int = MAX_ATTEMPTS, workers: int | None = None, reason_max_chars: int | None = None,
                 prompt_version: str = PROMPT_VERSION, clock: Callable[[], str] = _now):
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.backend = backend
        self.cache = cache
        self.sampling = sampling or JudgeSampling()
        self.max_attempts = max_attempts
        self.workers = max(1, workers or int(getattr(backend, "max_in_flight", 1) or 1))
        self.reason_max_chars = reason_max_chars
        self.prompt_version = prompt_version
        self.clock = clock
        self.calls = 0
        self._lock = threading.Lock()

    @property
    def judge_model(self) -> str:
        return self.backend.model_id

    def key(self, task: JudgeTask) -> str:
        payload = ["judge", self.judge_model, self.prompt_version, asdict(self.sampling), task.item_id, task.prompt,
                   list(task.texts), task.mode, [c.to_dict() for c in task.criteria], task.order,
                   self.reason_max_chars or REASON_MAX_CHARS[task.mode]]  # the bound is in the prompt and schema
        return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def judge(self, tasks: Sequence[JudgeTask]) -> list[Judgment]:
        """Every task's judgment, in order (cached ones from the cache)."""
        if self.workers == 1 or len(tasks) <= 1:
            return [self.judge_one(task) for task in tasks]
        with ThreadPoolExecutor(max_workers=min(self.workers, len(tasks)), thread_name_prefix="reer-judge") as pool:
            return list(pool.map(self.judge_one, tasks))

    def judge_one(self, task: JudgeTask) -> Judgment:
        key = self.key(task)
        if self.cache is not None:
            stored = self.cache.get(key)
            if stored is not None:
                judgment = Judgment.from_dict(stored)
                judgment.cached = True
                return judgment
        messages, schema = messages_for(task, self.reason_max_chars), schema_for(task, self.reason_max_chars)
        name = schema_name(task)
        errors: list[str] = []
        prompt_tokens = completion_tokens = attempts = 0
        raw = ""
        for attempt in range(1, self.max_attempts + 1):
            attempts = attempt
            with self._lock:
                self.calls += 1
            try:
                reply = self.backend.complete(messages, schema, name, self.sampling, self.sampling.seed + attempt - 1)
            except Exception as exc:  # only failures the backend classified; anything else is a bug: raise
                error_class = getattr(exc, "error_class", None)
                if error_class is None:
                    raise
                errors.append(f"call_failed:{error_class}")
                break  # the client already retried the transport; asking again would repeat that
            prompt_tokens += reply.prompt_tokens
            completion_tokens += reply.completion_tokens
            raw = reply.text
            try:
                parsed = parse_output(task, reply.text)
            except JudgeOutputError as exc:
                cut = " (cut at max_tokens)" if reply.finish_reason == "length" else ""
                errors.append(f"malformed_output:{exc.code}{cut}")
                continue
            judgment = self._record(task, key, "ok", parsed.scores, parsed.verdict, None, errors, attempts,
                                    prompt_tokens, completion_tokens, raw)
            if self.cache is not None:
                value = judgment.to_dict()
                value.pop("cached")
                self.cache.put_many([(key, value)])
            return judgment
        return self._record(task, key, "judge_failed", [], None, errors[-1], errors, attempts, prompt_tokens,
                            completion_tokens, raw)

    def _record(self, task: JudgeTask, key: str, status: str, scores: list[dict[str, Any]], verdict: str | None,
                failure: str | None, errors: list[str], attempts: int, prompt_tokens: int, completion_tokens: int,
                raw: str) -> Judgment:
        return Judgment(
            item_id=task.item_id, mode=task.mode, subject=task.subject, status=status, scores=scores, verdict=verdict,
            failure=failure, attempt_errors=list(errors),
            judged_text=list(task.texts) if task.mode == "pairwise" else task.texts[0], order=task.order,
            benchmark=task.benchmark, judge_model=self.judge_model, prompt_version=self.prompt_version,
            sampling=asdict(self.sampling), judged_at=self.clock(), attempts=attempts, prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens, cache_key=key, raw_output=raw[:4000])

    def judge_pairs(self, pairs: Sequence[tuple[str, str, str, str]], benchmark: str = "") -> list["PairResult"]:
        """``(item_id, prompt, response_a, response_b)`` each judged in both orders and combined."""
        tasks = [t for item_id, prompt, a, b in pairs for t in pairwise_tasks(item_id, prompt, a, b, benchmark)]
        judged = self.judge(tasks)
        return [combine_pair(judged[i], judged[i + 1]) for i in range(0, len(judged), 2)]


# --------------------------------------------------------------------------------------------------
# Pairwise combination


@dataclass
class PairResult:
    item_id: str
    status: str  # "ok" | "judge_failed"
    winner: str | None  # "a" | "b" | "tie"
    consistent: bool | None  # the two orders agreed
    failure: str | None
    ab: Judgment
    ba: Judgment

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_AS_SHOWN = {"AB": {"A": "a", "B": "b", "tie": "tie"}, "BA": {"A": "b", "B": "a", "tie": "tie"}}


def combine_pair(ab: Judgment, ba: Judgment) -> PairResult:
    """The verdict of a pair judged in both orders: the agreed winner, or a tie when the orders disagree
    (a judge that always prefers the first answer therefore produces only ties)."""
    if ab.status != "ok" or ba.status != "ok":
        failure = "; ".join(f"{j.order}: {j.failure}" for j in (ab, ba) if j.status != "ok")
        return PairResult(ab.item_id, "judge_failed", None, None, failure, ab, ba)
    first, second = _AS_SHOWN[ab.order][ab.verdict or ""], _AS_SHOWN[ba.order][ba.verdict or ""]
    return PairResult(ab.item_id, "ok", first if first == second else "tie", first == second, None, ab, ba)


def win_rate(pairs: Iterable[PairResult], resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Share of items where response a wins (a tie counts half), with an item-level bootstrap interval
    (:func:`~reer_assets.core.experiments.bootstrap_mean`). Failed pairs are counted, not scored."""
    values: dict[str, list[float]] = {}
    counts = {"a": 0, "b": 0, "tie": 0}
    failed = inconsistent = 0
    for pair in pairs:
        if pair.status != "ok":
            failed += 1
            continue
        counts[pair.winner or "tie"] += 1
        inconsistent += 0 if pair.consistent else 1
        values.setdefault(pair.item_id, []).append({"a": 1.0, "tie": 0.5, "b": 0.0}[pair.winner or "tie"])
    interval = bootstrap_mean(values, resamples=resamples, seed=seed)
    return {"win_rate_a": interval.mean, "ci_low": interval.low, "ci_high": interval.high, "items": interval.n,
            "wins_a": counts["a"], "wins_b": counts["b"], "ties": counts["tie"], "inconsistent": inconsistent,
            "failed": failed}


# --------------------------------------------------------------------------------------------------
# Flat records and token sums


def score_rows(judgments: Iterable[Judgment]) -> list[dict[str, Any]]:
    """One row per score (a quality judgment gives six), a failed judgment one row with ``score`` None and
    ``status`` "judge_failed"; each row carries the judgment's metadata (for Parquet or lineage)."""
    rows = []
    for j in judgments:
        meta = {"benchmark": j.benchmark, "item_id": j.item_id, "mode": j.mode, "status": j.status,
                "failure": j.failure, "judged_text": j.judged_text if isinstance(j.judged_text, str)
                else json.dumps(j.judged_text, ensure_ascii=False), "judge_model": j.judge_model,
                "prompt_version": j.prompt_version, "sampling": json.dumps(j.sampling, sort_keys=True),
                "judged_at": j.judged_at, "attempts": j.attempts, "cached": j.cached, "judgment_key": j.cache_key}
        if j.status != "ok":
            rows.append({**meta, "criterion": j.subject, "score": None, "reason": j.failure, "verdict": None})
            continue
        for s in j.scores:
            rows.append({**meta, "criterion": s["criterion"], "score": s["score"], "reason": s["reason"],
                         "verdict": j.verdict})
    return rows


def token_totals(judgments: Iterable[Judgment], by: str | None = "benchmark") -> dict[str, dict[str, int]]:
    """Judge tokens per group (``by`` a Judgment field, or None for one ``all`` group): what the recorded
    judgments cost (``prompt_tokens``, ``completion_tokens``) and what this run spent on them
    (``fresh_*``: cache hits cost nothing now)."""
    totals: dict[str, dict[str, int]] = {}
    for j in judgments:
        group = totals.setdefault(str(getattr(j, by)) if by else "all", {
            "judgments": 0, "ok": 0, "judge_failed": 0, "cached": 0, "attempts": 0, "prompt_tokens": 0,
            "completion_tokens": 0, "fresh_prompt_tokens": 0, "fresh_completion_tokens": 0})
        group["judgments"] += 1
        group["ok" if j.status == "ok" else "judge_failed"] += 1
        group["cached"] += int(j.cached)
        group["attempts"] += 0 if j.cached else j.attempts
        group["prompt_tokens"] += j.prompt_tokens
        group["completion_tokens"] += j.completion_tokens
        if not j.cached:
            group["fresh_prompt_tokens"] += j.prompt_tokens
            group["fresh_completion_tokens"] += j.completion_tokens
    return totals
