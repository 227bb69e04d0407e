"""A loopback HTTP server that answers the Kubernetes API calls dagster-k8s's ``PipesK8sClient`` makes,
and runs each pod's first container as a local process: a stand-in for an API server and a kubelet,
because no Kubernetes API server can run on this machine (Debian ships none, nothing may be downloaded).

What it speaks (core/v1, JSON, the shapes of the Kubernetes API reference):

``POST   /api/v1/namespaces/{ns}/pods``                      create a Pod (201; 409 if the name exists)
``GET    /api/v1/namespaces/{ns}/pods[?fieldSelector=...]``  a PodList (``metadata.name=...`` is honoured)
``GET    /api/v1/namespaces/{ns}/pods/{name}``               a Pod
``GET    /api/v1/namespaces/{ns}/pods/{name}/log``           the container's output, ``timestamps``,
                                                             ``follow`` (until it exits), ``tailLines``
``DELETE /api/v1/namespaces/{ns}/pods/{name}``               stop the container, remove the Pod
``GET    /api/v1/namespaces/{ns}/events``                    an empty EventList (failure diagnostics)

Anything else is a 404 ``Status``; a request without the bearer token (when one is set) a 401 ``Status``.

The "kubelet": a created Pod is Pending with its container ``waiting: ContainerCreating`` until a thread
starts ``command + args`` of the first container in ``workingDir``, with exactly the container's ``env``
(``value`` entries), the keys of the Secrets its ``envFrom`` names (:attr:`FakeKubernetesAPI.secrets`) and
the image's own environment (``image_env``: what an image's ``ENV`` lines would give, such as ``PATH``).
Then it is Running (``ready: true``) and finally Succeeded or Failed with the exit code (``reason``
``Completed``/``Error``, or ``OOMKilled`` after :meth:`FakeKubernetesAPI.kill_container`). stdout and
stderr together are the container's log, one RFC 3339 timestamp per line. The image is not pulled or
used: the command runs on this machine, which is what lets a test run the real workload.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _log_time() -> str:
    """A log line's timestamp as the kubelet writes it (RFC 3339 with nanoseconds)."""
    now = time.time_ns()
    return datetime.fromtimestamp(now // 10**9, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{now % 10**9:09d}Z"


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


@dataclass
class Call:
    method: str
    path: str  # without the query
    query: dict[str, str]
    authorization: str | None


@dataclass
class Pod:
    manifest: dict  # as created, with metadata and status filled in by the server
    process: subprocess.Popen | None = None
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    killed_as: str | None = None  # a reason given by kill_container (OOMKilled)
    lines: list[tuple[str, str]] = field(default_factory=list)  # (timestamp, text) of the container's output
    changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def name(self) -> str:
        return self.manifest["metadata"]["name"]

    @property
    def container(self) -> dict:
        return self.manifest["spec"]["containers"][0]

    def view(self) -> dict:
        """The Pod as the API returns it, its status from the container's state now."""
        container = self.container
        status: dict = {"name": container["name"], "image": container.get("image", ""), "imageID": "",
                        "restartCount": 0, "ready": False, "started": False}
        with self.changed:
            if self.exit_code is not None:
                phase = "Succeeded" if self.exit_code == 0 else "Failed"
                status["state"] = {"terminated": {"exitCode": self.exit_code, "reason": self.reason,
                                                  "message": self.message, "startedAt": self.started_at,
                                                  "finishedAt": self.finished_at}}
            elif self.started_at is not None:
                phase = "Running"
                status.update(ready=True, started=True, state={"running": {"startedAt": self.started_at}})
            else:
                phase = "Pending"
                status["state"] = {"waiting": {"reason": "ContainerCreating"}}
        return {**self.manifest, "status": {"phase": phase, "containerStatuses": [status], "hostIP": "127.0.0.1",
                                            "startTime": self.manifest["metadata"]["creationTimestamp"]}}


class FakeKubernetesAPI:
    """See the module docstring. ``token``: the bearer token every request must carry (None: no check);
    ``image_env``: the environment the image itself would give its containers."""

    def __init__(self, token: str | None = None, image_env: dict[str, str] | None = None,
                 secrets: dict[str, dict[str, str]] | None = None, host: str = "127.0.0.1"):
        self.token = token
        self.image_env = dict(image_env or {})
        self.secrets = dict(secrets or {})  # Secret name -> its keys and values (for envFrom)
        self.pods: dict[tuple[str, str], Pod] = {}
        self.created: list[dict] = []  # every Pod body as it was posted, in order
        self.deleted: list[tuple[str, str]] = []
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer((host, 0), _handler(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeKubernetesAPI":
        self.thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            pods = list(self.pods.values())
        for pod in pods:
            self._stop_container(pod, signal.SIGKILL)
        self.httpd.shutdown()
        self.httpd.server_close()

    def kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig whose current context is this server (and ``namespace``), with the token as the user's."""
        user = {"token": self.token} if self.token else {}
        config = {"apiVersion": "v1", "kind": "Config", "current-context": "fake",
                  "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                  "users": [{"name": "fake", "user": user}],
                  "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}]}
        path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
        path.chmod(0o600)
        return path

    def running(self) -> list[Pod]:
        with self._lock:
            return [p for p in self.pods.values() if p.process is not None and p.process.poll() is None]

    def kill_container(self, name: str, reason: str = "OOMKilled") -> None:
        """SIGKILL pod ``name``'s container as the kernel's OOM killer would: it ends with exit code 137 and
        ``reason`` (what the kubelet reports for an OOM kill)."""
        pod = next(p for p in list(self.pods.values()) if p.name == name)
        with pod.changed:
            pod.killed_as = reason
        self._stop_container(pod, signal.SIGKILL)

    # --- the kubelet ------------------------------------------------------------------------------

    def _run_container(self, pod: Pod) -> None:
        container = pod.container
        env = dict(self.image_env)
        for source in container.get("envFrom") or []:
            env.update(self.secrets.get((source.get("secretRef") or {}).get("name"), {}))
        env.update({e["name"]: e["value"] for e in container.get("env") or [] if "value" in e})
        command = list(container.get("command") or []) + list(container.get("args") or [])
        try:
            process = subprocess.Popen(command, cwd=container.get("workingDir") or "/", env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:  # the kubelet's StartError: the command could not be run
            with pod.changed:
                pod.started_at = pod.finished_at = _now()
                pod.exit_code, pod.reason, pod.message = 128, "StartError", f"failed to start: {exc}"
                pod.changed.notify_all()
            return
        with pod.changed:
            pod.process, pod.started_at = process, _now()
            pod.changed.notify_all()
        for raw in process.stdout:
            with pod.changed:
                pod.lines.append((_log_time(), raw.decode("utf-8", "replace").rstrip("\n")))
                pod.changed.notify_all()
        code = process.wait()
        with pod.changed:
            pod.finished_at = _now()
            if pod.killed_as:
                pod.exit_code, pod.reason = 137, pod.killed_as
            else:
                pod.exit_code = code if code >= 0 else 128 - code
                pod.reason = "Completed" if code == 0 else "Error"
            pod.changed.notify_all()

    def _stop_container(self, pod: Pod, sig: int) -> None:
        process = pod.process
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                pass

    # --- the API --------------------------------------------------------------------------------

    def create(self, namespace: str, body: dict) -> tuple[int, dict]:
        meta = body.setdefault("metadata", {})
        name = meta.get("name")
        if not name or not (body.get("spec") or {}).get("containers"):
            return 422, _status(422, "Invalid", "Pod is invalid: metadata.name and spec.containers are required")
        with self._lock:
            if (namespace, name) in self.pods:
                return 409, _status(409, "AlreadyExists", f'pods "{name}" already exists')
            self.created.append(json.loads(json.dumps(body)))
            meta.update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=_now(), resourceVersion="1")
            body.setdefault("apiVersion", "v1")
            body.setdefault("kind", "Pod")
            pod = Pod(body)
            self.pods[(namespace, name)] = pod
        threading.Thread(target=self._run_container, args=(pod,), daemon=True, name=f"kubelet-{name}").start()
        return 201, pod.view()

    def delete(self, namespace: str, name: str) -> tuple[int, dict]:
        with self._lock:
            pod = self.pods.pop((namespace, name), None)
            if pod is not None:
                self.deleted.append((namespace, name))
        if pod is None:
            return 404, _status(404, "NotFound", f'pods "{name}" not found')
        self._stop_container(pod, signal.SIGTERM)
        return 200, pod.view()

    def stream_log(self, handler: BaseHTTPRequestHandler, pod: Pod, query: dict[str, str]) -> None:
        follow = query.get("follow", "").lower() == "true"  # the Python client sends True as "True"
        stamps = query.get("timestamps", "").lower() == "true"
        tail = int(query["tailLines"]) if query.get("tailLines") else None
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.end_headers()  # no length: the body ends when the connection closes (HTTP/1.0)
        sent = 0
        with pod.changed:
            if tail is not None:
                sent = max(0, len(pod.lines) - tail)
        while True:
            with pod.changed:
                while follow and sent == len(pod.lines) and pod.exit_code is None:
                    pod.changed.wait(timeout=1.0)  # woken by a new line or the end; the timeout only re-checks
                batch, sent = pod.lines[sent:], len(pod.lines)
                done = pod.exit_code is not None or not follow
            try:
                for stamp, text in batch:
                    handler.wfile.write(((f"{stamp} " if stamps else "") + text + "\n").encode())
                handler.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return
            if done and sent == len(pod.lines):
                return


def _handler(api: FakeKubernetesAPI):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def _json(self, code: int, body: dict) -> None:
            payload = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _route(self, method: str) -> None:
            url = urlparse(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            auth = self.headers.get("Authorization")
            with api._lock:
                api.calls.append(Call(method, url.path, query, auth))
            if api.token and auth != f"Bearer {api.token}":
                return self._json(401, _status(401, "Unauthorized", "Unauthorized"))
            parts = [unquote(p) for p in url.path.strip("/").split("/")]
            if parts[:3] != ["api", "v1", "namespaces"] or len(parts) < 5:
                return self._json(404, _status(404, "NotFound", f"the server could not find {url.path}"))
            namespace, kind, rest = parts[3], parts[4], parts[5:]
            if kind == "events" and method == "GET" and not rest:
                return self._json(200, {"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": []})
            if kind != "pods":
                return self._json(404, _status(404, "NotFound", f"the server could not find {url.path}"))
            if method == "POST" and not rest:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                return self._json(*api.create(namespace, body))
            if method == "GET" and not rest:
                selector = query.get("fieldSelector", "")
                wanted = selector.split("=", 1)[1] if selector.startswith("metadata.name=") else None
                with api._lock:
                    pods = [p for (ns, n), p in api.pods.items() if ns == namespace and wanted in (None, n)]
                return self._json(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
                                        "items": [p.view() for p in pods]})
            with api._lock:
                pod = api.pods.get((namespace, rest[0]))
            if method == "DELETE" and len(rest) == 1:
                return self._json(*api.delete(namespace, rest[0]))
            if pod is None:
                return self._json(404, _status(404, "NotFound", f'pods "{rest[0]}" not found'))
            if method == "GET" and len(rest) == 1:
                return self._json(200, pod.view())
            if method == "GET" and rest[1:] == ["log"]:
                if pod.started_at is None:
                    return self._json(400, _status(400, "BadRequest", f'container "{pod.container["name"]}" in pod '
                                                                      f'"{pod.name}" is waiting to start: ContainerCreating'))
                return api.stream_log(self, pod, query)
            return self._json(404, _status(404, "NotFound", f"the server could not find {url.path}"))

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_DELETE(self) -> None:
            self._route("DELETE")

    return Handler
