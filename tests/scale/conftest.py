"""Helpers for the scale tests: a real local Ray head on 127.0.0.1, a tiny domain with a shard count,
and the workload processes of a run (to kill one shard's).

The Ray head is started with explicit free ports for every service it opens (so it never meets
another Ray on the machine), a short temporary folder (Ray's socket paths must stay under 108
characters) and two CPUs; it is stopped at the end of the session even when a test fails, by killing
its process group and every process under it (never ``ray stop``, which stops every Ray head of the
user on the machine). Its environment carries no ``REER_*`` variable, so whatever a Ray job knows of
the engine's settings reached it through the job's runtime env.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import psutil
import pytest

from tests.reliability.conftest import REPO, fault_server_env, free_port

BIN = Path(sys.executable).parent


@dataclass
class RayHead:
    address: str  # the job-submission (dashboard) address
    gcs: str
    process: subprocess.Popen
    temp_dir: Path
    log: Path
    token: str | None = None  # the cluster's token when it runs with RAY_AUTH_MODE=token

    def headers(self) -> dict[str, str] | None:
        return {"Authorization": f"Bearer {self.token}"} if self.token else None

    def client(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address, headers=self.headers())

    def jobs(self) -> list:
        return self.client().list_jobs()

    def nodes(self) -> list[dict]:
        """The cluster's nodes as the dashboard's state API lists them (node_id, state, is_head_node,
        resources_total, ...)."""
        import requests

        answer = requests.get(f"{self.address}/api/v0/nodes", headers=self.headers(), timeout=30)
        answer.raise_for_status()
        return answer.json()["data"]["result"]["result"]


@dataclass
class RayWorker:
    """A second Ray node (``ray start --address``) on this machine: its own process group and temp folder."""

    process: subprocess.Popen
    temp_dir: Path
    log: Path
    resource: str  # the custom resource only this node offers (how a test tells the nodes apart)


def ray_env(token: str | None = None) -> dict[str, str]:
    """The environment of a ``ray start``: no ``REER_*`` variable, and Ray's authentication mode set
    explicitly, so the user's Ray state (a ``~/.ray/auth_token`` left by an earlier ``ray.init()``, which
    makes a node whose mode is unset enforce that token) never decides it: ``disabled``, or ``token``
    with the token in ``RAY_AUTH_TOKEN`` (which Ray reads before any token file)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REER_", "RAY_AUTH_"))}
    env.update({"RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1",
                "RAY_AUTH_MODE": "token" if token else "disabled"})
    if token:
        env["RAY_AUTH_TOKEN"] = token
    return env


_WORKER_RANGES: set[int] = set()  # the worker-port ranges handed out in this process


def _worker_port_range() -> int:
    """The first of 200 worker ports for a Ray node: below the OS's ephemeral range, where ``free_port``'s
    ports come from (a range drawn from 20000-40000 once held 39057, which ``free_port`` then gave the
    runtime-env agent: "worker_ports is trying to use a port number 39057 that is used by other
    components"), and not a range already handed out to another node of this process."""
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768  # Linux's default
    low = random.choice([start for start in range(10000, ephemeral - 200 + 1, 200) if start not in _WORKER_RANGES])
    _WORKER_RANGES.add(low)
    return low


def _node_ports() -> list[str]:
    """Free ports for every service one Ray node opens besides the head's own (so that two nodes on this
    machine, or another Ray of the user, never meet), and a range of worker ports."""
    low = _worker_port_range()
    return ["--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port()),
            "--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
            "--min-worker-port", str(low), "--max-worker-port", str(low + 199)]


def _tree(pgid: int) -> list[psutil.Process]:
    """Every process of group ``pgid`` and everything under them (Ray workers start their own sessions)."""
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                found[proc.pid] = proc
                for child in proc.children(recursive=True):
                    found[child.pid] = child
        except (psutil.Error, ProcessLookupError):
            continue
    return list(found.values())


def stop_ray_head(head: RayHead) -> None:
    procs = _tree(head.process.pid)
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=15)
    try:
        head.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass


def start_ray_head(root: Path, timeout_s: float = 90.0, num_cpus: int = 2, resources: dict | None = None,
                   token: str | None = None, extra_env: dict[str, str] | None = None,
                   extra_args: tuple[str, ...] = (), node_ip: str = "127.0.0.1", attempts: int = 3) -> RayHead:
    """A head on 127.0.0.1 (see the module docstring); ``token``: run it with token authentication.
    ``node_ip``: Ray replaces 127.0.0.1 by the machine's address for the GCS and the raylet; another
    loopback address (127.0.0.2) keeps them on loopback. A start that met a taken port is tried again on
    new ports (:func:`_on_new_ports`)."""
    return _on_new_ports("head", attempts, lambda: _start_ray_head_once(
        root, timeout_s, num_cpus, resources, token, extra_env, extra_args, node_ip))


