"""A loopback stand-in for a provider's Files and Batches API (OpenAI's shape), for the batch-mode tests.

No provider can be reached from the test machine, so this is the one fake allowed there: a real HTTP server
on 127.0.0.1 that the OpenAI SDK talks to unchanged. It implements

``POST /v1/files``                 multipart upload (``purpose=batch``); counted in ``uploads``
``GET  /v1/files/{id}/content``    an uploaded, output or error file
``POST /v1/batches``               create a batch from an uploaded file; counted in ``creates`` (with
                                   ``hold_create``, the answer waits for the test: the batch exists, the
                                   client has not learned its id)
``GET  /v1/batches/{id}``          the batch, moved one status further on each poll (its :class:`Plan`)
``GET  /v1/batches``               the batches, newest first (``metadata`` included)
``GET  /v1/models``                one model
``POST /v1/chat/completions``      a live call, answered at once by ``answer`` (kept in ``live``), for the
                                   calls a batch-mode run still makes live (the search's edit steps)

Each created batch follows the next :class:`Plan` of ``plans`` (the last one repeats): the statuses it shows
on successive polls, then its end (``completed``, ``expired`` after answering ``answered`` requests,
``failed`` validation, ``cancelled``), with per-request HTTP errors (``errors``: a marker found in the
request's body → a status code, written to the error file). A plan with ``hold`` stays ``in_progress`` until
the test sets that event. ``created`` and ``polled`` are set when a batch is created and when it is first
polled, so a test can act at those moments instead of after a sleep. Every request must carry
``Authorization: Bearer <api_key>`` (401 otherwise); headers are kept in ``requests``.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import urlparse

from tests.support.fault_server import _judge_value

SYNTHESIZED = "Write a short essay for a general reader about the scene and the idea in this text."


def default_answer(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """A chat completion: a judge verdict that fits the request's schema, else a synthesized request."""
    schema = (body.get("response_format") or {}).get("json_schema", {}).get("schema") \
        or (body.get("structured_outputs") or {}).get("json")
    text = json.dumps(_judge_value(schema)) if schema else SYNTHESIZED
    n = int(body.get("n") or 1)
    choices = [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
               for i in range(n)]
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": body.get("model"),
            "choices": choices, "usage": {"prompt_tokens": 40, "completion_tokens": 12 * n, "total_tokens": 40 + 12 * n}}


@dataclass
class Plan:
    statuses: tuple[str, ...] = ("in_progress", "finalizing")  # shown on the polls after "validating"
    end: str = "completed"  # completed | expired | failed | cancelled
    answered: int | None = None  # expired/cancelled: how many requests (in file order) were answered first
    errors: dict[str, int] = field(default_factory=dict)  # marker in the body -> HTTP status in the error file
    hold: threading.Event | None = None  # while unset, the batch stays in_progress


@dataclass
class FakeBatchesAPI:
    api_key: str = "sk-fake-batch-key"
    model: str = "fake-model"
    plans: list[Plan] = field(default_factory=lambda: [Plan()])
    answer: Callable[[str, dict[str, Any]], dict[str, Any]] = default_answer
    host: str = "127.0.0.1"
    # while set to an unset event, a create makes its batch and then keeps the answer back until the event is set
    hold_create: threading.Event | None = None
    hold_limit_s: float = 600.0  # a held answer goes out after this even if never released (a bound)

    def __post_init__(self) -> None:
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []  # batch ids, oldest first
        self.uploads = 0
        self.creates = 0
        self.polls = 0
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path, headers)
        self.live: list[dict[str, Any]] = []  # bodies of live chat completions
        self.created = threading.Event()
        self.polled = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://{self.host}:{self._server.server_address[1]}/v1"

    def start(self) -> "FakeBatchesAPI":
        self._server = ThreadingHTTPServer((self.host, 0), _handler(self))
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # --- what tests read ------------------------------------------------------------------------------

    def input_lines(self, batch_id: str) -> list[dict[str, Any]]:
        data = self.files[self.batches[batch_id]["input_file_id"]]["data"]
        return [json.loads(line) for line in data.decode().splitlines() if line.strip()]

    def batch_list(self) -> list[dict[str, Any]]:
        return [self.batches[b] for b in self.order]

    # --- behaviour ----------------------------------------------------------------------------------

    def _new_file(self, data: bytes, purpose: str, filename: str) -> dict[str, Any]:
        file_id = f"file-{len(self.files) + 1:04d}"
        record = {"id": file_id, "object": "file", "bytes": len(data), "created_at": 0, "filename": filename,
                  "purpose": purpose, "data": data}
        self.files[file_id] = record
        return record

    def _create(self, payload: dict[str, Any]) -> dict[str, Any]:
        plan = self.plans[min(len(self.order), len(self.plans) - 1)]
        batch_id = f"batch_{len(self.order) + 1:04d}"
        batch = {"id": batch_id, "object": "batch", "endpoint": payload["endpoint"], "errors": None,
                 "input_file_id": payload["input_file_id"], "completion_window": payload["completion_window"],
                 "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": 0,
                 "request_counts": {"total": 0, "completed": 0, "failed": 0},
                 "metadata": payload.get("metadata") or {}}
        self.batches[batch_id] = batch
        self.order.append(batch_id)
        batch["_plan"] = plan
        batch["_queue"] = [*plan.statuses, plan.end]
        return batch

    def _advance(self, batch: dict[str, Any]) -> None:
        plan: Plan = batch["_plan"]
        if batch["status"] == "in_progress" and plan.hold is not None and not plan.hold.is_set():
            return
        if batch["status"] in ("completed", "expired", "failed", "cancelled") or not batch["_queue"]:
            return
        batch["status"] = batch["_queue"].pop(0)
        if batch["status"] in ("completed", "expired", "cancelled", "failed"):
            self._finish(batch, plan)

    def _finish(self, batch: dict[str, Any], plan: Plan) -> None:
        lines = self.input_lines(batch["id"])
        batch["request_counts"]["total"] = len(lines)
        if batch["status"] == "failed":
            batch["errors"] = {"object": "list", "data": [{"code": "invalid_request", "message": "the fake refused "
                                                           "this file", "param": None, "line": 1}]}
            return
        out, err = [], []
        for k, line in enumerate(lines):
            request_id = f"req_{batch['id']}_{k}"
            raw = json.dumps(line["body"])
            if plan.answered is not None and k >= plan.answered:
                err.append({"id": f"batch_req_{k}", "custom_id": line["custom_id"], "response": None,
                            "error": {"code": f"batch_{batch['status']}",
                                      "message": "This request could not be executed before the batch ended."}})
                continue
            status = next((code for marker, code in plan.errors.items() if marker in raw), 200)
            if status != 200:
                err.append({"id": f"batch_req_{k}", "custom_id": line["custom_id"],
                            "response": {"status_code": status, "request_id": request_id,
                                         "body": {"error": {"message": f"the fake answered {status}",
                                                            "type": "server_error" if status >= 500 else
                                                            "invalid_request_error"}}}, "error": None})
                continue
            out.append({"id": f"batch_req_{k}", "custom_id": line["custom_id"],
                        "response": {"status_code": 200, "request_id": request_id,
                                     "body": self.answer(line["url"], line["body"])}, "error": None})
        batch["request_counts"].update(completed=len(out), failed=len(err))
        if out:
            batch["output_file_id"] = self._new_file("".join(json.dumps(o) + "\n" for o in out).encode(),
                                                     "batch_output", "output.jsonl")["id"]
        if err:
            batch["error_file_id"] = self._new_file("".join(json.dumps(e) + "\n" for e in err).encode(),
                                                    "batch_output", "errors.jsonl")["id"]


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if not k.startswith("_")}


