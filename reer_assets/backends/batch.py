"""Batch mode: the calls that can wait, sent as one OpenAI batch file instead of live calls.

A role (the generator for query synthesis and the initial rollouts, the judge for judging) runs in batch
mode with ``REER_<ROLE>_BATCH=1`` (:class:`~reer_assets.backends.spec.BackendSpec`'s ``batch``). Its
requests become one JSONL file of ``{custom_id, method, url, body}`` lines, where ``body`` is exactly what
the live call would send, and go to

* the provider's Files and Batches API when the role has a ``base_url`` (:class:`OpenAIBatches`): upload
  the file (``purpose=batch``), create a batch (``completion_window=24h``), poll it through
  ``validating → in_progress → finalizing → completed`` (or ``failed``, ``expired``, ``cancelled``), then
  download its output and error files. The API key is read from the variable ``REER_<ROLE>_API_KEY_ENV``
  names when the client is built and goes only into the request header;
* vLLM's ``run-batch`` entry point on the local model otherwise (:class:`VLLMRunBatch`): one subprocess,
  input file → output file, on this machine's flags (``vllm_server.server_command``'s).

Every request's ``custom_id`` is a content hash of the target (server or model path), the endpoint and the
body, so the same request always has the same id, and results map back by it whatever their order.

**What survives a restart.** Each submission is recorded in lineage (table ``batches``,
``sql/schema/013_batches.sql``) the moment its file is uploaded and again at each change of status, with
its request ids. :meth:`BatchRunner.run` first looks there: a request held by a recorded submission that is
still running is polled, not sent again; one whose submission finished is collected from its files; a
request the provider never answered (an expired, failed or cancelled batch: "missing"), or answered with a
transient error (HTTP 408/409/425/429/5xx), goes into a new submission with only such requests, up to
``max_attempts`` submissions per request and run; one that failed for good (another 4xx) is given up for this
run, as a live call is, and asked again by the next run. Each request's outcome (status, error class,
tokens) is recorded per submission (table ``batch_requests``) when the submission is collected. Killed
between the upload and the batch's creation, the next run finds the batch by its metadata
(``reer_submission``) or creates it from the recorded file: nothing is uploaded or created twice.

The workloads write these two tables themselves (short transactions, retried while another process holds
the DuckDB file; fragments in ``fragments`` mode); it is the one place a workload opens lineage, because a
batch id that only reached the asset after the workload ended would be lost with a killed workload.

``REER_BATCH_POLL_INTERVAL_S`` (default 30) sets how often a provider's batch is polled.
docs/scale.md, "Batch mode".
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import polars as pl

from reer_assets.core.protocols import Completion, GenerationRequest, Message

logger = logging.getLogger(__name__)

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
COMPLETION_WINDOW = "24h"
ACTIVE = ("uploaded", "validating", "in_progress", "finalizing", "cancelling")
TERMINAL = ("completed", "failed", "expired", "cancelled")
RETRY_HTTP = {408, 409, 425, 429}
DEFAULT_POLL_INTERVAL_S = 30.0


def poll_interval_s() -> float:
    """How often a provider's batch is polled: ``REER_BATCH_POLL_INTERVAL_S`` (default 30 s)."""
    raw = os.environ.get("REER_BATCH_POLL_INTERVAL_S")
    try:
        value = float(raw) if raw else DEFAULT_POLL_INTERVAL_S
    except ValueError as exc:
        raise ValueError(f"REER_BATCH_POLL_INTERVAL_S={raw!r} is not a number of seconds") from exc
    if value < 0:
        raise ValueError("REER_BATCH_POLL_INTERVAL_S must not be negative")
    return value


# --- requests and results ---------------------------------------------------------------------------


