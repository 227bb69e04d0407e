"""A real HTTP server on 127.0.0.1 that speaks the OpenAI protocol and fails on demand.

Used only for faults a real vLLM cannot be made to produce at will (429, 500, stalls,
truncated bodies). Requests are matched against rules by a marker string in their
body (or a tuple of strings, all present); the first rule that matches applies, and each rule
holds a queue of actions, the last of which repeats. Actions:

``ok``          a well-formed answer (thinking, a ``<refine>`` edit, or prompt log-probs)
``429``         rate limited, with ``Retry-After: 0``
``500`` ``400`` that status with an OpenAI-style error body
``engine_dead`` 500 with the body vLLM's server sends once its engine process died (``EngineDeadError``)
``slow``        sleeps ``slow_s`` before answering ``ok`` (beyond the client's timeout)
``truncated``   status 200 and half a JSON body
``empty``       a completion with empty text
``no_refine``   an edit answer without a ``<refine>`` block
``no_logprobs`` a completion without ``prompt_logprobs`` (what a hosted API answers)

Holding a request open (:meth:`FaultServer.hold`): the n-th request the server receives, or the first
whose body holds a marker, is kept waiting, unanswered, until the test calls ``release()`` on the
returned :class:`Hold` (or, as a bound, ``hold_limit_s`` has passed); ``Hold.arrived`` is set the
moment it arrives. A test can then act (kill the client, say) while the client is surely mid-request,
without guessing when that is. A held request is then answered by its rule's action as usual.

Judge behaviour (chat completions only; see the "judge" section below):

``judge``             a well-formed judge answer built from the request's JSON schema (``response_format``
                      or vLLM's ``structured_outputs.json``): every enum its first value, so a pairwise
                      judge always prefers the answer shown first ("A"); without a schema, a rubric answer
                      embedded in prose
``judge_malformed``   prose with no JSON object in it
``judge_out_of_range`` the schema's answer with every integer score set to 99

Every request is also kept in ``requests`` (path, action, headers, body), so a test can check
what a client sent (an ``Authorization`` header, which item a request belonged to). With
``seeded=True`` a well-formed answer depends on the request's ``seed`` (and on the choice index),
so a run that replays with the same seeds gets the same answers and any other run does not, and
prompt log-probs depend on the whole prompt (so a rewritten thinking changes the score).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

THINKING = ("I should first work out who will read this and what they already know, so that the opening "
            "meets them where they are and the piece does not waste their attention.\n\n"
            "Then I will decide the order of the parts: the concrete scene first, the idea after it, and a "
            "closing line that returns to the scene with something changed.\n</think>")
EDIT = ("The segment is vague about the reader.\n</analyze>\n<refine>\nI should picture one reader, a busy "
        "neighbour reading on a phone, and write the opening for her: short sentences, one clear image.\n</refine>")

# what vLLM's OpenAI server answers (HTTP 500) once its engine-core process has died
ENGINE_DEAD = {"error": {"message": "EngineDeadError: EngineCore encountered an issue. See stack trace (above) for "
                                    "the root cause.", "type": "InternalServerError", "param": None, "code": 500}}


@dataclass
class Rule:
    marker: str | tuple[str, ...]  # a tuple matches a body that holds every one of its strings
    actions: list[str]

    def matches(self, body: str) -> bool:
        markers = (self.marker,) if isinstance(self.marker, str) else self.marker
        return all(m in body for m in markers)


@dataclass
class Request:
    path: str
    action: str
    headers: dict[str, str]  # names in lower case
    body: str


@dataclass(eq=False)
class Hold:
    """One request to hold open: the ``number``-th the server receives (1-based, every path counted),
    or the first whose body holds ``marker`` (a string, or a tuple of strings all present), or the first
    that matches both. Taken by at most one request; a released hold is never taken afterwards."""

    number: int | None = None
    marker: str | tuple[str, ...] | None = None
    arrived: threading.Event = field(default_factory=threading.Event)  # set when the request came in
    released: threading.Event = field(default_factory=threading.Event)
    request: Request | None = None  # the request held

    def matches(self, index: int, body: str) -> bool:
        if self.request is not None or self.released.is_set():
            return False
        if self.number is not None and index != self.number:
            return False
        return self.marker is None or Rule(self.marker, []).matches(body)

    def wait(self, timeout: float | None = None) -> bool:
        """Whether the request arrived within ``timeout`` seconds (a bound, not a measurement)."""
        return self.arrived.wait(timeout)

    def release(self) -> None:
        """Let the held request be answered (or, if none came yet, never hold one)."""
        self.released.set()


@dataclass
class FaultServer:
    host: str = "127.0.0.1"
    slow_s: float = 2.0
    seeded: bool = False
    rules: list[Rule] = field(default_factory=list)
    log: list[tuple[str, str]] = field(default_factory=list)  # (path, action) per request
    requests: list[Request] = field(default_factory=list)  # everything a client sent, in order
    in_flight: int = 0
    max_in_flight_seen: int = 0
    holds: list[Hold] = field(default_factory=list)
    hold_limit_s: float = 600.0  # a held request is answered after this even if never released

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer((self.host, 0), _handler(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.httpd.server_address[1]}/v1"

    def start(self) -> "FaultServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        for hold in list(self.holds):
            hold.release()
        self.httpd.shutdown()
        self.httpd.server_close()

    def on(self, marker: str | tuple[str, ...], *actions: str) -> None:
        with self._lock:
            self.rules.append(Rule(marker, list(actions)))

    def hold(self, number: int | None = None, marker: str | tuple[str, ...] | None = None) -> Hold:
        """Hold the ``number``-th request received (1-based) and/or the first holding ``marker`` open until
        ``release()``; see :class:`Hold`."""
        if number is None and marker is None:
            raise ValueError("hold what: give a request number, a marker or both")
        hold = Hold(number, marker)
        with self._lock:
            self.holds.append(hold)
        return hold

    def next_action(self, body: str) -> str:
        with self._lock:
            for rule in self.rules:
                if rule.matches(body):
                    return rule.actions.pop(0) if len(rule.actions) > 1 else rule.actions[0]
            return "ok"

    def count(self, action: str | None = None, path: str | None = None) -> int:
        return sum(1 for p, a in self.log if (action is None or a == action) and (path is None or path in p))


def _logprob(token: int) -> float:
    return -((token * 7919) % 37) / 10.0


_WORDS = ("harbour", "lantern", "orchard", "ledger", "meadow", "copper", "signal", "pebble", "thistle", "compass",
          "violet", "granary", "ember", "canal", "quarry", "saddle")


def _seed_sentence(seed: int | None, index: int) -> str:
    """A sentence that depends on a request's seed and the choice index."""
    words = " ".join(_WORDS[((int(seed or 0) >> (4 * k)) ^ (index * (k + 3))) % len(_WORDS)] for k in range(4))
    return f"I keep in mind the {words} detail, since it anchors the reader."


