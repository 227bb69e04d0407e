"""Every use of Dagster's private API (``dagster._core``, ``dagster._serdes``) in this project, in one place.

Dagster 1.13 has no public hook around pool-slot claims, no public way to free the slots of a
run, to mark a run failed from outside, to read a run's concurrency holdings or to add a plain
log line to a run's event log. What the project needs of those lives here, each behind one small
function or class, so that a Dagster upgrade is checked in one file, by one test
(``tests/reliability/test_dagster_internals.py`` pins their behaviour on the pinned version).

The instance base (:class:`ReclaimingInstance`; the project's :class:`~reer_assets.runtime.instance.ReerInstance`,
named by ``dagster_home/dagster.yaml``, adds its claim hook) only changes the *default* storage: the
usual SQLite files under ``$DAGSTER_HOME`` (same layout, same schema), with an event-log storage whose
:meth:`~ReclaimingSqliteEventLogStorage.claim_concurrency_slot` asks the instance's :class:`ClaimHook`
(:mod:`reer_assets.runtime.recovery`) what to do when a step would be blocked by a pool limit. An
instance configured with an explicit ``storage:`` block (Postgres, say) keeps that storage and has no
such hook. This module imports nothing of the project: the hook comes in through the instance.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Protocol

import yaml
from dagster._core.instance import DagsterInstance
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage
from dagster._serdes import ConfigurableClassData

if TYPE_CHECKING:
    import dagster as dg

log = logging.getLogger(__name__)

# --- the storage hook ----------------------------------------------------------------------------


class ClaimHook(Protocol):
    """What a pool-slot claim asks before it reports "blocked" (:mod:`reer_assets.runtime.recovery` answers)."""

    poll_s: float  # how often a blocked step re-claims (Dagster backs off to 15 s)

    def on_claim_attempt(self, instance: "dg.DagsterInstance", run_id: str) -> None: ...

    def on_claim_blocked(self, instance: "dg.DagsterInstance", pool: str, run_id: str, step_key: str) -> list: ...

    def on_claim_waiting(self, instance: "dg.DagsterInstance", pool: str, run_id: str, step_key: str) -> None: ...


class ReclaimingSqliteEventLogStorage(SqliteEventLogStorage):
    """Dagster's SQLite event-log storage, with a pool-slot claim that does not wait on the dead.

    Steps claim pool slots through ``claim_concurrency_slot`` (``InstanceConcurrencyContext``,
    for the in-process, multiprocess and step-delegating executors alike), on their first try and
    again on every retry while blocked. Before reporting "blocked", this claim lets the instance's
    :class:`ClaimHook` (:func:`reer_assets.runtime.recovery.on_claim_blocked`) free the slots of holders
    whose worker process is dead, and claims again; when a live run holds the slot it gets a notice
    instead. Any error in the hook is logged and the plain claim result stands.
    """

    def claim_concurrency_slot(self, concurrency_key: str, run_id: str, step_key: str,
                               priority: Optional[int] = None):
        instance = self._instance
        hook: Optional[ClaimHook] = getattr(instance, "claim_hook", None)
        if hook is None:  # an instance without a hook: Dagster's own claim
            return super().claim_concurrency_slot(concurrency_key, run_id, step_key, priority)
        try:
            hook.on_claim_attempt(instance, run_id)
        except Exception:  # never let the hook break a claim
            log.exception("reer: recording the worker of run %s failed", run_id)
        status = super().claim_concurrency_slot(concurrency_key, run_id, step_key, priority)
        if status.is_claimed:
            return status
        try:
            if hook.on_claim_blocked(instance, concurrency_key, run_id, step_key):
                assign_free_slots(self, concurrency_key)
                status = super().claim_concurrency_slot(concurrency_key, run_id, step_key, priority)
            if not status.is_claimed:
                hook.on_claim_waiting(instance, concurrency_key, run_id, step_key)
                # poll every poll_s (Dagster backs off to 15 s), so a holder that dies is noticed soon
                status = status.with_sleep_interval(hook.poll_s)
        except Exception:
            log.exception("reer: reclaiming pool %s for run %s failed", concurrency_key, run_id)
        return status


def assign_free_slots(storage: SqliteEventLogStorage, pool: str) -> None:
    """Hand freed slots of ``pool`` to the steps queued for it (Dagster does this when the freed
    run still had its queue entry; this covers a run that held a slot without one)."""
    while storage.has_unassigned_slots(pool):
        before = _assigned_count(storage, pool)
        storage.assign_pending_steps([pool])
        if _assigned_count(storage, pool) == before:
            return


def _assigned_count(storage: SqliteEventLogStorage, pool: str) -> int:
    return sum(1 for p in storage.get_concurrency_info(pool).pending_steps if p.assigned_timestamp is not None)


class ReerSqliteStorage(DagsterSqliteStorage):
    """Dagster's default SQLite storage (same files under ``base_dir``), with the reclaiming event log."""

    def __init__(self, base_dir: str, inst_data: Optional[ConfigurableClassData] = None):
        # what DagsterSqliteStorage.__init__ does, with our event-log class
        self.base_dir = base_dir
        self._run_storage = SqliteRunStorage.from_local(os.path.join(base_dir, "history", ""))
        self._event_log_storage = ReclaimingSqliteEventLogStorage(os.path.join(base_dir, "history", "runs", ""))
        self._schedule_storage = SqliteScheduleStorage.from_local(os.path.join(base_dir, "schedules"))
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()

    @classmethod
    def from_config_value(cls, inst_data, config_value):  # DagsterSqliteStorage's names its own class
        return cls.from_local(inst_data=inst_data, **config_value)