def request_id(target: str, url: str, body: Mapping[str, Any]) -> str:
    """The ``custom_id`` of a request: a hash of where it goes and everything it asks."""
    blob = json.dumps([target, url, body], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "rq-" + hashlib.sha256(blob.encode("utf-8")).hexdigest()[:40]


@dataclass(frozen=True)
class BatchRequest:
    custom_id: str
    url: str
    body: dict[str, Any]

    def line(self) -> str:
        return json.dumps({"custom_id": self.custom_id, "method": "POST", "url": self.url, "body": self.body},
                          ensure_ascii=False)


@dataclass(frozen=True)
class BatchResult:
    """One request's outcome: the response body when ``ok``, else the error class (as a live call records
    it: ``http_<status>``, ``malformed_response``; or ``batch_expired``/``batch_failed``/``batch_cancelled``
    for a request its batch never answered)."""

    custom_id: str
    ok: bool
    body: dict[str, Any] | None = None
    error_class: str | None = None
    error: str | None = None
    submission_id: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def retryable(self) -> bool:
        """Worth another submission: never answered, or a transient error (as live calls retry)."""
        if self.ok:
            return False
        cls = self.error_class or ""
        if cls.startswith("http_"):
            try:
                status = int(cls[5:])
            except ValueError:
                return True
            return status in RETRY_HTTP or status >= 500
        return True  # missing, batch_expired/failed/cancelled, malformed_response, unknown codes


def _usage(body: Mapping[str, Any] | None) -> tuple[int, int]:
    usage = (body or {}).get("usage") or {}
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def result_of_line(line: Mapping[str, Any], submission_id: str | None = None) -> BatchResult:
    """A line of an output or error file (OpenAI's and vLLM's run-batch share the shape)."""
    custom_id = str(line.get("custom_id"))
    response = line.get("response") or None
    error = line.get("error")
    status = int(response.get("status_code") or 0) if response else 0
    body = response.get("body") if response else None
    if response and status == 200 and not error:
        if not isinstance(body, dict) or not body.get("choices"):
            return BatchResult(custom_id, False, None, "malformed_response", "a 200 response without choices",
                               submission_id)
        prompt, completion = _usage(body)
        return BatchResult(custom_id, True, body, None, None, submission_id, prompt, completion)
    message = None
    if isinstance(error, Mapping):
        inner = error.get("error") if isinstance(error.get("error"), Mapping) else error
        message = str(inner.get("message") or "")[:300]
        code = inner.get("code")
    else:
        message = str(error)[:300] if error else None
        code = None
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        message = message or str(body["error"].get("message") or "")[:300]
    if status:
        cls = f"http_{status}"
    else:
        cls = str(code) if code else "batch_error"
    return BatchResult(custom_id, False, None, cls, message, submission_id)


def parse_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for raw in text.splitlines():
        raw = raw.strip()
        if not raw:
            continue
        try:
            out.append(json.loads(raw))
        except json.JSONDecodeError:
            continue  # a file cut short: its requests count as missing
    return out


# --- lineage: the batches and batch_requests tables -------------------------------------------------

S, I64, B = pl.String, pl.Int64, pl.Boolean
BATCH_COLUMNS: dict[str, pl.DataType] = {
    "id": S, "batch_id": S, "scope": S, "role": S, "transport": S, "target": S, "endpoint": S, "generation": I64,
    "custom_ids": pl.List(pl.String), "request_count": I64, "input_file_id": S, "output_file_id": S,
    "error_file_id": S, "status": S, "completed_count": I64, "failed_count": I64, "errors": S, "collected": B,
    "run_id": S, "partition": S,
}
REQUEST_COLUMNS: dict[str, pl.DataType] = {
    "id": S, "submission_id": S, "batch_id": S, "custom_id": S, "status": S, "error_class": S, "error": S,
    "prompt_tokens": I64, "completion_tokens": I64, "run_id": S, "partition": S,
}


def _pipes_context() -> tuple[str | None, str | None]:
    """The Dagster run id and partition of the workload, when it runs under Pipes."""
    try:
        from dagster_pipes import PipesContext

        if not PipesContext.is_initialized():
            return None, None
        context = PipesContext.get()
        run_id = context.run_id
        try:
            partition = context.partition_key
        except Exception:  # not a partitioned step
            partition = None
        return run_id, partition
    except Exception:  # no Pipes at all (a script, the CLI)
        return None, None


class BatchLedger:
    """Submissions and request outcomes in lineage (``batches``, ``batch_requests``)."""

    def __init__(self, transport: str, target: str, scope: str, role: str, db_path: Path | None = None,
                 mode: str | None = None, run_id: str | None = None, partition: str | None = None):
        self.transport, self.target, self.scope, self.role = transport, target, scope, role
        self.db_path, self.mode = db_path, mode
        pipes_run, pipes_partition = _pipes_context()
        self.run_id = run_id or pipes_run
        self.partition = partition or pipes_partition

    def _write(self, frames: dict[str, pl.DataFrame]) -> None:
        from reer_assets.lib import duckdb_store

        duckdb_store.write_many(frames, self.db_path, mode=self.mode)

    def record(self, submission: dict[str, Any]) -> None:
        self._write({"batches": self._batch_frame(submission)})

    def _batch_frame(self, submission: dict[str, Any]) -> pl.DataFrame:
        row = {name: submission.get(name) for name in BATCH_COLUMNS}
        row.update(run_id=self.run_id, partition=self.partition)
        return pl.DataFrame([row], schema=BATCH_COLUMNS)

    def record_outcomes(self, submission: dict[str, Any], results: Iterable[BatchResult]) -> None:
        """Every request's outcome in the submission, and the submission marked collected: one transaction."""
        rows = []
        for r in results:
            rows.append({"id": f"{submission['id']}:{r.custom_id}", "submission_id": submission["id"],
                         "batch_id": submission.get("batch_id"), "custom_id": r.custom_id,
                         "status": "ok" if r.ok else ("missing" if (r.error_class or "").startswith("batch_")
                                                      else "failed"),
                         "error_class": r.error_class, "error": r.error, "prompt_tokens": r.prompt_tokens,
                         "completion_tokens": r.completion_tokens, "run_id": self.run_id, "partition": self.partition})
        submission["collected"] = True
        self._write({"batches": self._batch_frame(submission),
                     "batch_requests": pl.DataFrame(rows, schema=REQUEST_COLUMNS)})

    def latest(self, ids: Sequence[str]) -> dict[str, tuple[dict[str, Any], str | None]]:
        """For each request id, the latest recorded submission (highest generation) of this transport and
        target that holds it, with the request's recorded outcome there (None until collected)."""
        if not ids:
            return {}
        from reer_assets.lib import duckdb_store

        frame = duckdb_store.query(
            "SELECT b.*, u.cid AS request, r.status AS outcome FROM batches b, "
            "(SELECT id AS sid, unnest(custom_ids) AS cid FROM batches WHERE transport = ? AND target = ?) u "
            "LEFT JOIN batch_requests r ON r.submission_id = u.sid AND r.custom_id = u.cid "
            "WHERE b.id = u.sid AND list_contains(?, u.cid)",
            [self.transport, self.target, list(ids)], path=self.db_path, mode=self.mode)
        best: dict[str, tuple[dict[str, Any], str | None]] = {}
        for row in frame.sort("generation").iter_rows(named=True):
            request, outcome = row.pop("request"), row.pop("outcome")
            row.pop("recorded_at", None)
            best[request] = (row, outcome)  # ascending generation: the last one wins
        return best


# --- transports ---------------------------------------------------------------------------------------


def _retrying(fn: Callable[[], Any], attempts: int, backoff_s: float, backoff_max_s: float,
              sleep: Callable[[float], None]) -> Any:
    """A control call (upload, create, retrieve, download) with the live client's retry rules."""
    from reer_assets.backends.openai_compat import BackendCallError, error_class, is_transient

    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            attempt += 1
            if not is_transient(exc) or attempt >= attempts:
                raise BackendCallError(error_class(exc), attempt, str(exc)[:300]) from exc
            sleep(min(backoff_max_s, backoff_s * 2 ** (attempt - 1)) * (0.5 + random.random() / 2))


class OpenAIBatches:
    """A provider's Files and Batches API through the OpenAI SDK (the role's first server)."""

    kind = "openai"

    def __init__(self, spec: Any, sleep: Callable[[float], None] = time.sleep):
        import openai

        from reer_assets.backends.openai_compat import _public_url, server_urls
        from reer_assets.settings import secret

        urls = server_urls(spec.base_url or "")
        if not urls:
            raise ValueError("a batch over the Batches API needs a server: set REER_<ROLE>_BASE_URL")
        api_key = secret(spec.api_key_env)
        if spec.api_key_env and not api_key:
            raise ValueError(f"the API key variable {spec.api_key_env} named by the config is not set")
        self.spec = spec
        self.target = _public_url(urls[0])
        self.sdk = openai.OpenAI(base_url=urls[0], api_key=api_key or "unused", timeout=spec.timeout_s, max_retries=0)
        self._sleep = sleep
        self._model = spec.model

    def _call(self, fn: Callable[[], Any]) -> Any:
        s = self.spec
        return _retrying(fn, s.max_attempts, s.backoff_s, s.backoff_max_s, self._sleep)

    @property
    def model(self) -> str:
        """The model name for the request bodies: the configured one, else the server's first."""
        if self._model is None:
            models = self._call(lambda: self.sdk.models.list().data)
            if not models:
                raise ValueError(f"the server at {self.target} serves no model")
            self._model = models[0].id
        return self._model

    def is_vllm(self) -> bool:
        models = self._call(lambda: self.sdk.models.list().data)
        return any(getattr(m, "owned_by", None) == "vllm" for m in models)

    def upload(self, submission_id: str, data: bytes) -> str:
        made = self._call(lambda: self.sdk.files.create(file=(f"{submission_id}.jsonl", data, "application/jsonl"),
                                                        purpose="batch"))
        return made.id

    def create(self, submission_id: str, input_file_id: str, endpoint: str) -> dict[str, Any]:
        batch = self._call(lambda: self.sdk.batches.create(
            input_file_id=input_file_id, endpoint=endpoint, completion_window=COMPLETION_WINDOW,
            metadata={"reer_submission": submission_id}))
        return self._state(batch)

    def find(self, submission_id: str) -> dict[str, Any] | None:
        """A batch created for this submission whose id never reached lineage (killed right after creating it)."""
        page = self._call(lambda: self.sdk.batches.list(limit=100))
        for batch in getattr(page, "data", []) or []:
            if (getattr(batch, "metadata", None) or {}).get("reer_submission") == submission_id:
                return self._state(batch)
        return None

    def poll(self, batch_id: str) -> dict[str, Any]:
        return self._state(self._call(lambda: self.sdk.batches.retrieve(batch_id)))

    def read(self, file_id: str) -> str:
        return self._call(lambda: self.sdk.files.content(file_id).text)

    @staticmethod
    def _state(batch: Any) -> dict[str, Any]:
        counts = getattr(batch, "request_counts", None)
        errors = getattr(batch, "errors", None)
        error_list = [{"code": getattr(e, "code", None), "message": getattr(e, "message", None),
                       "line": getattr(e, "line", None)} for e in (getattr(errors, "data", None) or [])]
        return {"batch_id": batch.id, "status": batch.status, "output_file_id": getattr(batch, "output_file_id", None),
                "error_file_id": getattr(batch, "error_file_id", None),
                "completed_count": getattr(counts, "completed", None) if counts else None,
                "failed_count": getattr(counts, "failed", None) if counts else None,
                "errors": json.dumps(error_list) if error_list else None}


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the parent dies (a killed workload leaves no engine behind)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class VLLMRunBatch:
    """vLLM's ``run-batch`` on the role's local model: one engine start per submission."""

    kind = "vllm-run-batch"

    def __init__(self, spec: Any, role: str, folder: Path):
        from reer_assets.backends.config import resolve_model_path

        local = dataclasses.replace(spec, backend="vllm")
        self.model_path, self.model_id = resolve_model_path(local, role)
        self.target = self.model_path
        self.model = f"reer-{role}"  # the served name the request bodies carry
        self.spec = spec
        self.folder = Path(folder)

    def command(self, input_path: Path, output_path: Path) -> list[str]:
        from reer_assets.backends.vllm_server import cpu_executor_args, on_cpu

        command = [sys.executable, "-m", "vllm.entrypoints.openai.run_batch", "-i", str(input_path),
                   "-o", str(output_path), "--model", self.model_path, "--served-model-name", self.model,
                   "--seed", "0", "--disable-log-stats"]
        if on_cpu():  # the flags vllm_server.server_command uses on this build (float32, eager, whole prefills)
            command += ["--dtype", "float32", "--enforce-eager", "--no-enable-chunked-prefill",
                        "--gpu-memory-utilization", str(self.spec.gpu_memory_utilization or 0.1), *cpu_executor_args()]
        elif self.spec.gpu_memory_utilization:
            command += ["--gpu-memory-utilization", str(self.spec.gpu_memory_utilization)]
        return command

    def paths(self, submission_id: str) -> tuple[Path, Path, Path]:
        base = self.folder / submission_id
        return base.with_suffix(".input.jsonl"), base.with_suffix(".output.jsonl"), base.with_suffix(".log")

    def run(self, submission_id: str) -> tuple[bool, str | None]:
        """Run the recorded input file; (whether it finished with an output file, why not)."""
        from reer_assets.core.atomic_write import fsync_dir

        input_path, output_path, log_path = self.paths(submission_id)
        if output_path.exists():
            return True, None  # finished by an earlier process that died before recording it
        if not input_path.exists():
            return False, f"the input file {input_path} is gone"
        tmp = output_path.with_name(f".{output_path.name}.{os.getpid()}.tmp")
        with open(log_path, "ab") as handle:
            from reer_assets.backends.vllm_server import cpu_executor_env, on_cpu

            process = subprocess.Popen(self.command(input_path, tmp), stdout=handle, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
                                       env={**os.environ, **cpu_executor_env()} if on_cpu() else None)
            try:
                code = process.wait()
            except BaseException:
                process.kill()
                process.wait()
                raise
        if code != 0 or not tmp.exists():
            tmp.unlink(missing_ok=True)
            tail = log_path.read_text(errors="replace")[-600:] if log_path.exists() else ""
            return False, f"run-batch exited with {code}: {tail}"
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, output_path)
        fsync_dir(output_path.parent)
        return True, None


