"""Generator and Scorer over an OpenAI-compatible HTTP server (``vllm serve`` in practice).

The generator uses chat completions and pre-fills the assistant turn with vLLM's
``continue_final_message``; where a server cannot do that, ``prefill_mode="completions"``
renders the chat template locally and uses the completions endpoint instead.

The scorer needs vLLM's ``prompt_logprobs`` extension on the completions endpoint and
sends token ids, tokenized locally with the model's tokenizer (:mod:`scored_span`).
It checks the server once when it is created and refuses a server that cannot return
prompt log-probs, naming the setting to change.

Every request has a timeout; connection errors, timeouts, 408/409/429/5xx and malformed
bodies are retried with exponential backoff (honouring ``Retry-After``), other errors
(a 400 for a prompt over the context, say) are not. After the last attempt the call
raises :class:`BackendCallError` naming the error class, which the search workload
records on the item. Requests in flight are bounded per client, across threads.
"""

from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import openai

from reer_assets.backends.config import PREFILL_MODES, BackendSpec  # noqa: F401 (PREFILL_MODES re-exported)
from reer_assets.backends.scored_span import encode, pick_prompt_logprobs, render, score_tokens
from reer_assets.core.protocols import Completion, GenerationRequest, ScoreRequest, ScoreResult
from reer_assets.settings import secret

T = TypeVar("T")
RETRY_STATUS = {408, 409, 425, 429}


class BackendCallError(RuntimeError):
    """A model-server call that failed for good; ``error_class`` is recorded with the item."""

    def __init__(self, error_class: str, attempts: int, detail: str):
        super().__init__(f"{error_class} after {attempts} attempt(s): {detail}")
        self.error_class = error_class
        self.attempts = attempts


class ScorerConfigError(RuntimeError):
    """The configured server cannot act as a scorer."""


class MalformedResponse(ValueError):
    """A 200 response whose body is not what the protocol promises (truncated, missing fields)."""