class ReclaimingInstance(DagsterInstance):
    """A ``DagsterInstance`` whose default storage is :class:`ReerSqliteStorage` rooted at the
    instance folder itself (so ``InstanceRef.from_dir(home)`` opens ``home``'s files, whatever
    ``$DAGSTER_HOME`` says), and whose blocked pool-slot claims ask :attr:`claim_hook` (set by a
    subclass: :class:`reer_assets.runtime.instance.ReerInstance`). Everything else is Dagster's default."""

    claim_hook: Optional[ClaimHook] = None

    @classmethod
    def config_schema(cls):
        return {}

    @classmethod
    def config_defaults(cls, base_dir: str):
        defaults = dict(InstanceRef.config_defaults(base_dir))
        defaults["storage"] = ConfigurableClassData(ReerSqliteStorage.__module__, ReerSqliteStorage.__name__,
                                                    yaml.dump({"base_dir": base_dir}, default_flow_style=False))
        return defaults


def has_reclaiming_claims(instance: "dg.DagsterInstance") -> bool:
    """Whether this instance's pool-slot claims go through the reclaiming hook."""
    return (isinstance(instance.event_log_storage, ReclaimingSqliteEventLogStorage)
            and getattr(instance, "claim_hook", None) is not None)


# --- reading and changing pool slots --------------------------------------------------------------


@dataclass(frozen=True)
class Holding:
    """One row of a pool's bookkeeping: a claimed slot, or a queue entry (assigned or not)."""

    pool: str
    run_id: str
    step_key: str
    state: str  # "claimed" | "assigned" (a slot is reserved for it) | "queued"


def pool_limit(instance: "dg.DagsterInstance", pool: str) -> Optional[int]:
    return instance.event_log_storage.get_concurrency_info(pool).limit


def pool_holdings(instance: "dg.DagsterInstance", pools: Optional[list[str]] = None) -> list[Holding]:
    """Claimed slots and queue entries of ``pools`` (default: every pool the instance knows)."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    keys = sorted(pools if pools is not None else storage.get_concurrency_keys())
    out: list[Holding] = []
    for pool, info in storage.get_concurrency_infos(keys).items():
        claimed = {(s.run_id, s.step_key) for s in info.claimed_slots}
        out += [Holding(pool, r, s, "claimed") for r, s in sorted(claimed)]
        out += [Holding(pool, p.run_id, p.step_key, "assigned" if p.assigned_timestamp else "queued")
                for p in info.pending_steps if (p.run_id, p.step_key) not in claimed]
    return out


def free_run_slots(instance: "dg.DagsterInstance", run_id: str) -> None:
    """Free every pool slot and queue entry of ``run_id`` (what the UI's "free slots" does)."""
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        storage.free_concurrency_slots_for_run(run_id)


# --- runs and their event logs --------------------------------------------------------------------


def first_event(instance: "dg.DagsterInstance", run_id: str, event_type: "dg.DagsterEventType",
                step_key: Optional[str] = None) -> Optional[tuple[Optional[int], float]]:
    """(pid, timestamp) of the first ``event_type`` event of the run (of ``step_key``), or None."""
    for entry in instance.all_logs(run_id, of_type=event_type):
        if entry.dagster_event is not None and (step_key is None or entry.step_key == step_key):
            return entry.dagster_event.pid, entry.timestamp
    return None


def mark_run_failed(instance: "dg.DagsterInstance", run: "dg.DagsterRun", message: str) -> None:
    """Record a run failure from outside the run (a ``RUN_FAILURE`` event with ``message``)."""
    instance.report_run_failed(run, message)


def log_to_run(instance: "dg.DagsterInstance", run: "dg.DagsterRun", message: str,
               step_key: Optional[str] = None, level: int = logging.INFO) -> None:
    """A plain log line in the run's own event log, as ``context.log.info`` would write it (the UI
    shows it in the run's log, at its level)."""
    import dagster as dg

    instance.handle_new_event(dg.EventLogEntry(error_info=None, level=level, user_message=message,
                                               run_id=run.run_id, timestamp=time.time(), step_key=step_key,
                                               job_name=run.job_name, dagster_event=None))


def add_run_tags(instance: "dg.DagsterInstance", run_id: str, tags: dict[str, str]) -> None:
    instance.add_run_tags(run_id, tags)


def uses_default_launcher(instance: "dg.DagsterInstance") -> bool:
    """Whether runs of this instance are launched as local processes (the default launcher); runs of
    other launchers (Kubernetes, ECS...) have their own health checks and are left to them."""
    import dagster as dg

    return isinstance(instance.run_launcher, dg.DefaultRunLauncher)