# --- the runner ---------------------------------------------------------------------------------------


@dataclass
class BatchStats:
    submitted: int = 0  # new submissions made by this process
    adopted: int = 0  # recorded submissions (of an earlier process) this process polled or collected
    requests_submitted: int = 0
    resubmitted: int = 0  # requests sent again after a missing or transient result
    polls: int = 0
    results: dict[str, int] = field(default_factory=dict)  # ok / error class -> requests

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class BatchRunner:
    """Submit, poll, collect and resubmit the missing requests; results by ``custom_id``."""

    def __init__(self, transport: Any, ledger: BatchLedger, folder: Path, max_attempts: int = 4,
                 poll_s: float | None = None, log: Callable[[str], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.transport = transport
        self.ledger = ledger
        self.folder = Path(folder)
        self.max_attempts = max(1, max_attempts)
        self.poll_s = poll_interval_s() if poll_s is None else poll_s
        self.log = log or logger.info
        self._sleep = sleep
        self.stats = BatchStats()
        self._mine: set[str] = set()  # the submissions this runner made itself

    @property
    def model(self) -> str:
        return self.transport.model

    def request(self, url: str, body: dict[str, Any]) -> BatchRequest:
        return BatchRequest(request_id(self.transport.target, url, body), url, body)

    def run(self, requests: Sequence[BatchRequest]) -> dict[str, BatchResult]:
        by_url: dict[str, dict[str, BatchRequest]] = defaultdict(dict)
        for r in requests:
            by_url[r.url].setdefault(r.custom_id, r)
        results: dict[str, BatchResult] = {}
        for url, group in by_url.items():
            results.update(self._run(url, group))
        for r in results.values():
            key = "ok" if r.ok else (r.error_class or "failed")
            self.stats.results[key] = self.stats.results.get(key, 0) + 1
        return results

    def _run(self, url: str, by_id: dict[str, BatchRequest]) -> dict[str, BatchResult]:
        done: dict[str, BatchResult] = {}
        tries: Counter[str] = Counter()
        collected_here: set[str] = set()
        while True:
            todo = [i for i in by_id if i not in done]
            if not todo:
                return done
            latest = self.ledger.latest(todo)
            groups: dict[str, list[str]] = defaultdict(list)
            records: dict[str, dict[str, Any]] = {}
            fresh: list[str] = []
            for i in todo:
                found = latest.get(i)
                if found is None:
                    fresh.append(i)
                    continue
                record, outcome = found
                if record["id"] in collected_here or (record.get("collected") and outcome != "ok"):
                    fresh.append(i)  # collected and not answered: (re)submit, as a rerun of a live call asks again
                    continue
                groups[record["id"]].append(i)
                records[record["id"]] = record
            for sid, ids in groups.items():
                record = records[sid]
                if sid not in self._mine:
                    self.stats.adopted += 1
                    self.log(f"batch: resuming recorded submission {sid} ({record.get('batch_id') or 'not created'}, "
                             f"{record['status']}) for {len(ids)} request(s)")
                record = self._finish(record)
                outcomes = self._collect(record)
                collected_here.add(sid)
                for i in ids:
                    tries[i] += 1
                    r = outcomes[i]
                    if r.ok or not r.retryable or tries[i] >= self.max_attempts:
                        done[i] = r
            if groups:
                continue  # look again: what is left goes into a new submission
            resend = [i for i in fresh if tries[i]]
            self.stats.resubmitted += len(resend)
            self._submit(url, [by_id[i] for i in fresh], latest)

    def _submit(self, url: str, requests: list[BatchRequest],
                latest: Mapping[str, tuple[dict[str, Any], str | None]]) -> None:
        generation = 1 + max((latest[r.custom_id][0]["generation"] or 0 for r in requests if r.custom_id in latest),
                             default=0)
        ids = sorted(r.custom_id for r in requests)
        sid = "bs-" + hashlib.sha256(json.dumps([self.transport.target, url, generation, ids]).encode()).hexdigest()[:32]
        record: dict[str, Any] = {
            "id": sid, "batch_id": None, "scope": self.ledger.scope, "role": self.ledger.role,
            "transport": self.transport.kind, "target": self.transport.target, "endpoint": url,
            "generation": generation, "custom_ids": ids, "request_count": len(ids), "status": "uploaded",
            "collected": False}
        data = "".join(r.line() + "\n" for r in sorted(requests, key=lambda r: r.custom_id)).encode("utf-8")
        self._mine.add(sid)
        self.stats.submitted += 1
        self.stats.requests_submitted += len(ids)
        if self.transport.kind == "openai":
            record["input_file_id"] = self.transport.upload(sid, data)
            self.ledger.record(record)  # from here a restart creates the batch from this file, never uploads again
            record.update(self.transport.create(sid, record["input_file_id"], url))
        else:
            from reer_assets.core.atomic_write import atomic_write_text

            input_path, _, _ = self.transport.paths(sid)
            atomic_write_text(input_path, data.decode("utf-8"))
            record.update(input_file_id=str(input_path), batch_id=f"local-{sid}", status="in_progress")
        self.ledger.record(record)
        self.log(f"batch: submitted {sid} ({record['batch_id']}) with {len(ids)} request(s) to "
                 f"{self.transport.kind} ({url}), generation {generation}")

    def _finish(self, record: dict[str, Any]) -> dict[str, Any]:
        """Wait for a submission to reach a terminal status, recording each change."""
        if record["status"] in TERMINAL:
            return record
        if self.transport.kind != "openai":
            ok, why = self.transport.run(record["id"])
            record.update(status="completed" if ok else "failed",
                          output_file_id=str(self.transport.paths(record["id"])[1]) if ok else None,
                          errors=json.dumps([{"code": "run_batch_failed", "message": why}]) if why else None)
            self.ledger.record(record)
            return record
        if not record.get("batch_id"):  # uploaded, then killed before the batch id was recorded
            found = self.transport.find(record["id"])
            record.update(found or self.transport.create(record["id"], record["input_file_id"], record["endpoint"]))
            self.ledger.record(record)
        last = record["status"]
        while record["status"] not in TERMINAL:
            self._sleep(self.poll_s)  # polling interval (REER_BATCH_POLL_INTERVAL_S)
            record.update(self.transport.poll(record["batch_id"]))
            self.stats.polls += 1
            if record["status"] != last:
                self.ledger.record(record)
                self.log(f"batch: {record['batch_id']} {last} -> {record['status']}")
                last = record["status"]
        return record

    def _collect(self, record: dict[str, Any]) -> dict[str, BatchResult]:
        lines: list[dict[str, Any]] = []
        if self.transport.kind == "openai":
            from reer_assets.backends.openai_compat import BackendCallError

            for file_id in (record.get("output_file_id"), record.get("error_file_id")):
                if not file_id:
                    continue
                try:
                    lines += parse_lines(self.transport.read(file_id))
                except BackendCallError as exc:
                    if not exc.error_class.startswith("http_4"):
                        raise
                    self.log(f"batch: file {file_id} of {record.get('batch_id')} is gone ({exc.error_class}): "
                             "its requests count as missing")
        else:
            output = self.transport.paths(record["id"])[1]
            if output.exists():
                lines = parse_lines(output.read_text(encoding="utf-8"))
        results: dict[str, BatchResult] = {}
        for line in lines:
            r = result_of_line(line, record["id"])
            if r.custom_id in (record.get("custom_ids") or []):
                results[r.custom_id] = r
        status = record["status"]
        for cid in record.get("custom_ids") or []:
            if cid not in results:
                cls = "batch_missing" if status == "completed" else f"batch_{status}"
                results[cid] = BatchResult(cid, False, None, cls, f"not answered by batch {record.get('batch_id')} "
                                           f"({status})", record["id"])
        self.ledger.record_outcomes(record, results.values())
        counts = Counter("ok" if r.ok else r.error_class for r in results.values())
        self.log(f"batch: collected {record['id']} ({status}): {dict(counts)}")
        return results


# --- request bodies -----------------------------------------------------------------------------------


def generation_body(request: GenerationRequest, model: str, prompt: str | None = None) -> tuple[str, dict[str, Any]]:
    """(url, body) of one generation, exactly as the live OpenAI generator sends it: chat completions with
    the assistant turn pre-filled (``continue_final_message``), or, given a locally rendered ``prompt``
    (``prefill_mode=completions``), the completions endpoint."""
    s = request.sampling
    body: dict[str, Any] = {"model": model, "n": request.n, "temperature": s.temperature, "top_p": s.top_p,
                            "max_tokens": s.max_tokens, "seed": request.seed}
    if s.stop:
        body["stop"] = list(s.stop)
    body.update(skip_special_tokens=False, spaces_between_special_tokens=False)
    if s.top_k > 0:
        body["top_k"] = s.top_k
    if s.banned:
        body["bad_words"] = list(s.banned)
    if prompt is not None:
        return COMPLETIONS, {**body, "prompt": prompt}
    messages: list[Message] = list(request.messages)
    if request.prefill:
        messages.append({"role": "assistant", "content": request.prefill})
        body.update(continue_final_message=True, add_generation_prompt=False)
    return CHAT, {**body, "messages": messages}


def completions_of(body: Mapping[str, Any], n: int) -> list[Completion]:
    """The ``n`` completions of a response body (chat or completions), token counts shared as live calls do."""
    from reer_assets.backends.openai_compat import MalformedResponse, _apportion

    choices = sorted(body.get("choices") or [], key=lambda c: c.get("index") or 0)
    if len(choices) != n:
        raise MalformedResponse(f"expected {n} choices, got {len(choices)}")
    texts = [((c.get("message") or {}).get("content") if "message" in c else c.get("text")) or "" for c in choices]
    prompt_tokens, completion_tokens = _usage(body)
    return [Completion(text, tokens, prompt_tokens, "length" if c.get("finish_reason") == "length" else "stop")
            for text, tokens, c in zip(texts, _apportion(completion_tokens, texts), choices)]


@dataclass(frozen=True)
class Outcome:
    """One generation request's batch outcome: its completions, or why there are none."""

    completions: list[Completion] | None
    error_class: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.completions is not None


class BatchGenerator:
    """The generator role in batch mode: many :class:`GenerationRequest` as one submission."""

    def __init__(self, runner: BatchRunner, model_id: str, tokenizer: Any = None):
        self.runner = runner
        self.model_id = model_id
        self._tokenizer = tokenizer  # prefill_mode=completions over a provider: the template rendered here

    def requests(self, requests: Sequence[GenerationRequest]) -> list[BatchRequest]:
        out = []
        for request in requests:
            prompt = None
            if self._tokenizer is not None:
                from reer_assets.backends.scored_span import render

                prompt = render(self._tokenizer, request.messages, request.prefill)
            url, body = generation_body(request, self.runner.model, prompt)
            out.append(self.runner.request(url, body))
        return out

    def generate_outcomes(self, requests: Sequence[GenerationRequest]) -> list[Outcome]:
        batch = self.requests(requests)
        results = self.runner.run(batch) if batch else {}
        outcomes = []
        for request, item in zip(requests, batch):
            r = results[item.custom_id]
            if not r.ok:
                outcomes.append(Outcome(None, r.error_class, r.error))
                continue
            try:
                outcomes.append(Outcome(completions_of(r.body or {}, request.n)))
            except ValueError as exc:
                outcomes.append(Outcome(None, "malformed_response", str(exc)[:300]))
        return outcomes

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        """The Generator protocol: every request answered, or :class:`BackendCallError` for the first that is not."""
        from reer_assets.backends.openai_compat import BackendCallError

        out = []
        for outcome in self.generate_outcomes(requests):
            if not outcome.ok:
                raise BackendCallError(outcome.error_class or "batch_error", self.runner.max_attempts,
                                       outcome.error or "no result")
            out.append(outcome.completions)
        return out


# --- the judge ------------------------------------------------------------------------------------------


def judge_body(model: str, messages: list[Message], schema: dict[str, Any], name: str, sampling: Any, seed: int,
               mode: str, local: bool = False) -> dict[str, Any]:
    """One judge call's body, as :class:`~reer_assets.backends.judge.OpenAIJudgeBackend` sends it (and, on
    the local engine, with the regex constraint and top-p the in-process vLLM judge uses)."""
    from reer_assets.core.evaluation.judge import portable_schema, verdict_max_tokens
    from reer_assets.core.evaluation.judge import compact_regex

    top_p = sampling.top_p if (not local or sampling.temperature > 0) else 1.0
    body: dict[str, Any] = {"model": model, "messages": messages, "temperature": sampling.temperature,
                            "top_p": top_p, "max_tokens": verdict_max_tokens(schema, sampling, mode), "seed": seed}
    if mode == "json_schema":
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": name, "schema": portable_schema(schema), "strict": True}}
    elif mode == "vllm_json":
        body["structured_outputs"] = {"json": schema}
    elif mode == "vllm_regex":
        body["structured_outputs"] = {"regex": compact_regex(schema)}
    return body


def _reply(body: Mapping[str, Any]) -> Any:
    from reer_assets.core.evaluation.judge import JudgeReply

    choice = (body.get("choices") or [{}])[0]
    prompt, completion = _usage(body)
    return JudgeReply((choice.get("message") or {}).get("content") or "", prompt, completion,
                      choice.get("finish_reason") or "stop")


class _BatchJudgeBackend:
    """The judge backend of a batch judge: one call is a one-request batch (``judge_one``); the judge's
    :meth:`BatchJudge.judge` sends a whole round of judgments as one submission instead."""

    max_in_flight = 1

    def __init__(self, runner: BatchRunner, model_id: str, structured: str, local: bool):
        self.runner = runner
        self.model_id = model_id
        self.local = local
        self._mode = None if structured == "auto" else structured
        self.structured_fallbacks = 0

    @property
    def structured(self) -> str:
        if self._mode is None:
            self._mode = "vllm_regex" if self.runner.transport.is_vllm() else "json_schema"
        return self._mode

    def request(self, messages: list[Message], schema: dict[str, Any], name: str, sampling: Any, seed: int,
                mode: str) -> BatchRequest:
        return self.runner.request(CHAT, judge_body(self.runner.model, messages, schema, name, sampling, seed, mode,
                                                    self.local))

    def complete(self, messages: list[Message], schema: dict[str, Any], name: str, sampling: Any, seed: int) -> Any:
        from reer_assets.backends.openai_compat import BackendCallError

        mode = self.structured
        request = self.request(messages, schema, name, sampling, seed, mode)
        r = self.runner.run([request])[request.custom_id]
        if not r.ok and r.error_class in ("http_400", "http_422") and mode != "none":
            self._mode, mode = "none", "none"
            self.structured_fallbacks += 1
            request = self.request(messages, schema, name, sampling, seed, mode)
            r = self.runner.run([request])[request.custom_id]
        if not r.ok:
            raise BackendCallError(r.error_class or "batch_error", self.runner.max_attempts, r.error or "no result")
        return _reply(r.body or {})


def _batch_judge_class():
    from reer_assets.core.evaluation.judge import (
        Judge, JudgeOutputError, parse_output, schema_for, schema_name, messages_for)

    class BatchJudge(Judge):
        """A :class:`~reer_assets.core.evaluation.judge.Judge` whose judgments go out in rounds: every
        pending judgment's attempt k in one submission, then the malformed ones' attempt k + 1 (the next
        seed), as the live judge asks again. Cache, records and failure rules are the live judge's."""

        def judge(self, tasks):
            backend: _BatchJudgeBackend = self.backend  # type: ignore[assignment]
            results: list[Any] = [None] * len(tasks)
            pending = []
            for index, task in enumerate(tasks):
                key = self.key(task)
                stored = self.cache.get(key) if self.cache is not None else None
                if stored is not None:
                    from reer_assets.core.evaluation.judge import Judgment

                    judgment = Judgment.from_dict(stored)
                    judgment.cached = True
                    results[index] = judgment
                    continue
                pending.append({"index": index, "task": task, "key": key, "errors": [], "attempts": 0,
                                "prompt_tokens": 0, "completion_tokens": 0, "raw": "", "probe": None,
                                "messages": messages_for(task, self.reason_max_chars),
                                "schema": schema_for(task, self.reason_max_chars), "name": schema_name(task)})
            while pending:
                modes = [p["probe"] or backend.structured for p in pending]
                requests = [backend.request(p["messages"], p["schema"], p["name"], self.sampling,
                                            self.sampling.seed + p["attempts"], mode) for p, mode in zip(pending, modes)]
                outcomes = backend.runner.run(requests)
                following = []
                for p, request, mode in zip(pending, requests, modes):
                    r = outcomes[request.custom_id]
                    self.calls += 1
                    if not r.ok:
                        if r.error_class in ("http_400", "http_422") and mode != "none" and p["probe"] is None:
                            p["probe"] = "none"  # the same request without the constraint, as the live judge asks
                            following.append(p)
                            continue
                        p["attempts"] += 1
                        p["errors"].append(f"call_failed:{r.error_class}")
                        results[p["index"]] = self._finish(p, None)
                        continue
                    if p["probe"] == "none" and backend.structured != "none":
                        backend._mode = "none"  # refused with the constraint, answered without: so from now on
                        backend.structured_fallbacks += 1
                    p["attempts"] += 1
                    reply = _reply(r.body or {})
                    p["prompt_tokens"] += reply.prompt_tokens
                    p["completion_tokens"] += reply.completion_tokens
                    p["raw"] = reply.text
                    try:
                        parsed = parse_output(p["task"], reply.text)
                    except JudgeOutputError as exc:
                        cut = " (cut at max_tokens)" if reply.finish_reason == "length" else ""
                        p["errors"].append(f"malformed_output:{exc.code}{cut}")
                        if p["attempts"] >= self.max_attempts:
                            results[p["index"]] = self._finish(p, None)
                        else:
                            following.append(p)
                        continue
                    results[p["index"]] = self._finish(p, parsed)
                pending = following
            return results

        def _finish(self, p: dict[str, Any], parsed: Any) -> Any:
            task, key = p["task"], p["key"]
            if parsed is None:
                return self._record(task, key, "judge_failed", [], None, p["errors"][-1], p["errors"], p["attempts"],
                                    p["prompt_tokens"], p["completion_tokens"], p["raw"])
            judgment = self._record(task, key, "ok", parsed.scores, parsed.verdict, None, p["errors"], p["attempts"],
                                    p["prompt_tokens"], p["completion_tokens"], p["raw"])
            if self.cache is not None:
                value = judgment.to_dict()
                value.pop("cached")
                self.cache.put_many([(key, value)])
            return judgment

    return BatchJudge


# --- factories --------------------------------------------------------------------------------------


def transport_for(spec: Any, role: str, folder: Path) -> Any:
    """The provider's Batches API when the role has a server, else vLLM's run-batch on its local model."""
    if spec.backend == "openai":
        return OpenAIBatches(spec)
    return VLLMRunBatch(spec, role, folder)


def runner_for(spec: Any, role: str, scope: str, folder: str | os.PathLike, log: Callable[[str], None] | None = None,
               transport: Any = None, **ledger_options: Any) -> BatchRunner:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    transport = transport or transport_for(spec, role, folder)
    ledger = BatchLedger(transport.kind, transport.target, scope, role, **ledger_options)
    return BatchRunner(transport, ledger, folder, max_attempts=spec.max_attempts, log=log)


def batch_model_id(spec: Any, role: str, transport: Any) -> str:
    """The model id recorded for batch results: the served model's (openai) or the local engine's (vllm)."""
    from reer_assets.backends.config import model_id

    if transport.kind == "openai":
        return f"openai:{transport.model}" if role == "judge" else model_id(spec, role)
    return transport.model_id


def batch_generator(spec: Any, scope: str, folder: str | os.PathLike, log: Callable[[str], None] | None = None,
                    **ledger_options: Any) -> BatchGenerator:
    runner = runner_for(spec, "generator", scope, folder, log, **ledger_options)
    tokenizer = None
    if runner.transport.kind == "openai" and spec.prefill_mode == "completions":
        from reer_assets.backends.openai_compat import _load_tokenizer

        tokenizer = _load_tokenizer(spec, "generator")
    return BatchGenerator(runner, batch_model_id(spec, "generator", runner.transport), tokenizer)


def batch_judge(spec: Any, structured: str = "auto", folder: str | os.PathLike | None = None, cache: Any = None,
                sampling: Any = None, log: Callable[[str], None] | None = None, scope: str = "judge",
                ledger_options: Mapping[str, Any] | None = None, **judge_options: Any) -> Any:
    """A judge whose calls go out as batches (``REER_JUDGE_BATCH=1``); ``folder`` holds local batch files."""
    if folder is None:
        from reer_assets.lib import storage

        folder = storage.local_root() / "work" / "batches" / scope
    runner = runner_for(spec, "judge", scope, folder, log, **dict(ledger_options or {}))
    local = runner.transport.kind != "openai"
    if local and structured in ("auto", "json_schema"):
        structured = "vllm_regex"  # the engine's own constraint, as the in-process vLLM judge uses
    backend = _BatchJudgeBackend(runner, batch_model_id(spec, "judge", runner.transport), structured, local)
    return _batch_judge_class()(backend, cache=cache, sampling=sampling, **judge_options)
