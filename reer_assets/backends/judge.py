"""The judge role: :class:`~reer_assets.core.evaluation.judge.Judge` over an OpenAI-compatible server
(required: a ``vllm serve``, a hosted API) or, optionally, a vLLM engine in this process.

Configured like the generator and the scorer, by ``BackendSpec.from_env("judge")``:
``REER_JUDGE_BACKEND`` (openai | vllm), ``REER_JUDGE_BASE_URL``, ``REER_JUDGE_MODEL`` (the served name;
default: the server's first model), ``REER_JUDGE_API_KEY_ENV`` (the *name* of the variable that holds the
key; the key itself is read from it when the client is built and is sent only in the request header),
``REER_JUDGE_MAX_IN_FLIGHT``, ``REER_JUDGE_TIMEOUT_S``, ``REER_JUDGE_MAX_ATTEMPTS`` (transport retries).
One judge-only setting is read here: ``REER_JUDGE_STRUCTURED``, how to ask for structured output:

``json_schema``  OpenAI's ``response_format={"type": "json_schema", "json_schema": {"name", "schema",
                 "strict": true}}`` (string-length keywords left out: OpenAI's strict mode refuses them). vLLM 0.32's chat endpoint accepts the same field and turns it into its
                 own JSON-schema guided decoding (``structured_outputs_from_response_format`` in
                 ``vllm/entrypoints/generate/base/protocol.py``: ``StructuredOutputsParams(json=schema)``).
``vllm_json``    vLLM's own request field, ``extra_body={"structured_outputs": {"json": schema}}``. (The
                 older ``guided_json`` is gone in 0.32: the server logs a warning and answers *unconstrained*.)
``vllm_regex``   ``{"structured_outputs": {"regex": compact_regex(schema)}}``: the same JSON shape with no
                 whitespace between tokens. vLLM's JSON grammar allows any whitespace unless the *server* runs
                 with ``disable_any_whitespace``, and a small judge then fills the object with blank lines
                 until ``max_tokens``; the regex form is immune to that. It also enforces every reason's
                 ``maxLength``, and its calls ask for :func:`verdict_max_tokens`, so a verdict always
                 finishes (the only form that guarantees it; docs/evaluation.md, "Bounded verdicts").
``none``         no constraint: the answer is parsed (a JSON object, or one embedded in text) and retried.
``auto``         (default) ``vllm_regex`` when ``/v1/models`` says the server is vLLM, else ``json_schema``.

A server that refuses the structured request (HTTP 400/422) while the same request without the constraint
succeeds is asked without it from then on (``structured_fallbacks`` counts that).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Mapping

from reer_assets import settings
from reer_assets.backends.spec import BackendSpec, role_backend, role_configured
from reer_assets.core.call_cache import CallCache
from reer_assets.core.evaluation.judge import (Judge, JudgeReply, JudgeSampling, compact_regex, guided_max_tokens,
                                             portable_schema, verdict_max_tokens)
from reer_assets.core.protocols import Message

STRUCTURED = ("auto", "json_schema", "vllm_json", "vllm_regex", "none")
JUDGE_BACKENDS = ("openai", "vllm")
SETTINGS_HINT = (
    "set REER_JUDGE_BACKEND=openai and REER_JUDGE_BASE_URL (e.g. http://127.0.0.1:8000/v1), and if needed "
    "REER_JUDGE_MODEL (the served model name) and REER_JUDGE_API_KEY_ENV (the NAME of the variable that holds "
    "the key); `reer serve --role judge` starts a local vLLM judge and prints these settings"
)


class JudgeNotConfigured(ValueError):
    """No judge is configured (or its settings are unusable); the message names the REER_JUDGE_* settings."""


class JudgeCallError(RuntimeError):
    """A judge call that failed for good outside the HTTP client (the in-process engine)."""

    def __init__(self, error_class: str, detail: str):
        super().__init__(f"{error_class}: {detail}")
        self.error_class = error_class


def judge_spec(environ: Mapping[str, str] | None = None) -> BackendSpec:
    """The judge's :class:`BackendSpec` from ``REER_JUDGE_*``; :class:`JudgeNotConfigured` when there is none.

    A base URL alone means the openai backend.
    """
    variables = settings.role_variables("judge", environ)
    if not role_configured("judge", variables):
        raise JudgeNotConfigured(f"no judge is configured: {SETTINGS_HINT}")
    variables["backend"] = role_backend("judge", variables)
    try:
        spec = BackendSpec.from_env("judge", {f"REER_JUDGE_{k.upper()}": v for k, v in variables.items()})
    except ValueError as exc:
        raise JudgeNotConfigured(f"the judge settings are not usable ({exc}): {SETTINGS_HINT}") from exc
    if spec.backend not in JUDGE_BACKENDS:
        raise JudgeNotConfigured(f"REER_JUDGE_BACKEND={spec.backend!r} cannot judge (choose openai, or vllm for an "
                                 f"engine in this process): {SETTINGS_HINT}")
    return spec


def structured_mode(environ: Mapping[str, str] | None = None) -> str:
    mode = (settings.role_variables("judge", environ).get("structured") or "auto").strip()
    if mode not in STRUCTURED:
        raise JudgeNotConfigured(f"REER_JUDGE_STRUCTURED={mode!r}: choose one of {', '.join(STRUCTURED)}")
    return mode


class OpenAIJudgeBackend:
    """Judge calls as chat completions through :class:`~reer_assets.backends.openai_compat.OpenAIClient`
    (its timeouts, transport retries, in-flight bound and usage counters)."""

    def __init__(self, client: Any, structured: str = "auto"):
        if structured not in STRUCTURED:
            raise ValueError(f"structured must be one of {STRUCTURED}, not {structured!r}")
        self.client = client
        self.max_in_flight = client.settings.max_in_flight
        self.structured_fallbacks = 0
        self._mode = None if structured == "auto" else structured
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return f"openai:{self.client.model}"

    @property
    def structured(self) -> str:
        """The structured-output form in use (``auto`` resolved by asking the server once)."""
        if self._mode is None:
            models = self.client.call(lambda: self.client.sdk.models.list().data)
            is_vllm = any(getattr(m, "owned_by", None) == "vllm" for m in models)
            with self._lock:
                self._mode = self._mode or ("vllm_regex" if is_vllm else "json_schema")
        return self._mode

    def complete(self, messages: list[Message], schema: dict[str, Any], name: str, sampling: JudgeSampling,
                 seed: int) -> JudgeReply:
        from reer_assets.backends.openai_compat import BackendCallError

        model, mode = self.client.model, self.structured  # resolved outside call(), which holds a slot
        try:
            return self._send(model, messages, schema, name, sampling, seed, mode)
        except BackendCallError as exc:
            if mode == "none" or exc.error_class not in ("http_400", "http_422"):
                raise
            reply = self._send(model, messages, schema, name, sampling, seed, "none")  # raises if that fails too
            with self._lock:
                self._mode = "none"
                self.structured_fallbacks += 1
            return reply

    def _send(self, model: str, messages: list[Message], schema: dict[str, Any], name: str, sampling: JudgeSampling,
              seed: int, mode: str) -> JudgeReply:
        from reer_assets.backends.openai_compat import MalformedResponse

        client = self.client
        kwargs: dict[str, Any] = dict(model=model, messages=messages, temperature=sampling.temperature,
                                      top_p=sampling.top_p, max_tokens=verdict_max_tokens(schema, sampling, mode),
                                      seed=seed)
        if mode == "json_schema":
            kwargs["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": name, "schema": portable_schema(schema), "strict": True}}
        elif mode == "vllm_json":
            kwargs["extra_body"] = {"structured_outputs": {"json": schema}}
        elif mode == "vllm_regex":
            kwargs["extra_body"] = {"structured_outputs": {"regex": compact_regex(schema)}}

        def send() -> Any:
            response = client.sdk.chat.completions.create(**kwargs)
            if not getattr(response, "choices", None):
                raise MalformedResponse("a chat completion without choices")
            return response

        response = client.call(send)
        prompt_tokens, completion_tokens = client.record_usage(response.usage)
        choice = response.choices[0]
        return JudgeReply(choice.message.content or "", prompt_tokens, completion_tokens, choice.finish_reason or "stop")


class VLLMJudgeBackend:
    """Judge calls on a :class:`~reer_assets.backends.vllm_engine.VLLMEngine` in this process, with the
    same constraint as ``vllm_regex`` (or ``vllm_json``) applied by the engine."""

    max_in_flight = 1  # one engine: calls queue on it anyway

    def __init__(self, engine: Any, model_id: str, structured: str = "vllm_regex"):
        if structured not in ("vllm_regex", "vllm_json", "none"):
            raise ValueError("an in-process vLLM judge takes structured vllm_regex, vllm_json or none")
        self.engine = engine
        self.model_id = model_id
        self.structured = structured

    def complete(self, messages: list[Message], schema: dict[str, Any], name: str, sampling: JudgeSampling,
                 seed: int) -> JudgeReply:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import StructuredOutputsParams

        from reer_assets.backends.scored_span import encode, render

        ids = encode(self.engine.tokenizer, render(self.engine.tokenizer, messages))
        room = self.engine.max_model_len - len(ids)
        if room <= 0:
            raise JudgeCallError("prompt_too_long", f"{len(ids)} tokens exceed the context of {self.engine.max_model_len}")
        bound = guided_max_tokens(schema) if self.structured == "vllm_regex" else None
        if bound is not None and room < bound:  # a verdict that may not fit is refused, not cut
            raise JudgeCallError("prompt_too_long", f"{len(ids)} prompt tokens leave {room} of the context of "
                                 f"{self.engine.max_model_len}; the bounded verdict needs up to {bound}")
        constraint = None
        if self.structured == "vllm_regex":
            constraint = StructuredOutputsParams(regex=compact_regex(schema))
        elif self.structured == "vllm_json":
            constraint = StructuredOutputsParams(json=schema)
        params = SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
                                max_tokens=min(verdict_max_tokens(schema, sampling, self.structured), room), seed=seed,
                                structured_outputs=constraint)
        output = self.engine.generate([TokensPrompt(prompt_token_ids=ids)], [params])[0]
        choice = output.outputs[0]
        return JudgeReply(choice.text, len(ids), len(choice.token_ids),
                          "length" if choice.finish_reason == "length" else "stop")


def load_judge_backend(spec: BackendSpec, structured: str = "auto") -> Any:
    if spec.backend == "vllm":
        from reer_assets.backends.config import _engine, resolve_model_path

        path, ident = resolve_model_path(spec, "judge")
        return VLLMJudgeBackend(_engine(path, spec.gpu_memory_utilization), ident,
                                "vllm_regex" if structured in ("auto", "json_schema") else structured)
    from reer_assets.backends.openai_compat import OpenAIClient

    assert spec.base_url
    client = OpenAIClient(spec)
    return OpenAIJudgeBackend(client, structured)


def load_judge(environ: Mapping[str, str] | None = None, cache: CallCache | str | os.PathLike | None = None,
               sampling: JudgeSampling | None = None, batch_dir: str | os.PathLike | None = None,
               log: Any = None, **judge_options: Any) -> Judge:
    """The configured judge (``REER_JUDGE_*``), with an optional persistent cache (a path or a CallCache).

    With ``REER_JUDGE_BATCH=1`` its judgments go out as batches (``backends/batch.py``; local batch files
    in ``batch_dir``). Raises :class:`JudgeNotConfigured` naming the settings when no judge is configured.
    """
    spec = judge_spec(environ)
    if cache is not None and not isinstance(cache, CallCache):
        cache = CallCache(cache)
    if spec.batch:
        from reer_assets.backends.batch import batch_judge

        return batch_judge(spec, structured_mode(environ), batch_dir, cache=cache, sampling=sampling, log=log,
                           **judge_options)
    backend = load_judge_backend(spec, structured_mode(environ))
    return Judge(backend, cache=cache, sampling=sampling, **judge_options)
