"""Helpers shared by the reliability tests: a tiny domain, a fresh instance folder per scenario,
real ``dagster asset materialize`` runs in their own process groups, and readers for what a
run left behind (event log, Parquet, lineage).

Every run here is a separate OS process with its own ``DAGSTER_HOME`` (a temporary folder
holding a copy of the project's ``dagster_home/dagster.yaml``), the ``test`` profile and a
domains file of one small domain, so the tests exercise the same path as ``make ui`` or a
backfill, and can kill, race or inspect it from outside.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DAGSTER = str(BIN / "dagster")
DOMAIN = "tiny"
# one step after another in the run's own process: no executor subprocess per step (cheaper,
# and the whole run is one process group with its Pipes workload)
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}
ROLE_PREFIXES = ("REER_GENERATOR_", "REER_SCORER_")


def tiny_pieces(count: int = 3) -> list[dict[str, Any]]:
    """The shortest English bundled pieces that come with their request (so synthesized_queries
    needs no model), in corpus order."""
    from reer_assets import data

    pieces = [p for p in data.corpus() if p.get("request_given") and p["language"] == "en"]
    chosen = {p["id"] for p in sorted(pieces, key=lambda p: len(p["text"]))[:count]}
    assert len(chosen) == count, f"only {len(pieces)} given-request English pieces"
    return [p for p in pieces if p["id"] in chosen]


def write_domains(folder: Path, pieces: Iterable[dict[str, Any]], domains: Iterable[str] = (DOMAIN,),
                  extra: str = "") -> Path:
    """A domains file whose domains each read ``pieces`` (JSONL, generic reader) plus their inbox."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "pieces.jsonl", "w", encoding="utf-8") as handle:
        for p in pieces:
            handle.write(json.dumps({"id": p["id"], "title": p["title"], "request": p["request"], "text": p["text"],
                                     "language": p["language"]}, ensure_ascii=False) + "\n")
    lines = ["domains:"]
    for name in domains:
        lines += [f"  {name}:", "    languages: [en, zh]", "    sources:", "      - reader: generic",
                  "        path: pieces.jsonl"]
    path = folder / "domains.yaml"
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return path


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def new_home(root: Path, name: str) -> Path:
    """A fresh instance folder with the project's instance config (pools and their limits)."""
    home = root / name
    home.mkdir(parents=True)
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    return home


def run_env(home: Path, domains_file: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(ROLE_PREFIXES) and k not in ("REER_LINEAGE_DB", "REER_PROFILE", "REER_DOMAINS_FILE")}
    env.update({"DAGSTER_HOME": str(home), "REER_PROFILE": "test", "REER_DOMAINS_FILE": str(domains_file),
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                "PYTHONUNBUFFERED": "1", "DAGSTER_DISABLE_TELEMETRY": "1"})
    env.update(extra or {})
    return env


def fault_server_env(server, tokenizer: Path, max_attempts: int = 2, **extra: str) -> dict[str, str]:
    """Generator and scorer on the openai backend against a :class:`FaultServer`.

    The served model is named (``fake-model``, what the fault server lists): with the name left
    to be looked up, an openai scorer with ``MAX_IN_FLIGHT=1`` deadlocks on its first call (the
    lookup runs inside a request that already holds the only in-flight slot; see docs/reliability.md).
    """
    env = {}
    for role in ("GENERATOR", "SCORER"):
        env.update({f"REER_{role}_BACKEND": "openai", f"REER_{role}_BASE_URL": server.base_url,
                    f"REER_{role}_MODEL": "fake-model",
                    f"REER_{role}_TOKENIZER": str(tokenizer), f"REER_{role}_MAX_ATTEMPTS": str(max_attempts),
                    f"REER_{role}_TIMEOUT_S": "30"})
        env.update({f"REER_{role}_{k}": v for k, v in extra.items()})
    return env


def materialize_command(select: str, partition: str | None = DOMAIN, config: dict | None = None,
                        in_process: bool = True) -> list[str]:
    """``dagster asset materialize`` of ``select``; ``in_process=False`` keeps the default executor
    (a subprocess per step, with its compute logs), as ``dagster dev`` runs it."""
    run_config = {**(IN_PROCESS if in_process else {}), **({"ops": config} if config else {})}
    command = [DAGSTER, "asset", "materialize", "-m", "reer_assets.definitions", "--select", select,
               "--config-json", json.dumps(run_config)]
    return command + (["--partition", partition] if partition else [])


@dataclass
class Run:
    returncode: int
    log: str
    seconds: float
    rusage_maxrss_kb: int = 0


def start(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """A process in its own session (so its whole group, Pipes workload included, can be killed)."""
    handle = open(log_path, "wb")
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT,
                            start_new_session=True)


def finish(process: subprocess.Popen, log_path: Path, timeout: float, started: float) -> Run:
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        raise AssertionError(f"run did not finish in {timeout}s:\n{log_tail(log_path)}")
    return Run(process.returncode, log_path.read_text(errors="replace"), time.monotonic() - started)


