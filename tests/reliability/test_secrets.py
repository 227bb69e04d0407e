"""Secrets: an API key given to the openai backend (by naming its variable) reaches the server and
nothing else: no file under DAGSTER_HOME (sqlite run/event storage, compute logs, checkpoints,
Parquet, the lineage DB), no lineage table, no Dagster event, no run config, not the run's output.

The run uses the default executor (a subprocess per step, so compute logs are captured, as under
``dagster dev``), and one item fails, so error paths are recorded too.
"""

from __future__ import annotations

import secrets

import polars as pl
import pytest

from tests.reliability.conftest import (
    assert_ok,
    asset_path,
    fault_server_env,
    instance_for,
    lineage,
    lineage_tables,
    materialize,
)
from tests.support.fault_server import FaultServer

pytestmark = [pytest.mark.model, pytest.mark.slow]  # the openai scorer tokenizes with the embedded tokenizer

KEY_VAR = "MY_TEST_KEY"


@pytest.fixture(scope="module")
def keyed_run(tiny_project, embedded_path):
    project = tiny_project
    key = f"sk-reer-test-{secrets.token_hex(24)}"
    server = FaultServer().start()
    first_query = project.pieces[0]["request"][:32]
    server.on(first_query, "500")  # one failing item: its error goes into Parquet, lineage and the log
    home = project.home("secrets")
    env = project.env(home, {**fault_server_env(server, embedded_path),
                             "REER_GENERATOR_API_KEY_ENV": KEY_VAR, "REER_SCORER_API_KEY_ENV": KEY_VAR,
                             KEY_VAR: key})
    try:
        run = materialize(home, env, "refined_trajectories", in_process=False, log_name="secrets.log",
                          config={"refined_trajectories": {"config": {"max_failure_rate": 0.5}}})
    finally:
        server.stop()
    yield {"home": home, "key": key, "run": run, "server": server}


def test_the_key_was_sent_to_the_server(keyed_run):
    assert_ok(keyed_run["run"])
    requests = keyed_run["server"].requests
    assert requests and all(r.headers.get("authorization") == f"Bearer {keyed_run['key']}" for r in requests)
    print(f"\nthe key went out in the Authorization header of all {len(requests)} requests")


def test_no_file_under_dagster_home_holds_the_key(keyed_run):
    home, key = keyed_run["home"], keyed_run["key"].encode()
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any("compute_logs" in str(p) for p in files), "no compute logs captured: the check would be hollow"
    assert any(p.suffix == ".db" for p in files) and any(p.suffix == ".parquet" for p in files)
    leaks = [str(p.relative_to(home)) for p in files if key in p.read_bytes()]
    assert not leaks, f"the API key is written in {leaks}"
    print(f"\n{len(files)} files under DAGSTER_HOME ({sum(p.stat().st_size for p in files) / 1e6:.1f} MB, "
          f"{sum('compute_logs' in str(p) for p in files)} compute-log files): the key in none")
    assert keyed_run["key"] not in keyed_run["run"].log, "the API key is in the run's console output"


def test_no_parquet_output_or_lineage_table_holds_the_key(keyed_run):
    home, key = keyed_run["home"], keyed_run["key"]
    for path in home.rglob("*.parquet"):  # compressed on disk: read back, every value as text
        assert key not in repr(pl.read_parquet(path).rows()), path
    tables = lineage_tables(home)
    assert {"documents", "queries", "trajectories", "candidates"} <= set(tables)
    for table in tables:
        assert key not in repr(lineage(home, f"SELECT * FROM {table}").rows()), table
    failed = pl.read_parquet(asset_path(home, "refined_trajectories") / "trajectories.parquet").filter(
        pl.col("status") == "failed")
    assert failed.height == 1 and failed["reject_reason"][0].startswith("http_500")  # the error path ran


def test_no_dagster_event_or_run_config_holds_the_key(keyed_run):
    from dagster._serdes import serialize_value

    home, key = keyed_run["home"], keyed_run["key"]
    instance = instance_for(home)
    try:
        runs = instance.get_runs()
        assert runs
        for run in runs:
            assert key not in serialize_value(run), f"run {run.run_id} (config, tags) holds the key"
            entries = instance.all_logs(run.run_id)
            assert entries
            for entry in entries:
                assert key not in serialize_value(entry), entry.message
    finally:
        instance.dispose()
