"""Runs whose process died (SIGKILL, the OOM killer, a reboot) never block a later run.

A run killed that way never reports its end: Dagster keeps it ``STARTED`` and keeps the pool slot
its running step claimed (and the queue entry of a step that was waiting). With the pools limited
to 1 (``dagster_home/dagster.yaml``) every later ``gpu`` (or ``duckdb``) step would then wait for
that slot forever, and the default run launcher cannot check a worker's health, so Dagster's run
monitoring does not notice.

The fix runs on its own, in the claim itself: the instance (``ReerInstance``, ``instance.py``, named
in ``dagster.yaml``) uses an event-log storage whose pool-slot claim, when a step would be blocked,
calls :func:`on_claim_blocked` here (through :data:`CLAIM_HOOK`). That looks at every run holding or queued for the pool and
judges its worker (:func:`judge`): the process recorded when the run first claimed a slot (the
``reer/worker`` tag: pid, process start time, host), or else the pid of its ``RUN_START`` event. A
holder whose worker is gone (or whose pid now belongs to a newer process, or whose machine has
rebooted since) is marked failed and its slots freed (:func:`reclaim`), and the claim is tried again
at once: the step never waits on the dead. The same check repeats on every retry of a waiting step
(every :data:`POLL_S` seconds), so a run already waiting when the holder dies is healed too. When
a live run holds the slot, :func:`on_claim_waiting` says so at INFO level in the waiting run's own
log (and on the console), naming the holder and how to free it.

:func:`reclaim_dead_runs` does the same for every unfinished run at once: ``reer recover``
(``cli/recover.py``) and ``dead_run_sensor`` (``sensors.py``, under ``dagster dev``) call it, so
runs killed while holding no slot do not stay ``STARTED`` in the UI either.

All private Dagster API used here is in :mod:`reer_assets.runtime.dagster_internals`.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import dagster as dg

from reer_assets.core.file_lock import file_lock
from reer_assets.runtime import dagster_internals as internals

POLL_S = 2.0  # how often a step blocked on a pool re-checks its holders
NOTICE_REPEAT_S = 300.0  # a waiting step repeats its notice this often (and whenever the holders change)
WORKER_TAG = "reer/worker"
RECLAIMED_TAG = "reer/reclaimed"
RECLAIMED_BY_TAG = "reer/reclaimed_by"
RECLAIMED_AT_TAG = "reer/reclaimed_at"
UNFINISHED = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
HOW_TO_FREE = ("`reer recover` frees the slots of runs whose worker died (a blocked step also does this "
               "on its own)")


# --- is a process alive? ------------------------------------------------------------------------


def _process_started_at(pid: int) -> Optional[float]:
    """Start time (epoch seconds) of process ``pid``; None when there is none (or it is a zombie);
    0.0 when it exists but its start time cannot be read."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            process = psutil.Process(pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            return process.create_time()
        except psutil.NoSuchProcess:
            return None
        except psutil.AccessDenied:
            return 0.0
    try:  # Linux without psutil: /proc/<pid>/stat field 22 is the start in clock ticks since boot
        stat = open(f"/proc/{pid}/stat").read()
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] == "Z":
            return None
        btime = next(float(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime"))
        return btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, IndexError, StopIteration):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return 0.0


def _alive(pid: int, started: float, exact: bool) -> bool:
    """Whether ``pid`` is still the process that started at ``started`` (``exact``: its own start
    time; otherwise a moment it was already running at, such as an event it logged)."""
    created = _process_started_at(pid)
    if created is None:
        return False
    if created == 0.0:  # exists, start time unknown: assume it is ours
        return True
    return abs(created - started) <= 1.0 if exact else created <= started + 1.0


@functools.lru_cache(maxsize=1)
def host_identity() -> str:
    """``hostname|boot id|pid namespace``: two processes can compare pids only when all three match."""
    try:
        boot = open("/proc/sys/kernel/random/boot_id").read().strip()
    except OSError:
        try:
            import psutil

            boot = str(int(psutil.boot_time()))
        except Exception:
            boot = "-"
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = "-"
    return f"{socket.gethostname()}|{boot}|{namespace}"


# --- judging a run's worker ---------------------------------------------------------------------


@dataclass
class Worker:
    pid: Optional[int]
    started: float  # the process's start time (``exact``), or the time of its RUN_START event
    exact: bool
    host: Optional[str]  # host_identity() of the worker; None: not recorded (taken to be this machine)


@dataclass
class Verdict:
    run_id: str
    dead: bool
    reason: str
    status: Optional[str] = None
    pid: Optional[int] = None
    finished: bool = False  # the run has ended (its slots leaked): free them, nothing to mark


def this_worker() -> dict:
    pid = os.getpid()
    return {"pid": pid, "started": _process_started_at(pid) or time.time(), "host": host_identity()}


def worker_of(instance: dg.DagsterInstance, run: dg.DagsterRun) -> Optional[Worker]:
    """The process running ``run``: recorded at its first slot claim, else its RUN_START event's pid."""
    tag = (run.tags or {}).get(WORKER_TAG)
    if tag:
        try:
            data = json.loads(tag)
            return Worker(int(data["pid"]), float(data["started"]), True, data.get("host"))
        except (ValueError, KeyError, TypeError):
            pass
    start = internals.first_event(instance, run.run_id, dg.DagsterEventType.RUN_START)
    if start is None or start[0] is None:
        return None
    return Worker(start[0], start[1], False, None)


def judge(instance: dg.DagsterInstance, run_id: str, step_key: Optional[str] = None) -> Verdict:
    """Whether ``run_id`` is dead: its record gone, its run ended (yet holding slots), or its worker
    process gone. A run whose worker cannot be checked from here (another host or container, another
    launcher, not started) counts as alive. ``step_key``: the step holding a slot; with the
    multiprocess executor its own process may outlive the run worker, and then it is alive."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        return Verdict(run_id, True, "it no longer exists", finished=True)
    status = run.status.value
    if run.is_finished:
        return Verdict(run_id, True, f"it ended ({status}) without freeing its slots", status, finished=True)
    if not internals.uses_default_launcher(instance):
        return Verdict(run_id, False, "launched by another run launcher: its run monitoring applies", status)
    worker = worker_of(instance, run)
    if worker is None or worker.pid is None:
        return Verdict(run_id, False, "no worker process recorded yet", status)
    pid = worker.pid
    if worker.host and worker.host != host_identity():
        theirs, mine = worker.host.split("|"), host_identity().split("|")
        if theirs[0] == mine[0] and theirs[1] != mine[1]:
            return Verdict(run_id, True, f"its worker (pid {pid}) ran before this machine rebooted", status, pid)
        return Verdict(run_id, False, f"its worker (pid {pid}) runs on {theirs[0]} (another host or container), "
                                      "not checked from here", status, pid)
    if _alive(pid, worker.started, worker.exact):
        return Verdict(run_id, False, f"its worker (pid {pid}) is running", status, pid)
    if step_key:
        step = internals.first_event(instance, run_id, dg.DagsterEventType.STEP_START, step_key)
        if step and step[0] and step[0] != pid and _alive(step[0], step[1], exact=False):
            return Verdict(run_id, False, f"its worker (pid {pid}) is gone but step {step_key} still runs "
                                          f"(pid {step[0]})", status, pid)
    gone = "now belongs to a newer process" if _process_started_at(pid) is not None else "is gone"
    return Verdict(run_id, True, f"its worker (pid {pid}) {gone} without reporting an end (killed?)", status, pid)


# --- reclaiming -----------------------------------------------------------------------------------


def _reclaim_lock(instance: dg.DagsterInstance):
    """One reclaimer at a time per instance folder (two blocked runs must not both mark a run failed)."""
    return file_lock(os.path.join(instance.root_directory, ".reer-reclaim.lock"))


@dataclass
class Reclaimed:
    run_id: str
    pid: Optional[int]
    status: Optional[str]  # before
    reason: str
    slots: list[dict] = field(default_factory=list)  # {pool, step_key, state}
    marked_failed: bool = False
    by: str = ""


def reclaim(instance: dg.DagsterInstance, verdict: Verdict, by: str) -> Optional[Reclaimed]:
    """Mark the dead run failed (naming its pid, the reason and ``by``) and free its slots and queue
    entries. None when another reclaimer got there first (nothing left to do)."""
    with _reclaim_lock(instance):
        run = instance.get_run_by_id(verdict.run_id)
        slots = [{"pool": h.pool, "step_key": h.step_key, "state": h.state}
                 for h in internals.pool_holdings(instance) if h.run_id == verdict.run_id]
        unfinished = run is not None and not run.is_finished
        if not unfinished and not slots:
            return None
        held = ", ".join(f"{s['pool']} ({s['state']})" for s in slots) or "none"
        if unfinished:
            message = (f"Marked failed by {by}: {verdict.reason}. Pool slots freed: {held}. Re-materialise to "
                       "resume: finished items are checkpointed and are not recomputed.")
            internals.mark_run_failed(instance, run, message)
            internals.add_run_tags(instance, run.run_id, {RECLAIMED_TAG: "true", RECLAIMED_BY_TAG: by[:200],
                                                          RECLAIMED_AT_TAG: f"{time.time():.3f}"})
        internals.free_run_slots(instance, verdict.run_id)
        return Reclaimed(verdict.run_id, verdict.pid, verdict.status, verdict.reason, slots, unfinished, by)


def dead_runs(instance: dg.DagsterInstance) -> list[Verdict]:
    """Every unfinished run whose worker is dead, and every ended or deleted run still holding slots."""
    verdicts: dict[str, Verdict] = {}
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=UNFINISHED)):
        verdict = judge(instance, record.dagster_run.run_id)
        if verdict.dead:
            verdicts[verdict.run_id] = verdict
    for holding in internals.pool_holdings(instance):
        if holding.run_id not in verdicts:
            verdict = judge(instance, holding.run_id, holding.step_key if holding.state == "claimed" else None)
            if verdict.dead:
                verdicts[verdict.run_id] = verdict
    return list(verdicts.values())


def reclaim_dead_runs(instance: dg.DagsterInstance, log: Callable[[str], None] = lambda message: None,
                      by: str = "reclaim_dead_runs") -> list[str]:
    """Mark every unfinished run with a dead worker as failed and free its pool slots (and free the
    slots ended runs still hold); the ids of the runs reclaimed."""
    return [r.run_id for r in reclaim_all(instance, log, by)]


def reclaim_all(instance: dg.DagsterInstance, log: Callable[[str], None] = lambda message: None,
                by: str = "reclaim_dead_runs") -> list[Reclaimed]:
    out = []
    for verdict in dead_runs(instance):
        done = reclaim(instance, verdict, by)
        if done:
            log(f"{done.run_id}: {done.reason}; " + ("marked failed, " if done.marked_failed else "")
                + f"slots freed: {done.slots or 'none'}")
            out.append(done)
    return out


def reclaimed_since(instance: dg.DagsterInstance, since: float) -> list[dg.DagsterRun]:
    """Runs reclaimed (by anyone: a blocked claim, the sensor, ``reer recover``) after ``since``."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={RECLAIMED_TAG: "true"}))
    return [r for r in runs if float(r.tags.get(RECLAIMED_AT_TAG, "0")) > since]


# --- the claim hook (called by the storage, in the run's own process) -----------------------------

_recorded: set[tuple[int, str]] = set()  # (pid, run id) whose worker is recorded
_notices: dict[tuple[str, str, str], tuple[frozenset, float]] = {}  # (run, step, pool) -> (holders, when)


def on_claim_attempt(instance: dg.DagsterInstance, run_id: str) -> None:
    """Record the claiming process as the run's worker (once per process and run): that is the
    process whose death frees the run's slots."""
    key = (os.getpid(), run_id)
    if key in _recorded:
        return
    _recorded.add(key)
    if instance.get_run_by_id(run_id) is None:  # a claim for a run this instance does not know
        return
    internals.add_run_tags(instance, run_id, {WORKER_TAG: json.dumps(this_worker(), sort_keys=True)})


def _console(run: dg.DagsterRun, step_key: str, message: str) -> None:
    """The same line on stderr, which is the console of `dagster asset materialize` and of the run
    worker under `dagster dev` (Dagster's own console logger is out of reach from the storage)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
    print(f"{stamp} - dagster - INFO - {run.job_name} - {run.run_id} - {step_key} - {message}",
          file=sys.stderr, flush=True)


def _tell(instance: dg.DagsterInstance, run_id: str, step_key: str, message: str) -> None:
    run = instance.get_run_by_id(run_id)
    if run is None:
        return
    internals.log_to_run(instance, run, message, step_key=step_key)
    _console(run, step_key, message)


def on_claim_blocked(instance: dg.DagsterInstance, pool: str, run_id: str, step_key: str) -> list[Reclaimed]:
    """A step of ``run_id`` would be blocked by ``pool``'s limit: reclaim the dead among the runs
    holding or queued for it, and say so in the claiming run's log. The runs reclaimed."""
    others = {}
    for holding in internals.pool_holdings(instance, [pool]):
        if holding.run_id != run_id and (holding.run_id not in others or holding.state == "claimed"):
            others[holding.run_id] = holding
    done = []
    for other, holding in others.items():
        verdict = judge(instance, other, holding.step_key if holding.state == "claimed" else None)
        if not verdict.dead:
            continue
        reclaimed = reclaim(instance, verdict, by=f"run {run_id} (step {step_key}, claiming pool {pool})")
        if reclaimed:
            done.append(reclaimed)
            what = "the slot" if holding.state == "claimed" else "a queue entry"
            did = "marked it failed and freed its slots" if reclaimed.marked_failed else "freed its slots"
            _tell(instance, run_id, step_key,
                  f"Pool {pool}: {what} of run {other} ({holding.state}), {_about(verdict)}: {did}, so this "
                  f"step is not blocked by limit for pool {pool}.")
    return done


def _about(verdict: Verdict) -> str:
    """``whose worker (pid 12) is gone ...`` / ``which ended (SUCCESS) ...``, from a verdict's reason."""
    reason = verdict.reason
    if reason.startswith("its "):
        return "whose " + reason[4:]
    return "which " + reason[3:] if reason.startswith("it ") else reason


def on_claim_waiting(instance: dg.DagsterInstance, pool: str, run_id: str, step_key: str) -> None:
    """The step must wait for live holders: say who, and how to free the slot, at INFO in its run's
    log (on the first wait, whenever the holders change, and every NOTICE_REPEAT_S)."""
    holdings = [h for h in internals.pool_holdings(instance, [pool]) if h.state in ("claimed", "assigned")]
    holders = frozenset((h.run_id, h.step_key) for h in holdings)
    key = (run_id, step_key, pool)
    previous = _notices.get(key)
    if previous and previous[0] == holders and time.monotonic() - previous[1] < NOTICE_REPEAT_S:
        return
    _notices[key] = (holders, time.monotonic())
    limit = internals.pool_limit(instance, pool)
    parts = []
    for holding in holdings:
        if holding.run_id == run_id:
            parts.append(f"step {holding.step_key} of this run")
            continue
        verdict = judge(instance, holding.run_id, holding.step_key)
        parts.append(f"run {holding.run_id} (step {holding.step_key}, {verdict.status or 'unknown'}; "
                     f"{verdict.reason.removeprefix('its ')})")
    held = "; ".join(parts) or "steps queued ahead of this one"
    cancel = [h.run_id for h in holdings if h.run_id != run_id]
    how = (f"To free it sooner, cancel run {', '.join(cancel)} (UI: Runs > the run > Terminate), or stop "
           "its worker process. " if cancel else "")
    _tell(instance, run_id, step_key,
          f"Waiting for a slot of pool {pool} (limit {limit}), held by {held}. The step starts when that slot "
          f"is freed. {how}{HOW_TO_FREE}.")


class _ClaimHook:
    """This module as the instance's :class:`~reer_assets.runtime.dagster_internals.ClaimHook`."""

    poll_s = POLL_S
    on_claim_attempt = staticmethod(on_claim_attempt)
    on_claim_blocked = staticmethod(on_claim_blocked)
    on_claim_waiting = staticmethod(on_claim_waiting)


CLAIM_HOOK = _ClaimHook()


# --- `reer recover` -------------------------------------------------------------------------------


def recover_report(instance: dg.DagsterInstance, dry_run: bool = False, force: tuple[str, ...] = ()) -> dict:
    """What ``reer recover`` does: find dead runs (``force``: these run ids too, dead or not),
    reclaim them unless ``dry_run``; a JSON-able report."""
    verdicts = {v.run_id: v for v in dead_runs(instance)}
    for run_id in force:
        if run_id not in verdicts:
            verdict = judge(instance, run_id)
            if instance.get_run_by_id(run_id) is None and not any(
                    h.run_id == run_id for h in internals.pool_holdings(instance)):
                raise ValueError(f"no run {run_id!r} in this instance")
            verdicts[run_id] = Verdict(run_id, True, f"forced by `reer recover --run` ({verdict.reason})",
                                       verdict.status, verdict.pid, verdict.finished)
    holdings = internals.pool_holdings(instance)
    runs = []
    for verdict in verdicts.values():
        slots = [{"pool": h.pool, "step_key": h.step_key, "state": h.state}
                 for h in holdings if h.run_id == verdict.run_id]
        entry = {"run_id": verdict.run_id, "status": verdict.status, "pid": verdict.pid, "reason": verdict.reason,
                 "slots": slots, "marked_failed": False, "slots_freed": False}
        if not dry_run:
            done = reclaim(instance, verdict, by="reer recover")
            entry.update(marked_failed=bool(done and done.marked_failed), slots_freed=bool(done and done.slots))
        runs.append(entry)
    return {"dagster_home": instance.root_directory, "dry_run": dry_run, "dead_runs": runs,
            "hook": internals.has_reclaiming_claims(instance),
            "pools": [asdict(h) for h in internals.pool_holdings(instance)]}