def _handler(api: FakeBatchesAPI):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def _send(self, status: int, payload: Any, raw: bool = False) -> None:
            data = payload if raw else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream" if raw else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            headers = {k.lower(): v for k, v in self.headers.items()}
            with api._lock:
                api.requests.append((self.command, self.path, headers))
            if headers.get("authorization") != f"Bearer {api.api_key}":
                self._send(401, {"error": {"message": "bad key", "type": "invalid_request_error", "code": 401}})
                return False
            return True

        def do_GET(self) -> None:
            if not self._authorised():
                return
            path = urlparse(self.path).path
            with api._lock:
                if path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": api.model, "object": "model", "owned_by": "fake"}]})
                elif path == "/v1/batches":
                    data = [_public(api.batches[b]) for b in reversed(api.order)]
                    self._send(200, {"object": "list", "data": data, "has_more": False,
                                     "first_id": data[0]["id"] if data else None,
                                     "last_id": data[-1]["id"] if data else None})
                elif path.startswith("/v1/batches/"):
                    batch = api.batches.get(path.rsplit("/", 1)[1])
                    if batch is None:
                        self._send(404, {"error": {"message": "no such batch", "type": "invalid_request_error"}})
                        return
                    api.polls += 1
                    api._advance(batch)
                    api.polled.set()
                    self._send(200, _public(batch))
                elif path.startswith("/v1/files/") and path.endswith("/content"):
                    record = api.files.get(path.split("/")[3])
                    if record is None:
                        self._send(404, {"error": {"message": "no such file", "type": "invalid_request_error"}})
                        return
                    self._send(200, record["data"], raw=True)
                else:
                    self._send(404, {"error": {"message": f"unknown path {path}", "type": "invalid_request_error"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if not self._authorised():
                return
            path = urlparse(self.path).path
            if path == "/v1/files":
                with api._lock:
                    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                        f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + body)
                    fields = {part.get_param("name", header="content-disposition"): part
                              for part in message.iter_parts()}
                    upload = fields["file"]
                    api.uploads += 1
                    record = api._new_file(upload.get_payload(decode=True), fields["purpose"].get_content().strip(),
                                           upload.get_filename() or "upload.jsonl")
                self._send(200, {k: v for k, v in record.items() if k != "data"})
            elif path == "/v1/batches":
                payload = json.loads(body)
                with api._lock:
                    if payload.get("input_file_id") not in api.files:
                        self._send(400, {"error": {"message": "no such file", "type": "invalid_request_error"}})
                        return
                    api.creates += 1
                    answer = _public(api._create(payload))
                api.created.set()
                if api.hold_create is not None:
                    api.hold_create.wait(api.hold_limit_s)  # the batch exists; its id has not reached the client
                self._send(200, answer)
            elif path == "/v1/chat/completions":
                payload = json.loads(body)
                with api._lock:
                    api.live.append(payload)
                self._send(200, api.answer(path, payload))
            else:
                self._send(404, {"error": {"message": f"unknown path {path}", "type": "invalid_request_error"}})

    return Handler