def _on_new_ports(what: str, attempts: int, start_once):
    """``start_once()``, started again (it draws new ports each time) while it raises :class:`PortTaken`,
    up to ``attempts`` starts; any other failure fails at once."""
    for attempt in range(1, attempts + 1):
        try:
            return start_once()
        except PortTaken as taken:
            if attempt == attempts:
                raise
            print(f"\nRay {what} start {attempt} of {attempts} met a taken port ({taken}); starting it on new ports")
    raise AssertionError("unreachable")


def _start_ray_head_once(root: Path, timeout_s: float, num_cpus: int, resources: dict | None, token: str | None,
                         extra_env: dict[str, str] | None, extra_args: tuple[str, ...], node_ip: str) -> RayHead:
    temp_dir = Path(tempfile.mkdtemp(prefix="rr", dir="/tmp"))
    port, dashboard = free_port(), free_port()
    command = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", node_ip,
               "--port", str(port), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
               "--num-cpus", str(num_cpus), "--temp-dir", str(temp_dir), "--disable-usage-stats",
               "--ray-client-server-port", str(free_port()), *_node_ports(), *extra_args]
    if resources:
        command += ["--resources", json.dumps(resources)]
    env = {**ray_env(token), **(extra_env or {})}
    log = root / "ray-head.log"
    handle = open(log, "wb")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT,
                               start_new_session=True)
    head = RayHead(f"http://127.0.0.1:{dashboard}", f"{node_ip}:{port}", process, temp_dir, log, token)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if (taken := _port_taken(temp_dir, set())) is not None:
                raise PortTaken(taken)
            if process.poll() is not None:
                raise RuntimeError(f"ray start exited with {process.returncode}:\n{log.read_text()[-4000:]}"
                                   f"\n{ray_logs_tail(temp_dir)}")
            try:
                head.jobs()
                return head
            except Exception:  # noqa: BLE001 (not up yet)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Ray head not ready after {timeout_s:.0f}s:\n{log.read_text()[-4000:]}"
                                       f"\n{ray_logs_tail(temp_dir)}")
                time.sleep(0.5)  # wait: a polling interval while the head comes up (bounded by timeout_s above)
    except BaseException:
        stop_ray_head(head)
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise


RAY_LOGS = ("raylet", "gcs_server", "dashboard_agent", "runtime_env_agent", "ray_process_exit")
# what a Ray process logs when a port it was given is taken (the raylet then dies, and `ray start --block`
# goes on waiting without a word: met once in a fresh-clone run as "Ray worker node not alive after 90s")
PORT_TAKEN = ("Failed to start the grpc server", "Address already in use")
SEVERE = re.compile(r"^\[[^\]]* [CFE] \d+ \d+\]|Check failed|Error", re.MULTILINE)


def _session_logs(temp_dir: Path) -> list[Path]:
    """The raylet, GCS and agent logs of the newest session under ``temp_dir``, newest first."""
    try:
        files = [f for f in (temp_dir / "session_latest" / "logs").iterdir() if f.name.startswith(RAY_LOGS)]
        return sorted(files, key=lambda f: f.stat().st_mtime, reverse=True)
    except OSError:
        return []


def _line_at(text: str, at: int, chars: int = 400) -> str:
    """The line of ``text`` holding position ``at`` (at most ``chars`` of it)."""
    end = text.find("\n", at)
    return text[text.rfind("\n", 0, at) + 1:end if end >= 0 else len(text)][:chars]


def ray_logs_tail(temp_dir: Path, chars: int = 800) -> str:
    """Why a node did not come up, from its session's logs (not its ``ray start`` output): each log's
    severe lines and its end, newest log first."""
    parts = []
    for f in _session_logs(temp_dir)[:8]:
        text = f.read_text(errors="replace")
        severe = [_line_at(text, m.start()) for m in SEVERE.finditer(text)][:5]
        parts.append(f"--- {f.name} ---\n" + "".join(f"{line}\n" for line in severe) + f"(end) {text[-chars:]}")
    return "\n".join(parts) or f"(no Ray session logs under {temp_dir})"


class PortTaken(RuntimeError):
    """A Ray process of a starting node found a port it was given taken (``free_port`` only finds a port
    that is free *now*); the node is started again on new ports."""


def _port_taken(temp_dir: Path, before: set[str]) -> str | None:
    """The line of a log that appeared since ``before`` saying a port was taken, if any."""
    for f in _session_logs(temp_dir):
        if f.name in before:
            continue
        text = f.read_text(errors="replace")
        for needle in PORT_TAKEN:
            if needle in text:
                return f"{f.name}: {_line_at(text, text.index(needle))}"
    return None


