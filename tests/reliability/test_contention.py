"""DuckDB contention: four partitions of raw_documents materialised at once, as four separate
``dagster asset materialize`` processes on one instance folder (one lineage DB).

* with the project's instance config (pool ``duckdb`` limited to 1), the pool serialises the steps
  across processes;
* with no pool limits, while this test holds the lineage DB's write lock: every run meets the lock,
  retries with backoff and writes once it is released.

Either way all four runs succeed and lineage ends with exactly the rows of the four runs.
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import polars as pl
import pytest

from tests.reliability.conftest import (
    REPO,
    assert_ok,
    asset_path,
    finish,
    instance_for,
    lineage,
    materializations,
    materialize_command,
    new_home,
    run_env,
    start,
)

pytestmark = pytest.mark.slow

DOMAINS = ["creative_writing", "essays", "business", "education"]  # bundled domains: no model, no fixtures
DOMAINS_FILE = REPO / "reer_assets" / "domains.yaml"
LOCKED_MSG = "is locked by another process; retrying"


def _race(home: Path, hold_lock: bool) -> dict:
    # create the instance's storage first: Dagster's sqlite storage is not safe to *create* from
    # several processes at once ("table runs already exists"); a running `dagster dev` has made it
    instance = instance_for(home)
    instance.get_runs(limit=1)
    instance.dispose()
    env = run_env(home, DOMAINS_FILE)
    logs = {d: home.parent / f"{home.name}-{d}.log" for d in DOMAINS}
    holder = None
    if hold_lock:  # taken before the runs start, released once every run is inside its step
        holder = duckdb.connect(str(home / "lineage.duckdb"))
    t0 = time.monotonic()
    processes = {d: start(materialize_command("raw_documents", d), env, logs[d]) for d in DOMAINS}
    held_s = 0.0
    try:
        if holder is not None:
            # released on an event, not after a guessed delay: once every run's log says it met the lock
            # (time.monotonic() only bounds the wait, so a hung run fails here instead of at the test timeout)
            while not all(LOCKED_MSG in logs[d].read_text(errors="replace") for d in DOMAINS):
                assert all(p.poll() is None for p in processes.values()), "a run ended while the lock was held"
                assert time.monotonic() - t0 < 240, "not every run reached the locked lineage DB"
                time.sleep(0.2)  # wait: a polling interval, not a wait for something to happen
            holder.close()
            holder = None
            held_s = time.monotonic() - t0
        runs = {d: finish(p, logs[d], 240, t0) for d, p in processes.items()}
    finally:
        if holder is not None:
            holder.close()
        for p in processes.values():
            if p.poll() is None:
                p.kill()
    return {"home": home, "runs": runs, "held_s": held_s, "seconds": time.monotonic() - t0}


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
    return _race(new_home(tmp_path_factory.mktemp("contention"), "pooled"), hold_lock=False)


@pytest.fixture(scope="module")
def unpooled(tmp_path_factory):
    root = tmp_path_factory.mktemp("contention")
    home = root / "unpooled"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # no pool limits at all
    return _race(home, hold_lock=True)


def _check_lineage(race: dict) -> None:
    home = race["home"]
    for domain, run in race["runs"].items():
        assert_ok(run)
    expected = []
    for domain in DOMAINS:
        frame = pl.read_parquet(asset_path(home, "raw_documents", domain) / "documents.parquet", columns=["id"])
        run_id = materializations(home, "raw_documents", domain)[-1]["run_id"]
        expected += [(i, run_id, domain) for i in frame["id"]]
    rows = lineage(home, "SELECT id, run_id, partition FROM documents")
    assert sorted(rows.iter_rows()) == sorted(expected), "lineage is not exactly the rows of the four runs"
    assert rows["id"].n_unique() == rows.height
    assert rows["partition"].n_unique() == len(DOMAINS) and rows["run_id"].n_unique() == len(DOMAINS)


def test_four_concurrent_runs_under_the_duckdb_pool(pooled):
    _check_lineage(pooled)
    print(f"\n4 concurrent runs (pool duckdb=1): {pooled['seconds']:.1f}s, "
          f"{lineage(pooled['home'], 'SELECT count(*) AS n FROM documents')['n'][0]} document rows")


def test_four_concurrent_runs_without_pools_wait_for_the_lock(unpooled):
    _check_lineage(unpooled)
    waited = [d for d, run in unpooled["runs"].items() if LOCKED_MSG in run.log]
    assert waited == DOMAINS, f"only {waited} met the held lock: the race did not happen"
    print(f"\n4 concurrent runs, no pools, lineage locked for the first {unpooled['held_s']:.1f}s: all waited and "
          f"succeeded in {unpooled['seconds']:.1f}s")
