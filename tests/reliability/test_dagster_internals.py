"""Pins the behaviour of every private Dagster API the project uses (``reer_assets/runtime/dagster_internals.py``)
on the pinned Dagster version. A Dagster upgrade that changes any of it fails here first."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from tests.reliability.conftest import instance_for, new_home


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    # DAGSTER_HOME points elsewhere on purpose: the instance folder comes from the ref, not the environment
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "elsewhere"))
    return new_home(tmp_path, "home")


def test_pinned_version():
    import dagster

    assert dagster.__version__ == "1.13.27", "re-check reer_assets/runtime/dagster_internals.py against this version"


def test_reer_instance_keeps_dagsters_sqlite_layout_in_the_instance_folder(home):
    import dagster as dg

    from reer_assets.runtime import dagster_internals as internals
    from reer_assets.runtime.instance import ReerInstance

    instance = instance_for(home)
    try:
        assert type(instance) is ReerInstance
        assert type(instance.event_log_storage) is internals.ReclaimingSqliteEventLogStorage
        assert internals.has_reclaiming_claims(instance) and internals.uses_default_launcher(instance)
        assert instance.root_directory == str(home)
        for path in ("history/runs.db", "history/runs/index.db", "schedules/schedules.db"):
            assert (home / path).is_file(), path
        assert not (home.parent / "elsewhere").exists()
        assert instance.event_log_storage.supports_global_concurrency_limits
        # the instance ref a run worker or step process gets rebuilds the same classes
        again = dg.DagsterInstance.from_ref(instance.get_ref())
        assert type(again.event_log_storage) is internals.ReclaimingSqliteEventLogStorage
        again.dispose()
    finally:
        instance.dispose()
    plain = dg.DagsterInstance.ephemeral()
    assert not internals.has_reclaiming_claims(plain)


def test_steps_claim_pool_slots_through_the_storage_method(home, monkeypatch):
    """InstanceConcurrencyContext calls ``event_log_storage.claim_concurrency_slot`` (our override)."""
    import dagster as dg

    from reer_assets.runtime import dagster_internals as internals

    calls = []
    real = internals.ReclaimingSqliteEventLogStorage.claim_concurrency_slot

    def spy(self, pool, run_id, step_key, priority=None):
        calls.append((pool, step_key))
        return real(self, pool, run_id, step_key, priority)

    monkeypatch.setattr(internals.ReclaimingSqliteEventLogStorage, "claim_concurrency_slot", spy)

    @dg.asset(pool="pinned")
    def pinned() -> None:
        pass

    instance = instance_for(home)
    try:
        result = dg.materialize([pinned], instance=instance)
        assert result.success and calls == [("pinned", "pinned")]
        assert internals.pool_limit(instance, "pinned") == 1  # default_limit from dagster.yaml
        assert internals.pool_holdings(instance, ["pinned"]) == []  # freed at the end of the step

        # first_event: pid and time of a run's (or a step's) first event of a type
        pid, when = internals.first_event(instance, result.run_id, dg.DagsterEventType.RUN_START)
        assert pid == os.getpid() and when > 0  # > 0: a timestamp was recorded; its value is the clock's
        step_pid, _ = internals.first_event(instance, result.run_id, dg.DagsterEventType.STEP_START, "pinned")
        assert step_pid == os.getpid()
        assert internals.first_event(instance, result.run_id, dg.DagsterEventType.STEP_START, "nope") is None

        # log_to_run: a plain INFO line in the run's log, with its step
        run = instance.get_run_by_id(result.run_id)
        internals.log_to_run(instance, run, "hello from outside", step_key="pinned")
        [entry] = [e for e in instance.all_logs(run.run_id) if e.user_message == "hello from outside"]
        assert entry.level == logging.INFO and entry.step_key == "pinned" and entry.dagster_event is None
        assert entry.job_name == run.job_name

        # add_run_tags merges; mark_run_failed records RUN_FAILURE with the message
        internals.add_run_tags(instance, run.run_id, {"reer/x": "1"})
        assert instance.get_run_by_id(run.run_id).tags["reer/x"] == "1"
        internals.mark_run_failed(instance, run, "marked from outside")
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        [failure] = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert failure.dagster_event.message == "marked from outside"
    finally:
        instance.dispose()


def test_pool_holdings_and_free_run_slots(home):
    from reer_assets.runtime import dagster_internals as internals
    from reer_assets.runtime.dagster_internals import Holding, ReclaimingSqliteEventLogStorage

    instance = instance_for(home)
    try:
        storage = instance.event_log_storage
        storage.initialize_concurrency_limit_to_default("p")
        plain_claim = super(ReclaimingSqliteEventLogStorage, storage).claim_concurrency_slot  # without the hook
        assert plain_claim("p", "run-a", "step-a").is_claimed
        assert not plain_claim("p", "run-b", "step-b").is_claimed
        assert internals.pool_holdings(instance) == [Holding("p", "run-a", "step-a", "claimed"),
                                                     Holding("p", "run-b", "step-b", "queued")]
        internals.free_run_slots(instance, "run-a")  # frees the slot and hands it to the queue
        assert internals.pool_holdings(instance) == [Holding("p", "run-b", "step-b", "assigned")]
        internals.assign_free_slots(storage, "p")  # nothing free: a no-op
        assert plain_claim("p", "run-b", "step-b").is_claimed
        assert internals.pool_holdings(instance, ["p"]) == [Holding("p", "run-b", "step-b", "claimed")]

        # with the hook: run-b is not a run of this instance ("no longer exists"), so run-c takes its slot
        assert storage.claim_concurrency_slot("p", "run-c", "step-c").is_claimed
        assert internals.pool_holdings(instance, ["p"]) == [Holding("p", "run-c", "step-c", "claimed")]
    finally:
        instance.dispose()