def _seeded(text: str, seed: int | None, index: int) -> str:
    """A thinking or edit answer varied by seed and choice: the sentence goes after the first line
    of a thinking and at the start of an edit's ``<refine>`` block."""
    sentence = _seed_sentence(seed, index)
    if "<refine>\n" in text:
        return text.replace("<refine>\n", f"<refine>\n{sentence} ", 1)
    first, sep, rest = text.partition("\n")
    return f"{first} {sentence}{sep}{rest}"


# --- judge: answers for the LLM judge (reer_assets.core.evaluation.judge) --------------------------

JUDGE_REASON = "The fault server always gives this canned reason."


def _judge_value(schema: dict, out_of_range: bool = False):
    """A value that satisfies ``schema`` (the shapes the judge asks for): enums take their first option."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {name: _judge_value(sub, out_of_range) for name, sub in schema.get("properties", {}).items()}
    if kind == "string":
        return JUDGE_REASON[: schema.get("maxLength", len(JUDGE_REASON))]
    if kind == "integer":
        return 99 if out_of_range else (int(schema.get("minimum", 0)) + int(schema.get("maximum", 0))) // 2
    return 0


def _judge_schema(request: dict) -> dict | None:
    fmt = request.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return fmt["json_schema"]["schema"]
    return (request.get("structured_outputs") or {}).get("json")


def _judge_text(request: dict, action: str) -> str:
    if action == "judge_malformed":
        return "I liked this response a lot; I would give it a seven out of ten."
    schema = _judge_schema(request)
    if schema is None:
        return f'Here is my verdict. {json.dumps({"reason": JUDGE_REASON, "score": 6})} I hope it helps.'
    return json.dumps(_judge_value(schema, out_of_range=action == "judge_out_of_range"))


# ---------------------------------------------------------------------------------------------------


def _ok_body(path: str, request: dict, action: str, seeded: bool = False) -> dict:
    usage = {"prompt_tokens": 50, "completion_tokens": 150, "total_tokens": 200}
    if action == "empty":
        usage = {"prompt_tokens": 50, "completion_tokens": 0, "total_tokens": 50}
    if path.endswith("/chat/completions") and action.startswith("judge"):
        choice = {"index": 0, "message": {"role": "assistant", "content": _judge_text(request, action)},
                  "finish_reason": "stop"}
        return {"id": "chatcmpl-judge", "object": "chat.completion", "created": 0, "model": request["model"],
                "choices": [choice], "usage": usage}
    if path.endswith("/chat/completions"):
        prefill = request["messages"][-1]["content"] if request["messages"][-1]["role"] == "assistant" else ""
        text = EDIT if "<analyze>" in prefill else THINKING  # an edit prefill ends with its lead-in + <analyze>
        if action == "no_refine":
            text = "I looked at the segment and found nothing to change."
        if action == "empty":
            text = ""
        texts = [_seeded(text, request.get("seed"), i) if seeded and text in (THINKING, EDIT) else text
                 for i in range(request.get("n") or 1)]
        choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                   for i, t in enumerate(texts)]
        return {"id": "chatcmpl-x", "object": "chat.completion", "created": 0, "model": request["model"],
                "choices": choices, "usage": usage}
    prompts = request["prompt"]
    if prompts and isinstance(prompts[0], int):
        prompts = [prompts]
    choices = []
    for i, ids in enumerate(prompts):
        logprobs = None
        if request.get("prompt_logprobs") is not None and isinstance(ids, list) and action != "no_logprobs":
            salt = sum(ids) % 101 if seeded else 0  # seeded: a token's log-prob depends on its whole prompt
            logprobs = [None] + [{str(t): {"logprob": _logprob(t + salt), "rank": 1, "decoded_token": "x"}}
                                 for t in ids[1:]]
        choices.append({"index": i, "text": "" if action == "empty" else " ok", "finish_reason": "length",
                        "logprobs": None, "prompt_logprobs": logprobs})
    return {"id": "cmpl-x", "object": "text_completion", "created": 0, "model": request["model"],
            "choices": choices, "usage": usage}


def _handler(server: FaultServer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
            self._leave()  # answered: out of flight *before* the client can read the answer and send again
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            try:
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                body = {"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0,
                                                    "owned_by": "tests"}]}
                self._send(200, json.dumps(body).encode())
            else:
                self._send(404, b'{"error": {"message": "not found"}}')

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            action = server.next_action(raw)
            with server._lock:
                server.log.append((self.path, action))
                server.requests.append(Request(self.path, action, {k.lower(): v for k, v in self.headers.items()}, raw))
                server.in_flight += 1
                self._in_flight = True
                server.max_in_flight_seen = max(server.max_in_flight_seen, server.in_flight)
                hold = next((h for h in server.holds if h.matches(len(server.requests), raw)), None)
                if hold is not None:
                    hold.request = server.requests[-1]
            try:
                if hold is not None:
                    hold.arrived.set()
                    hold.released.wait(server.hold_limit_s)
                self._answer(raw, action)
            finally:
                self._leave()

        def _leave(self) -> None:
            with server._lock:
                if getattr(self, "_in_flight", False):
                    self._in_flight = False
                    server.in_flight -= 1

        def _answer(self, raw: str, action: str) -> None:
            if action == "engine_dead":
                self._send(500, json.dumps(ENGINE_DEAD).encode())
                return
            if action in ("429", "500", "400", "408", "503"):
                error = {"error": {"message": f"injected {action}", "type": "injected", "code": int(action)}}
                self._send(int(action), json.dumps(error).encode(), {"Retry-After": "0"} if action == "429" else None)
                return
            if action == "slow":  # a slow model (or a stall past the client's timeout); no test times a kill on it
                time.sleep(server.slow_s)  # wait: the injected slow answer itself (no test times anything on it)
            body = json.dumps(_ok_body(self.path, json.loads(raw), action, server.seeded)).encode()
            if action == "truncated":
                body = body[: len(body) // 2]
            self._send(200, body)

    return Handler
