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

    def client(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address)

    def jobs(self) -> list:
        return self.client().list_jobs()


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


def start_ray_head(root: Path, timeout_s: float = 90.0) -> RayHead:
    temp_dir = Path(tempfile.mkdtemp(prefix="rr", dir="/tmp"))
    port, dashboard = free_port(), free_port()
    low = random.randrange(20000, 40000, 200)
    command = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
               "--port", str(port), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
               "--num-cpus", "2", "--temp-dir", str(temp_dir), "--disable-usage-stats",
               "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
               "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port()),
               "--ray-client-server-port", str(free_port()), "--node-manager-port", str(free_port()),
               "--object-manager-port", str(free_port()), "--min-worker-port", str(low),
               "--max-worker-port", str(low + 199)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("REER_")}
    env.update({"RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"})
    log = root / "ray-head.log"
    handle = open(log, "wb")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT,
                               start_new_session=True)
    head = RayHead(f"http://127.0.0.1:{dashboard}", f"127.0.0.1:{port}", process, temp_dir, log)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"ray start exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            try:
                head.jobs()
                return head
            except Exception:  # noqa: BLE001 (not up yet)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Ray head not ready after {timeout_s:.0f}s:\n{log.read_text()[-4000:]}")
                time.sleep(0.5)  # polling interval while the head comes up (bounded by timeout_s above)
    except BaseException:
        stop_ray_head(head)
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise


@pytest.fixture(scope="session")
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