def start_ray_worker(head: RayHead, root: Path, resource: str, num_cpus: int = 1, timeout_s: float = 90.0,
                     extra_env: dict[str, str] | None = None, extra_args: tuple[str, ...] = (),
                     node_ip: str = "127.0.0.1", own_temp_dir: bool = False, attempts: int = 3) -> RayWorker:
    """A second node joined to ``head`` (``ray start --address``), with its own ports and process group,
    ``num_cpus`` CPUs and the custom resource ``resource``; returns once the head lists it alive. A start
    that met a taken port is tried again on new ports (:func:`_on_new_ports`); any other failure fails at
    once, with the node's logs.

    By default it uses the head's temp folder, as every node of a real cluster uses the same path on its
    own machine: a job's log is read by the dashboard agent of the node that ran it, at the path of the
    *head's* session folder (Ray takes the session folder from the head), so with a folder of its own on
    the same machine the agent reads the head's copy, which holds only the head's first line, and no
    Pipes message of a job on this node would come back. ``own_temp_dir`` gives it its own anyway."""
    return _on_new_ports("worker", attempts, lambda: _start_ray_worker_once(
        head, root, resource, num_cpus, timeout_s, extra_env, extra_args, node_ip, own_temp_dir))


def _start_ray_worker_once(head: RayHead, root: Path, resource: str, num_cpus: int, timeout_s: float,
                           extra_env: dict[str, str] | None, extra_args: tuple[str, ...], node_ip: str,
                           own_temp_dir: bool) -> RayWorker:
    temp_dir = Path(tempfile.mkdtemp(prefix="rw", dir="/tmp")) if own_temp_dir else head.temp_dir
    before = {f.name for f in _session_logs(temp_dir)}
    command = [str(BIN / "ray"), "start", "--address", head.gcs, "--block", "--node-ip-address", node_ip,
               "--num-cpus", str(num_cpus), "--resources", json.dumps({resource: 1}),
               *(["--temp-dir", str(temp_dir)] if own_temp_dir else []),
               "--disable-usage-stats", *_node_ports(), *extra_args]
    env = {**ray_env(head.token), **(extra_env or {})}
    log = root / f"ray-worker-{resource}.log"
    handle = open(log, "wb")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT,
                               start_new_session=True)
    node = RayWorker(process, temp_dir, log, resource)
    deadline = time.monotonic() + timeout_s
    seen: object = "no answer yet"  # the head's last node listing (or why it failed), for the timeout's message
    try:
        while True:
            if (taken := _port_taken(temp_dir, before)) is not None:
                raise PortTaken(taken)
            if process.poll() is not None:
                raise RuntimeError(f"ray start (worker) exited with {process.returncode}:\n{log.read_text()[-4000:]}"
                                   f"\n{ray_logs_tail(temp_dir)}")
            try:
                seen = [(n.get("node_ip"), n["state"], sorted(n.get("resources_total") or {}), n.get("state_message"))
                        for n in head.nodes()]
                if any(n[1] == "ALIVE" and resource in n[2] for n in seen):
                    return node
            except Exception as error:  # noqa: BLE001 (the state API may answer before the node registers)
                seen = repr(error)
            if time.monotonic() > deadline:
                raise RuntimeError(f"Ray worker node not alive after {timeout_s:.0f}s; the head lists {seen}\n"
                                   f"ray start said:\n{log.read_text()[-4000:]}\n{ray_logs_tail(temp_dir)}")
            time.sleep(0.5)  # wait: a polling interval while the node joins (bounded by timeout_s above)
    except BaseException:
        stop_ray_head(node)
        if own_temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)
        raise


# module scope: test_ray_runner alone uses it (test_ray_two_nodes starts its own clusters); a head kept to the end
# of the session idles on a core for the rest of it (about 35 s of CPU over a 14-minute run, by process accounting)
@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    started = time.monotonic()
    head = start_ray_head(root)
    print(f"\nRay head at {head.address} up in {time.monotonic() - started:.1f}s")
    try:
        yield head
    finally:
        stop_ray_head(head)
        shutil.rmtree(head.temp_dir, ignore_errors=True)


def set_shards(domains_file: Path, shards: int, domain: str = "tiny") -> None:
    """Give ``domain`` of a domains file (written by ``write_domains``) a ``shards:`` count."""
    lines = [line for line in domains_file.read_text().splitlines() if not line.startswith("    shards:")]
    at = lines.index(f"  {domain}:") + 1
    lines.insert(at, f"    shards: {shards}")
    domains_file.write_text("\n".join(lines) + "\n")


def workload_processes(name: str = "refinement") -> list[psutil.Process]:
    """The live processes running ``reer_assets.workloads.<name>`` (a subprocess or a Ray job's entrypoint)."""
    out = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if f"reer_assets.workloads.{name}" in cmdline:
            out.append(proc)
    return out