def finish_measured(process: subprocess.Popen, log_path: Path, timeout: float, started: float) -> Run:
    """Like :func:`finish`, reaping the process with ``wait4`` to read *its own* peak RSS (KiB),
    which ``getrusage(RUSAGE_CHILDREN)`` cannot give once other children have run."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:
            kill_group(process)
            raise AssertionError(f"run did not finish in {timeout}s:\n{log_tail(log_path)}")
        time.sleep(0.05)  # wait: a polling interval between reads of the log, not a wait for a moment
    return Run(process.returncode, log_path.read_text(errors="replace"), time.monotonic() - started, usage.ru_maxrss)


def materialize(home: Path, env: dict[str, str], select: str, partition: str | None = DOMAIN,
                config: dict | None = None, timeout: float = 240.0, log_name: str | None = None,
                measure: bool = False, in_process: bool = True) -> Run:
    """``dagster asset materialize`` in a subprocess; the result carries its exit code and log
    (and with ``measure``, its peak RSS)."""
    log_path = home.parent / (log_name or f"{home.name}-{select.replace(',', '+')}-{time.monotonic_ns()}.log")
    started = time.monotonic()
    process = start(materialize_command(select, partition, config, in_process), env, log_path)
    return (finish_measured if measure else finish)(process, log_path, timeout, started)


def drive(home: Path, env: dict[str, str], steps: list[dict[str, Any]], timeout: float = 240.0,
          log_name: str | None = None) -> Run:
    """Several materialisations, one after another, in one subprocess (``tests/reliability/driver.py``);
    each is a real run of the instance at ``home``. ``steps``: ``{"select", "partition"?, "config"?}``."""
    log_path = home.parent / (log_name or f"{home.name}-drive-{time.monotonic_ns()}.log")
    started = time.monotonic()
    process = start([sys.executable, "-m", "tests.reliability.driver", json.dumps(steps)], env, log_path)
    return finish(process, log_path, timeout, started)


def driven_runs(run: Run) -> list[dict[str, Any]]:
    return [json.loads(line.split("DRIVER ", 1)[1]) for line in run.log.splitlines() if line.startswith("DRIVER ")]


def assert_driven_ok(run: Run, steps: int) -> list[str]:
    """Every step of a :func:`drive` succeeded; their run ids."""
    done = driven_runs(run)
    assert run.returncode == 0 and len(done) == steps and all(d["success"] for d in done), run.log[-8000:]
    return [d["run_id"] for d in done]


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process and everything in its group (the run and its Pipes workload)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def group_alive(pgid: int, grace_s: float = 10.0) -> bool:
    """Whether any process of group ``pgid`` is still there after ``grace_s`` (killed children are
    reaped by init a moment after their parent)."""
    deadline = time.monotonic() + grace_s
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        if time.monotonic() > deadline:
            return True
        time.sleep(0.05)  # wait: a polling interval (bounded by grace_s)


def log_tail(path: Path, chars: int = 6000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def assert_ok(run: Run) -> None:
    assert run.returncode == 0 and "RUN_SUCCESS" in run.log, run.log[-8000:]


# --- reading back what runs left --------------------------------------------------------------------

def instance_for(home: Path):
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))


def materializations(home: Path, asset: str, partition: str | None = DOMAIN) -> list[dict[str, Any]]:
    """Metadata of every materialisation of ``asset[partition]``, oldest first, with the run id."""
    import dagster as dg

    instance = instance_for(home)
    try:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None),
            limit=100, ascending=True).records
        out = []
        for record in records:
            meta = record.asset_materialization.metadata
            row = {k: (v.value if hasattr(v, "value") else v) for k, v in meta.items()}
            row["run_id"] = record.run_id
            out.append(row)
        return out
    finally:
        instance.dispose()


def lineage(home: Path, sql: str, params: list | None = None):
    from reer_assets.lib import duckdb_store

    return duckdb_store.query(sql, params, path=home / "lineage.duckdb")


def lineage_tables(home: Path) -> list[str]:
    frame = lineage(home, "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
                          "ORDER BY 1")
    return frame["table_name"].to_list()


def asset_path(home: Path, asset: str, partition: str | None = DOMAIN) -> Path:
    return home / "reer" / "assets" / asset / (partition or "__all__")


def copy_home(source: Path, target: Path) -> Path:
    """A copy of an instance folder (runs, event logs, outputs, lineage) for another scenario."""
    shutil.copytree(source, target)
    return target


@dataclass
class TinyProject:
    """One small domain prepared up to ``synthesized_queries`` (no model needed), to copy per scenario."""

    root: Path
    domains_file: Path
    seed_home: Path
    pieces: list[dict[str, Any]] = field(default_factory=list)

    def home(self, name: str) -> Path:
        return copy_home(self.seed_home, self.root / name)

    def env(self, home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
        return run_env(home, self.domains_file, extra)


def prepare_tiny_project(root: Path, count: int = 3) -> TinyProject:
    pieces = tiny_pieces(count)
    domains_file = write_domains(root / "domains", pieces)
    seed_home = new_home(root, "seed_home")
    run = materialize(seed_home, run_env(seed_home, domains_file), "raw_documents,synthesized_queries",
                      log_name="seed_home.log")
    assert_ok(run)
    return TinyProject(root, domains_file, seed_home, pieces)


TINY_ITEMS = 4


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory) -> TinyProject:
    """Four given-request documents of one domain, materialised up to synthesized_queries once per
    session; each scenario copies it (``tiny_project.home(name)``, names unique per session)."""
    return prepare_tiny_project(tmp_path_factory.mktemp("tiny_project"), TINY_ITEMS)
