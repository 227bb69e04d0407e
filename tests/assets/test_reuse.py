"""Reuse is crash-safe and knows the code (the stage skeleton, defs/stage.py).

Config A succeeds; config B writes its outputs and then fails its check, or is SIGKILLed between its
outputs and its fingerprint; config A runs again. It must recompute (never ``reused: true`` over B's
rows), and a downstream stage must never read B's rows under A's fingerprint. A new code version
recomputes too. The stage is ``tests/support/reuse_probe.py``, a minimal asset on the real skeleton.
"""


import os
import signal
import subprocess
import sys
import time

import dagster as dg
import polars as pl
import pytest

from tests.support.reuse_probe import make_probe, materialize, probe_reader

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.delenv("REER_STORAGE_ROOT", raising=False)
    return tmp_path


def meta(result, name="probe"):
    event = result.asset_materializations_for_node(name)[0]
    return {k: getattr(v, "value", v) for k, v in event.metadata.items()}


def rows_on_disk(home, asset="probe"):
    return pl.read_parquet(home / "reer/assets" / asset / "__all__/rows.parquet")["variant"].unique().to_list()


def assert_a_recomputes(home, instance):
    again = materialize(make_probe(), instance, variant="A")
    assert again.success and meta(again)["reused"] is False, "A was reused over B's rows"
    assert rows_on_disk(home) == ["A"]
    assert materialize(make_probe(), instance, variant="A").success  # and now A's own outputs are reused
    assert meta(materialize(make_probe(), instance, variant="A"))["reused"] is True


@pytest.mark.timeout(120)
def test_a_failed_check_leaves_no_fingerprint_and_a_recomputes(home):
    instance = dg.DagsterInstance.ephemeral()
    first = materialize(make_probe(), instance, variant="A")
    assert first.success and meta(first)["reused"] is False
    assert meta(materialize(make_probe(), instance, variant="A"))["reused"] is True
    failed = materialize(make_probe(), instance, variant="B", fail_check=True)
    assert not failed.success
    assert rows_on_disk(home) == ["B"]  # B's outputs are there...
    assert not (home / "reer/assets/probe/__all__/fingerprint.json").exists()  # ...claimed by no config
    # downstream cannot read B's rows as A's: the upstream is not materialised
    reader = materialize(probe_reader, instance)
    assert not reader.success
    assert "probe[unpartitioned] has not been materialised yet" in str(reader.get_step_failure_events()[0].event_specific_data.error)
    assert_a_recomputes(home, instance)
    reader = materialize(probe_reader, instance)
    assert reader.success and meta(reader, "probe_reader")["read"] == ["A"]


@pytest.mark.timeout(180)
def test_a_run_killed_between_outputs_and_fingerprint_is_not_reused(home, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    assert materialize(make_probe(), instance, variant="A").success
    halt = tmp_path / "halted"
    child = subprocess.Popen([sys.executable, "-m", "tests.support.reuse_probe", "B", str(halt)], cwd=REPO,
                             env={**os.environ, "DAGSTER_HOME": str(home)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # wait for the event (the child is inside its check: outputs written, fingerprint not yet saved)
        deadline = time.monotonic() + 150  # a bound on the wait, not a measured moment
        while not halt.exists():
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the probe never reached its check"
            time.sleep(0.05)  # wait: a polling interval while waiting for the marker file
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert rows_on_disk(home) == ["B"]
    assert_a_recomputes(home, instance)


@pytest.mark.timeout(120)
def test_a_new_code_version_recomputes(home):
    instance = dg.DagsterInstance.ephemeral()
    assert meta(materialize(make_probe("1"), instance, variant="A"))["reused"] is False
    assert meta(materialize(make_probe("1"), instance, variant="A"))["reused"] is True
    bumped = materialize(make_probe("2"), instance, variant="A")
    assert meta(bumped)["reused"] is False
    assert meta(materialize(make_probe("2"), instance, variant="A"))["reused"] is True
    # the code version is the asset's Dagster code version (the UI shows it) and the data version changes
    assert make_probe("2").code_versions_by_key[dg.AssetKey("probe")] == "2"


@pytest.mark.timeout(60)
def test_a_stage_without_a_code_version_is_refused(home):
    from reer_assets.defs.stage import run_stage

    @dg.asset(name="probe")
    def unversioned(context: dg.AssetExecutionContext) -> None:
        run_stage(context, "probe", (), lambda paths: None)

    result = dg.materialize([unversioned], instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success
    assert "declares no code_version" in str(result.get_step_failure_events()[0].event_specific_data.error)


def test_every_stage_asset_declares_a_code_version():
    from reer_assets.definitions import defs

    stages = [a for a in defs.resolve_asset_graph().assets_defs if a.is_materializable]
    missing = [key.to_user_string() for a in stages for key, v in a.code_versions_by_key.items() if not v]
    assert stages and not missing, missing
