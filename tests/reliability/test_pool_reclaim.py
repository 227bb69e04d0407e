"""A run whose worker died never blocks a later run, for every pool, and a step that must wait for a
live run says so: the claim hook of ``ReerInstance`` (``dagster_home/dagster.yaml``) and ``reer recover``.

Each scenario holds a pool slot with a real run in another process (``tests/reliability/pool_job.py``,
``dg.materialize`` on a fresh ``DAGSTER_HOME`` with the project's instance config), SIGKILLs it while
it holds the slot, and runs again, with no recovery step in between.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.reliability.conftest import BIN, REPO, finish, instance_for, kill_group, log_tail, new_home, start

pytestmark = pytest.mark.slow

BLOCKED = "Step blocked by limit for pool"


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "DAGSTER_HOME": str(home), "PYTHONUNBUFFERED": "1", "DAGSTER_DISABLE_TELEMETRY": "1"}


def _home(tmp_path: Path, name: str) -> Path:
    home = new_home(tmp_path, name)
    instance_for(home).dispose()  # create the storage before several processes open it
    return home


def _hold(home: Path, pool: str, seconds: float = 600, name: str = "holder",
          mode: str = "in_process") -> tuple[subprocess.Popen, Path]:
    """A run holding ``pool``'s slot (once its marker file, holding the step's pid, exists)."""
    marker, log = home.parent / f"{name}.held", home.parent / f"{name}.log"
    process = start([sys.executable, "-m", "tests.reliability.pool_job", pool, str(marker), str(seconds), mode],
                    _env(home), log)
    deadline = time.monotonic() + 90
    while not marker.exists():
        assert process.poll() is None, log_tail(log)
        assert time.monotonic() < deadline, f"the holder never got the slot:\n{log_tail(log)}"
        time.sleep(0.05)  # wait: a polling interval until the marker file exists
    return process, log


def _started_runs(home: Path) -> list[str]:
    instance = instance_for(home)
    try:
        return [r.run_id for r in instance.get_runs() if r.status.value == "STARTED"]
    finally:
        instance.dispose()


def _blocked_events(instance, run_id: str) -> list[str]:
    import dagster as dg

    return [e.dagster_event.message for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
            if (e.dagster_event.message or "").startswith(BLOCKED)]


def _messages(instance, run_id: str, level: int = logging.INFO) -> list[str]:
    return [e.user_message for e in instance.all_logs(run_id) if e.dagster_event is None and e.level == level]


@pytest.mark.parametrize("pool", ["duckdb", "gpu"])
def test_a_killed_holder_never_blocks_the_next_run(tmp_path, pool):
    import dagster as dg

    from reer_assets.runtime.dagster_internals import pool_holdings

    home = _home(tmp_path, pool)
    holder, _ = _hold(home, pool)
    kill_group(holder)
    [dead] = _started_runs(home)

    @dg.asset(pool=pool, name=f"after_{pool}")
    def after() -> None:
        pass

    instance = instance_for(home)
    try:
        assert [(h.run_id, h.state) for h in pool_holdings(instance)] == [(dead, "claimed")]
        t0 = time.monotonic()
        result = dg.materialize([after], instance=instance)  # execute_in_process, no daemon, no recovery step
        took = time.monotonic() - t0
        assert result.success
        assert _blocked_events(instance, result.run_id) == [], "the run waited on the dead run's slot"
        said = [m for m in _messages(instance, result.run_id) if m.startswith(f"Pool {pool}: the slot of run {dead}")]
        assert len(said) == 1 and "marked it failed" in said[0] and "is gone" in said[0], said
        killed = instance.get_run_by_id(dead)
        assert killed.status == dg.DagsterRunStatus.FAILURE
        assert killed.tags["reer/reclaimed"] == "true" and result.run_id in killed.tags["reer/reclaimed_by"]
        failure = instance.all_logs(dead, of_type=dg.DagsterEventType.RUN_FAILURE)[0].dagster_event.message
        assert "without reporting an end" in failure and f"{pool} (claimed)" in failure, failure
        assert pool_holdings(instance) == []
        print(f"\n[{pool}] the next run reclaimed the killed run's slot and finished in {took:.1f}s: {said[0]}")
    finally:
        instance.dispose()


def test_a_waiting_run_says_who_holds_the_slot_and_heals_when_the_holder_dies(tmp_path):
    import dagster as dg

    home = _home(tmp_path, "waiting")
    holder, _ = _hold(home, "duckdb")
    waiter_log = home.parent / "waiter.log"
    waiter = start([sys.executable, "-m", "tests.reliability.pool_job", "duckdb", str(home.parent / "waiter.held"),
                    "0"], _env(home), waiter_log)
    try:
        deadline = time.monotonic() + 90
        while "Waiting for a slot of pool duckdb" not in waiter_log.read_text(errors="replace"):
            assert waiter.poll() is None, log_tail(waiter_log)
            assert time.monotonic() < deadline, log_tail(waiter_log)
            time.sleep(0.1)  # wait: a polling interval over the log
        instance = instance_for(home)
        runs = {r.run_id: r for r in instance.get_runs()}
        holder_run = next(i for i, r in runs.items() if r.tags.get("reer/worker") and
                          json.loads(r.tags["reer/worker"])["pid"] == holder.pid)
        waiter_run = next(i for i in runs if i != holder_run)
        notice = [m for m in _messages(instance, waiter_run) if m.startswith("Waiting for a slot of pool duckdb")]
        assert len(notice) == 1, _messages(instance, waiter_run)
        assert holder_run in notice[0] and f"pid {holder.pid}" in notice[0] and "is running" in notice[0]
        assert "reer recover" in notice[0] and "cancel run" in notice[0]
        assert holder_run in waiter_log.read_text() and " - INFO - " in waiter_log.read_text()
        assert runs[holder_run].status == dg.DagsterRunStatus.STARTED  # a live holder is left alone
        instance.dispose()

        kill_group(holder)
        t0 = time.monotonic()
        done = finish(waiter, waiter_log, 60, t0)
        healed = time.monotonic() - t0
        assert done.returncode == 0 and '"success": true' in done.log, done.log[-6000:]
        instance = instance_for(home)
        assert _blocked_events(instance, waiter_run), "the waiter was blocked while the holder lived"
        assert any(m.startswith(f"Pool duckdb: the slot of run {holder_run}") for m in _messages(instance, waiter_run))
        assert instance.get_run_by_id(holder_run).status == dg.DagsterRunStatus.FAILURE
        instance.dispose()
        print(f"\nwaiter unblocked {healed:.1f}s after its holder was killed; it had said: {notice[0]}")
    finally:
        for process in (holder, waiter):
            if process.poll() is None:
                kill_group(process)


def test_a_step_process_outliving_its_run_worker_keeps_the_slot_until_it_ends(tmp_path):
    """Multiprocess executor (what `dagster dev` runs): SIGKILL only the run worker; its step process
    runs on to the end of its step. The slot is not taken from it while it runs, and is reclaimed
    once it is gone."""
    import signal
    import threading

    import dagster as dg

    home = _home(tmp_path, "multiprocess")
    holder, _ = _hold(home, "duckdb", seconds=6, mode="multiprocess")
    step_pid = int((home.parent / "holder.held").read_text())
    assert step_pid != holder.pid
    os.kill(holder.pid, signal.SIGKILL)  # the run worker only, not its group
    holder.wait(timeout=30)
    died = {}

    def watch():
        from reer_assets.runtime.recovery import _process_started_at

        while _process_started_at(step_pid) is not None:
            time.sleep(0.05)  # wait: a polling interval until the process is gone
        died["at"] = time.time()  # wall clock on purpose: compared with the Dagster event timestamp (same clock), not a duration

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()

    @dg.asset(pool="duckdb", name="after_duckdb")
    def after() -> None:
        pass

    instance = instance_for(home)
    try:
        result = dg.materialize([after], instance=instance)
        watcher.join(timeout=30)
        assert result.success and "at" in died
        notices = [m for m in _messages(instance, result.run_id) if m.startswith("Waiting for a slot of pool duckdb")]
        assert notices and f"step hold_duckdb still runs (pid {step_pid})" in notices[0], notices
        [reclaimed] = [e for e in instance.all_logs(result.run_id) if e.dagster_event is None
                       and e.user_message.startswith("Pool duckdb: the slot of run")]
        assert reclaimed.timestamp >= died["at"] - 0.2, "the slot was taken while its step process still ran"
        print(f"\nslot reclaimed {reclaimed.timestamp - died['at']:.1f}s after step process {step_pid} ended; "
              f"the waiter said: {notices[0]}")
    finally:
        instance.dispose()
        if holder.poll() is None:
            kill_group(holder)


def _recover(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "reer"), "recover", *args], cwd=REPO, env=_env(home), capture_output=True,
                          text=True, timeout=120)


def test_reer_recover_lists_marks_and_frees(tmp_path):
    home = _home(tmp_path, "recover")
    holder, _ = _hold(home, "gpu")
    kill_group(holder)
    [dead] = _started_runs(home)

    listed = _recover(home, "--dry-run", "--json")
    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)
    [entry] = report["dead_runs"]
    assert entry["run_id"] == dead and entry["pid"] == holder.pid and entry["status"] == "STARTED"
    assert entry["slots"] == [{"pool": "gpu", "step_key": "hold_gpu", "state": "claimed"}]
    assert not entry["marked_failed"] and report["hook"] is True
    assert _started_runs(home) == [dead]  # a dry run changes nothing

    done = _recover(home)
    assert done.returncode == 0, done.stderr
    assert dead in done.stdout and f"pid {holder.pid}" in done.stdout and "marked failed; freed" in done.stdout
    after = json.loads(_recover(home, "--json").stdout)
    assert after["dead_runs"] == [] and after["pools"] == []
    assert _started_runs(home) == []
    print(f"\n$ reer recover\n{done.stdout}")