def pipes_extras(proc: psutil.Process) -> dict:
    """The Pipes extras a workload process was started with (decoded from its DAGSTER_PIPES_CONTEXT)."""
    from dagster_pipes import decode_param

    try:
        env = proc.environ()
    except psutil.Error:
        return {}
    raw = env.get("DAGSTER_PIPES_CONTEXT")
    if not raw:
        return {}
    params = decode_param(raw)
    data = params.get("data") or {}
    return {**(data.get("extras") or {}), "__home": env.get("DAGSTER_HOME")}


# --- a domain materialised in this process ------------------------------------------------------------

DOMAIN = "education"  # a partition of the bundled domains; each Project's domains file replaces its sources


class Project:
    """A temporary instance folder; each :meth:`materialize` writes a new domains file (its own path:
    domains files are cached by path) with the given pieces and shard count and materialises the
    domain from raw documents to refined trajectories."""

    def __init__(self, root: Path, server, tokenizer: Path, **role_settings: str):
        self.root, self.step = root, 0
        self.patch = pytest.MonkeyPatch()
        self.patch.setenv("DAGSTER_HOME", str(root / "home"))
        self.patch.setenv("REER_PROFILE", "test")
        self.patch.delenv("REER_LINEAGE_DB", raising=False)
        for name, value in fault_server_env(server, tokenizer, **role_settings).items():
            self.patch.setenv(name, value)
        self.lineage_db = root / "lineage.duckdb"
        self.instance = dg.DagsterInstance.ephemeral()

    def materialize(self, pieces: list[dict], shards: int, runner, config: dict | None = None,
                    names: tuple[str, ...] = ("raw_documents", "synthesized_queries", "refined_trajectories")):
        from reer_assets.definitions import defs
        from reer_assets.defs.resources import LineageResource, ModelBackendResource

        self.step += 1
        folder = self.root / f"domains{self.step}"
        folder.mkdir()
        source = self.root / "pieces.jsonl"  # one source file: a document's id depends on where it was read
        with open(source, "w", encoding="utf-8") as handle:
            for p in pieces:
                handle.write(json.dumps({"id": p["id"], "request": p["request"], "text": p["text"]}) + "\n")
        (folder / "domains.yaml").write_text(
            f"domains:\n  {DOMAIN}:\n    shards: {shards}\n    languages: [en]\n    sources:\n"
            f"      - reader: generic\n        path: {source}\n", encoding="utf-8")
        self.patch.setenv("REER_DOMAINS_FILE", str(folder / "domains.yaml"))
        resources = {"generator": ModelBackendResource.from_env("generator"),
                     "scorer": ModelBackendResource.from_env("scorer"),
                     "lineage": LineageResource(db_path=str(self.lineage_db)), "runner": runner}
        return dg.materialize([defs.get_assets_def(n) for n in names], partition_key=DOMAIN, resources=resources,
                              instance=self.instance, raise_on_error=False,
                              run_config={"ops": {"refined_trajectories": {"config": config}}} if config else None)

    def trajectories(self) -> pl.DataFrame:
        return pl.read_parquet(self.root / "home/reer/assets/refined_trajectories" / DOMAIN / "trajectories.parquet")

    def queries(self) -> pl.DataFrame:
        frame = pl.read_parquet(self.root / "home/reer/assets/synthesized_queries" / DOMAIN / "queries.parquet")
        return frame.filter(pl.col("status") == "accepted")

    def lineage(self, table: str = "trajectories") -> pl.DataFrame:
        from reer_assets.lib import duckdb_store

        return duckdb_store.query(f"SELECT * FROM {table} WHERE partition = ?", [DOMAIN], path=self.lineage_db)

    def checkpoints(self) -> list[Path]:
        return sorted((self.root / "home/reer/work/refined_trajectories" / DOMAIN).glob("*/items/*.json"))

    def finished(self) -> dict[str, str]:
        """Checkpointed items: trajectory id -> query id (a file being renamed into place is skipped)."""
        out = {}
        for path in self.checkpoints():
            try:
                out[path.stem] = json.loads(path.read_text())["query_id"]
            except (OSError, ValueError):
                continue
        return out

    def logs(self, run_id: str) -> list[str]:
        """The run's log messages as Dagster stored them (workload logs arrive through Pipes)."""
        return [entry.user_message for entry in self.instance.all_logs(run_id)]

    def close(self):
        self.instance.dispose()
        self.patch.undo()


def refined_metadata(result) -> dict:
    events = result.asset_materializations_for_node("refined_trajectories")
    return {k: getattr(v, "value", v) for k, v in events[-1].metadata.items()} if events else {}
