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

Several servers per role: ``base_url`` may be a comma-separated list (``REER_<ROLE>_BASE_URL``), all
serving the same model with the same tokenizer. Each request goes to the server with the fewest
requests in flight. A server that refuses connections (or drops them), or fails its health check
(vLLM's ``GET /health``, else ``GET /models``) is set aside and probed again after an exponential
back-off; a request that failed on it with a connection error is sent again at once to another
server without using one of its attempts. Per-server counters (requests, failures, set-asides) are
in :attr:`OpenAIClient.usage` and, through :func:`http_usage`, in the workload summaries.
docs/scale.md, "Many model servers per role".
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import httpx
import openai

from reer_assets.backends.spec import PREFILL_MODES, BackendSpec  # noqa: F401 (PREFILL_MODES re-exported)
from reer_assets.backends.scored_span import encode, pick_prompt_logprobs, render, score_tokens
from reer_assets.core.protocols import Completion, GenerationRequest, ScoreRequest, ScoreResult
from reer_assets.settings import secret

T = TypeVar("T")
log = logging.getLogger(__name__)
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
    """Counters across all calls of a client; safe to read for metadata (no secrets).

    ``servers``: per server URL, ``requests`` sent to it, ``failures`` among them (any error) and
    ``set_asides`` (times it was taken out of rotation); ``failovers``: requests sent again to another
    server at once after a connection error.
    """

    requests: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    servers: dict[str, dict[str, int]] = field(default_factory=dict)
    failovers: int = 0


def server_urls(base_url: str) -> list[str]:
    """The servers of a ``base_url`` setting: one URL or a comma-separated list (order kept, repeats dropped)."""
    urls: list[str] = []
    for part in base_url.split(","):
        url = part.strip().rstrip("/")
        if url and url not in urls:
            urls.append(url)
    return urls


def _public_url(url: str) -> str:
    """A URL without user info (``http://user:pass@host`` -> ``http://host``), for counters and logs."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.split('@', 1)[-1]}" if sep else url


@dataclass
class _Server:
    """One server of a client and its state; guarded by the client's lock."""

    url: str
    sdk: Any
    index: int
    in_flight: int = 0
    aside_until: float | None = None  # monotonic time of its next probe while set aside; None: in rotation
    strikes: int = 0  # set-asides in a row (the back-off exponent)
    checked: bool = False  # health-checked once (several servers only)
    probing: bool = False


class OpenAIClient:
    """The SDK client(s) plus retries, failover between servers, a bound on requests in flight, and usage counters."""

    def __init__(self, settings: BackendSpec, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        if not settings.base_url or not server_urls(settings.base_url):
            raise ValueError("an OpenAI-compatible client needs a base URL: set REER_<ROLE>_BASE_URL")
        self.settings = settings
        api_key = secret(settings.api_key_env)
        if settings.api_key_env and not api_key:
            raise ValueError(f"the API key variable {settings.api_key_env} named by the config is not set")
        # the SDK's own retries are off: ours classify errors and record what happened
        self._servers = [
            _Server(url, openai.OpenAI(base_url=url, api_key=api_key or "unused", timeout=settings.timeout_s,
                                       max_retries=0), k)
            for k, url in enumerate(server_urls(settings.base_url))]
        self.usage = Usage(servers={_public_url(s.url): {"requests": 0, "failures": 0, "set_asides": 0}
                                    for s in self._servers})
        self._lock = threading.Lock()
        self._local = threading.local()
        self._slots = threading.BoundedSemaphore(settings.max_in_flight)
        self._pool = ThreadPoolExecutor(max_workers=settings.max_in_flight, thread_name_prefix="reer-http")
        self._sleep = sleep
        self._clock = clock
        self._model = settings.model

    @property
    def sdk(self) -> Any:
        """The SDK client of the server this thread's request was routed to (inside :meth:`call`), else the first."""
        server = getattr(self._local, "server", None)
        return (server or self._servers[0]).sdk

    @property
    def servers(self) -> list[str]:
        return [s.url for s in self._servers]

    def in_flight(self) -> dict[str, int]:
        """Requests in flight now, per server URL."""
        with self._lock:
            return {_public_url(s.url): s.in_flight for s in self._servers}

    @property
    def _multi(self) -> bool:
        return len(self._servers) > 1

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
        """``fn()`` with bounded concurrency, retries and failover; raises :class:`BackendCallError` at the end.

        ``fn`` reaches its server through :attr:`sdk`, which inside this call is the server the request
        was routed to (the one with the fewest requests in flight).
        """
        s = self.settings
        attempt = failovers = 0
        while True:
            with self._slots:
                server = self._acquire()
                self._local.server = server
                try:
                    result, failed = fn(), None
                except Exception as exc:  # classified below; anything unknown is permanent
                    result, failed = None, exc
                finally:
                    self._local.server = None
                    self._release(server)
            if failed is None:
                self._count(requests=1, server=server)
                self._back_in_rotation(server)
                return result  # type: ignore[return-value]
            exc = failed
            self._count(requests=1, errors=error_class(exc), server=server, server_failed=True)
            down = self._multi and self._is_down(server, exc)
            if down:
                self._set_aside(server, error_class(exc))
                if failovers < len(self._servers) - 1 and self._another_available(server):
                    failovers += 1  # the same request, at once, on another server: no attempt used
                    self._count(failovers=1)
                    continue
            attempt += 1
            if not is_transient(exc) or attempt >= s.max_attempts:
                self._count(failures=1)
                raise BackendCallError(error_class(exc), attempt, str(exc)[:300]) from exc
            self._count(retries=1)
            delay = min(s.backoff_max_s, s.backoff_s * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
            self._sleep(max(delay, min(_retry_after(exc) or 0.0, s.backoff_max_s)))

    # --- routing between servers -------------------------------------------------------------------

    def _acquire(self) -> _Server:
        """The server for the next request: the least loaded checked server in rotation, after probing any
        that are due (never checked, or set aside and past their back-off). With one server, that server;
        with every server set aside and none due, the one due first (the request itself is the probe)."""
        probed: set[int] = set()  # each server is probed at most once per request
        while True:
            probe = None
            with self._lock:
                if not self._multi:
                    ready = self._servers
                else:
                    now = self._clock()
                    due = [srv for srv in self._servers if not srv.probing and srv.index not in probed
                           and (not srv.checked or (srv.aside_until is not None and srv.aside_until <= now))]
                    ready = [srv for srv in self._servers if srv.checked and srv.aside_until is None]
                    if due:
                        probe = due[0]
                        probe.probing = True
                        probed.add(probe.index)
                    elif not ready and not any(srv.probing for srv in self._servers):
                        ready = sorted(self._servers, key=lambda srv: srv.aside_until or 0.0)[:1]
                if probe is None and ready:
                    # fewest in flight; among those, the one sent the fewest requests (sequential calls alternate)
                    sent = self.usage.servers
                    chosen = min(ready, key=lambda srv: (srv.in_flight, sent[_public_url(srv.url)]["requests"],
                                                         srv.index))
                    chosen.in_flight += 1
                    return chosen
            if probe is None:
                time.sleep(0.02)  # every server is being probed by another thread: wait for the answers
                continue
            healthy = self._healthy(probe)
            with self._lock:
                probe.probing, probe.checked = False, True
            if healthy:
                self._back_in_rotation(probe)
            else:
                self._set_aside(probe, "health check failed")

    def _release(self, server: _Server) -> None:
        with self._lock:
            server.in_flight -= 1

    def _another_available(self, server: _Server) -> bool:
        now = self._clock()
        with self._lock:
            return any(srv is not server and (srv.aside_until is None or srv.aside_until <= now or not srv.checked)
                       for srv in self._servers)

    def _is_down(self, server: _Server, exc: BaseException) -> bool:
        """A refused or dropped connection (not a timeout: a slow server is still up), or a 5xx from a
        server whose health check then fails."""
        if isinstance(exc, openai.APIConnectionError) and not isinstance(exc, openai.APITimeoutError):
            return True
        if isinstance(exc, openai.APIStatusError) and exc.status_code >= 500:
            return not self._healthy(server)
        return False

    def _set_aside(self, server: _Server, reason: str) -> None:
        with self._lock:
            now = self._clock()
            if server.aside_until is not None and server.aside_until > now:
                return  # already aside (the other requests it had in flight fail too): one set-aside
            wait = min(self.settings.backoff_max_s, self.settings.backoff_s * 2 ** min(server.strikes, 30))
            server.strikes += 1
            server.aside_until = now + wait
            self.usage.servers[_public_url(server.url)]["set_asides"] += 1
        log.warning("model server %s set aside for %.1fs (%s); %d other server(s)", _public_url(server.url), wait,
                    reason, len(self._servers) - 1)

    def _back_in_rotation(self, server: _Server) -> None:
        if server.aside_until is None and not server.strikes:
            return
        with self._lock:
            was_aside = server.aside_until is not None
            server.aside_until, server.strikes, server.checked = None, 0, True
        if was_aside:
            log.warning("model server %s is back in rotation", _public_url(server.url))

    def _healthy(self, server: _Server) -> bool:
        """vLLM's ``GET /health`` (at the server root) answers 200; a server without it, ``GET /models`` does."""
        timeout = min(5.0, self.settings.timeout_s)
        root = server.url.removesuffix("/v1")
        headers = {"Authorization": f"Bearer {server.sdk.api_key}"} if self.settings.api_key_env else {}
        try:
            response = httpx.get(f"{root}/health", timeout=timeout, headers=headers)
            if response.status_code == 200:
                return True
            if response.status_code not in (404, 405):
                return False
        except httpx.HTTPError:
            return False
        try:
            server.sdk.with_options(timeout=timeout).models.list()
            return True
        except Exception:  # any failure of the fallback check: unhealthy
            return False

    def map(self, fn: Callable[[Any], T], items: list[Any]) -> list[T]:
        """``fn`` over ``items`` concurrently (bounded); results in order; the first failure is raised."""
        if len(items) <= 1:
            return [fn(item) for item in items]
        futures = [self._pool.submit(fn, item) for item in items]
        return [future.result() for future in futures]

    def _count(self, requests: int = 0, retries: int = 0, failures: int = 0, errors: str | None = None,
               prompt_tokens: int = 0, completion_tokens: int = 0, server: _Server | None = None,
               server_failed: bool = False, failovers: int = 0) -> None:
        with self._lock:
            u = self.usage
            u.requests += requests
            u.retries += retries
            u.failures += failures
            u.prompt_tokens += prompt_tokens
            u.completion_tokens += completion_tokens
            u.failovers += failovers
            if errors:
                u.errors[errors] = u.errors.get(errors, 0) + 1
            if server is not None:
                counters = u.servers[_public_url(server.url)]
                counters["requests"] += requests
                counters["failures"] += int(server_failed)

    def record_usage(self, usage: Any) -> tuple[int, int]:
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0) if usage is not None else 0
        completion = int(getattr(usage, "completion_tokens", 0) or 0) if usage is not None else 0
        self._count(prompt_tokens=prompt, completion_tokens=completion)
        return prompt, completion


def http_usage(*backends: Any) -> dict[str, Any]:
    """Per-server counters of the HTTP clients behind some generators/scorers/judges (each client once),
    for a workload summary: ``{"servers": {url: {requests, failures, set_asides}}, "failovers": n}``;
    empty when none of them is an OpenAI-compatible backend."""
    clients = []
    for backend in backends:
        client = getattr(backend, "client", None)
        if isinstance(client, OpenAIClient) and all(client is not c for c in clients):
            clients.append(client)
    if not clients:
        return {}
    servers: dict[str, dict[str, int]] = {}
    failovers = 0
    for client in clients:
        with client._lock:
            failovers += client.usage.failovers
            for url, counters in client.usage.servers.items():
                total = servers.setdefault(url, {"requests": 0, "failures": 0, "set_asides": 0})
                for key, value in counters.items():
                    total[key] += value
    return {"servers": servers, "failovers": failovers}


def _load_tokenizer(settings: BackendSpec, role: str):
    """The served model's tokenizer: read from its files without transformers (and torch) where that is
    sure to tokenize as transformers does (:mod:`light_tokenizer`), else ``AutoTokenizer``."""
    from reer_assets.backends import light_tokenizer

    source = settings.tokenizer or settings.model
    if not source:
        raise ScorerConfigError(f"the {role} over HTTP tokenizes locally: set REER_{role.upper()}_TOKENIZER "
                                f"(or REER_{role.upper()}_MODEL) to the model's local path")
    try:
        return light_tokenizer.load(source)
    except light_tokenizer.NotLight as reason:
        log.debug("the %s's tokenizer %s loads through transformers: %s", role, source, reason)
    from transformers import AutoTokenizer

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