def error_class(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"http_{exc.status_code}"
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection_error"
    if isinstance(exc, (MalformedResponse, json.JSONDecodeError, openai.APIResponseValidationError)):
        return "malformed_response"
    return type(exc).__name__


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in RETRY_STATUS or exc.status_code >= 500
    return isinstance(exc, (openai.APIConnectionError, MalformedResponse, json.JSONDecodeError,
                            openai.APIResponseValidationError))


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


@dataclass
class Usage:
    """Counters across all calls of a client; safe to read for metadata (no secrets)."""

    requests: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class OpenAIClient:
    """The SDK client plus retries, a bound on requests in flight, and usage counters."""

    def __init__(self, settings: BackendSpec, sleep: Callable[[float], None] = time.sleep):
        if not settings.base_url:
            raise ValueError("an OpenAI-compatible client needs a base URL: set REER_<ROLE>_BASE_URL")
        self.settings = settings
        api_key = secret(settings.api_key_env)
        if settings.api_key_env and not api_key:
            raise ValueError(f"the API key variable {settings.api_key_env} named by the config is not set")
        # the SDK's own retries are off: ours classify errors and record what happened
        self.sdk = openai.OpenAI(base_url=settings.base_url, api_key=api_key or "unused",
                                 timeout=settings.timeout_s, max_retries=0)
        self.usage = Usage()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(settings.max_in_flight)
        self._pool = ThreadPoolExecutor(max_workers=settings.max_in_flight, thread_name_prefix="reer-http")
        self._sleep = sleep
        self._model = settings.model

    @property
    def model(self) -> str:
        """The served model name; looked up once (never from inside :meth:`call`, which holds a slot)."""
        if self._model is None:
            models = self.call(lambda: self.sdk.models.list().data)
            if not models:
                raise ScorerConfigError(f"the server at {self.settings.base_url} serves no model")
            self._model = models[0].id
        return self._model

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` with bounded concurrency and retries; raises :class:`BackendCallError` at the end."""
        s = self.settings
        for attempt in range(1, s.max_attempts + 1):
            try:
                with self._slots:
                    result = fn()
                self._count(requests=1)
                return result
            except Exception as exc:  # classified below; anything unknown is permanent
                self._count(requests=1, errors=error_class(exc))
                if not is_transient(exc) or attempt == s.max_attempts:
                    self._count(failures=1)
                    raise BackendCallError(error_class(exc), attempt, str(exc)[:300]) from exc
                self._count(retries=1)
                delay = min(s.backoff_max_s, s.backoff_s * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
                self._sleep(max(delay, min(_retry_after(exc) or 0.0, s.backoff_max_s)))
        raise AssertionError("unreachable")

    def map(self, fn: Callable[[Any], T], items: list[Any]) -> list[T]:
        """``fn`` over ``items`` concurrently (bounded); results in order; the first failure is raised."""
        if len(items) <= 1:
            return [fn(item) for item in items]
        futures = [self._pool.submit(fn, item) for item in items]
        return [future.result() for future in futures]

    def _count(self, requests: int = 0, retries: int = 0, failures: int = 0, errors: str | None = None,
               prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        with self._lock:
            u = self.usage
            u.requests += requests
            u.retries += retries
            u.failures += failures
            u.prompt_tokens += prompt_tokens
            u.completion_tokens += completion_tokens
            if errors:
                u.errors[errors] = u.errors.get(errors, 0) + 1

    def record_usage(self, usage: Any) -> tuple[int, int]:
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0) if usage is not None else 0
        completion = int(getattr(usage, "completion_tokens", 0) or 0) if usage is not None else 0
        self._count(prompt_tokens=prompt, completion_tokens=completion)
        return prompt, completion


def _load_tokenizer(settings: BackendSpec, role: str):
    from transformers import AutoTokenizer

    source = settings.tokenizer or settings.model
    if not source:
        raise ScorerConfigError(f"the {role} over HTTP tokenizes locally: set REER_{role.upper()}_TOKENIZER "
                                f"(or REER_{role.upper()}_MODEL) to the model's local path")
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ScorerConfigError(f"cannot load the tokenizer {source!r} locally ({exc}); set "
                                f"REER_{role.upper()}_TOKENIZER to a local copy of the served model's tokenizer") from exc


def _apportion(total: int, texts: list[str]) -> list[int]:
    """Per-choice token counts from a request's total (servers report usage per request)."""
    if not texts:
        return []
    weights = [max(1, len(t)) for t in texts]
    shares = [total * w // sum(weights) for w in weights]
    shares[-1] += total - sum(shares)
    return shares


class OpenAIGenerator:
    def __init__(self, client: OpenAIClient, model_id: str):
        self.client = client
        self.model_id = model_id
        self._tokenizer = None
        if client.settings.prefill_mode == "completions":
            self._tokenizer = _load_tokenizer(client.settings, "generator")

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        return self.client.map(self._generate_one, requests)

    def _extra(self, request: GenerationRequest) -> dict[str, Any]:
        s = request.sampling
        extra: dict[str, Any] = {"skip_special_tokens": False, "spaces_between_special_tokens": False}
        if s.top_k > 0:
            extra["top_k"] = s.top_k
        if s.banned:
            extra["bad_words"] = list(s.banned)
        return extra

    def _generate_one(self, request: GenerationRequest) -> list[Completion]:
        s, client = request.sampling, self.client
        common = dict(model=client.model, n=request.n, temperature=s.temperature, top_p=s.top_p,
                      max_tokens=s.max_tokens, seed=request.seed, stop=list(s.stop) or None)
        extra = self._extra(request)
        if self._tokenizer is not None:
            prompt = render(self._tokenizer, request.messages, request.prefill)

            def send() -> tuple[Any, list[Any], list[str]]:
                response = client.sdk.completions.create(prompt=prompt, extra_body=extra, **common)
                choices = _choices(response, request.n)
                return response, choices, [c.text or "" for c in choices]
        else:
            messages = list(request.messages)
            if request.prefill:
                messages.append({"role": "assistant", "content": request.prefill})
                extra.update(continue_final_message=True, add_generation_prompt=False)

            def send() -> tuple[Any, list[Any], list[str]]:
                response = client.sdk.chat.completions.create(messages=messages, extra_body=extra, **common)
                choices = _choices(response, request.n)
                return response, choices, [c.message.content or "" for c in choices]

        response, choices, texts = client.call(send)
        prompt_tokens, completion_tokens = client.record_usage(response.usage)
        return [Completion(text, tokens, prompt_tokens, "length" if choice.finish_reason == "length" else "stop")
                for text, tokens, choice in zip(texts, _apportion(completion_tokens, texts), choices)]


def _choices(response: Any, expected: int) -> list[Any]:
    choices = getattr(response, "choices", None)
    if not choices or len(choices) != expected:
        raise MalformedResponse(f"expected {expected} choices, got {len(choices or [])}")
    return sorted(choices, key=lambda c: c.index or 0)


def _prompt_logprobs(choice: Any) -> Any:
    value = getattr(choice, "prompt_logprobs", None)
    if value is None and getattr(choice, "model_extra", None):
        value = choice.model_extra.get("prompt_logprobs")
    return value


class OpenAIScorer:
    """Scores through a vLLM server's completions endpoint with ``prompt_logprobs=0``.

    A step's requests go in one HTTP request (vLLM accepts a list of token-id prompts);
    larger calls are split into chunks of ``batch_size`` sent concurrently.
    """

    def __init__(self, client: OpenAIClient, model_id: str, batch_size: int = 8, check_server: bool = True):
        self.client = client
        self.model_id = model_id
        self.batch_size = batch_size
        self.tokenizer = _load_tokenizer(client.settings, "scorer")
        if check_server:
            self.check_server()

    def check_server(self) -> None:
        """Fail at configuration time against a server without prompt log-probs (a hosted API, say)."""
        hint = (f"the scorer at {self.client.settings.base_url} does not return prompt log-probs (vLLM's "
                "`prompt_logprobs` extension of /v1/completions), which the REER objective needs. Point "
                "REER_SCORER_BASE_URL at a `vllm serve` endpoint, or set REER_SCORER_BACKEND to vllm, hf or embedded")
        ids = encode(self.tokenizer, "a b")
        try:
            self._score_chunk([(ids, 1)])
        except BackendCallError as exc:
            if exc.error_class.startswith("http_4") or exc.error_class == "malformed_response":
                raise ScorerConfigError(f"{hint} (server answered {exc})") from exc
            raise

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        encoded = [score_tokens(self.tokenizer, r) for r in requests]
        chunks = [encoded[i : i + self.batch_size] for i in range(0, len(encoded), self.batch_size)]
        results: list[ScoreResult] = []
        for chunk_results in self.client.map(self._score_chunk, chunks):
            results.extend(chunk_results)
        return results

    def _score_chunk(self, chunk: list[tuple[list[int], int]]) -> list[ScoreResult]:
        client = self.client
        model = client.model  # resolved outside call(): a lookup inside would wait for its own slot

        def send() -> tuple[Any, list[ScoreResult]]:
            response = client.sdk.completions.create(
                model=model, prompt=[ids for ids, _ in chunk], max_tokens=1, temperature=0.0,
                extra_body={"prompt_logprobs": 0})
            try:
                results = [ScoreResult(pick_prompt_logprobs(ids, first, _prompt_logprobs(choice)), context_tokens=first)
                           for (ids, first), choice in zip(chunk, _choices(response, len(chunk)))]
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise MalformedResponse(str(exc)) from exc
            return response, results

        response, results = client.call(send)
        client.record_usage(response.usage)
        return results
