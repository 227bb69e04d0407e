"""Recovering from a run whose process died (SIGKILL, OOM killer, a reboot) on a local instance.

A run killed that way never reports its end: Dagster keeps it ``STARTED`` and, worse, keeps the
pool slot its running step claimed. With the pools limited to 1 (``dagster_home/dagster.yaml``),
every later ``gpu`` (or ``duckdb``) step then waits for that slot forever, so the resume that the
per-item checkpoints make cheap never starts. The default run launcher cannot check a run
worker's health, so Dagster's run monitoring does not notice either.

:func:`reclaim_dead_runs` finds the unfinished runs whose worker process (the pid of their
``RUN_START`` event) no longer exists on this machine, marks them failed with a message naming
the pid, and frees their pool slots. :data:`dead_run_sensor` (in ``sensors.py``) calls it under
``dagster dev``; after a crash without the daemon, call it once before re-materialising.
"""

from __future__ import annotations

from typing import Callable, Optional

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter

UNFINISHED = [DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


def _process_started_at(pid: int) -> Optional[float]:
    """The start time of process ``pid`` (epoch seconds), or None when no such process exists."""
    try:
        import psutil
    except ImportError:  # fall back to existence only
        import os

        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return 0.0
        return 0.0
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:
        return 0.0


def worker_is_dead(instance: dg.DagsterInstance, run_id: str) -> tuple[bool, Optional[int]]:
    """(dead, pid): whether the process that started ``run_id`` is gone (or its pid now belongs to a
    process started after the run). A run without a ``RUN_START`` event is left alone."""
    records = instance.all_logs(run_id, of_type=DagsterEventType.RUN_START)
    if not records or records[0].dagster_event is None or records[0].dagster_event.pid is None:
        return False, None
    pid, started = records[0].dagster_event.pid, records[0].timestamp
    created = _process_started_at(pid)
    if created is None:
        return True, pid
    return created > started + 1.0, pid  # the pid was reused by a newer process


def reclaim_dead_runs(instance: dg.DagsterInstance, log: Callable[[str], None] = lambda message: None) -> list[str]:
    """Mark every unfinished run with a dead worker as failed and free its pool slots; their ids."""
    from dagster._core.launcher.default_run_launcher import DefaultRunLauncher

    if not isinstance(instance.run_launcher, DefaultRunLauncher):
        return []  # workers live elsewhere (Kubernetes, ECS...): their launcher's monitoring applies
    reclaimed = []
    for record in instance.get_run_records(filters=RunsFilter(statuses=UNFINISHED)):
        run = record.dagster_run
        dead, pid = worker_is_dead(instance, run.run_id)
        if not dead:
            continue
        message = (f"run worker (pid {pid}) is gone without reporting an end (killed?); marked failed and its "
                   "pool slots freed. Re-materialise: finished items are checkpointed and are not recomputed.")
        instance.report_run_failed(run, message)
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        log(f"{run.run_id}: {message}")
        reclaimed.append(run.run_id)
    return reclaimed
