"""When most items of a partition fail, the Dagster failure says why in one line: how many failed,
the most common error class, and one example of it (``failure_message`` in
``reer_assets/defs/refinement/assets.py``).

The model server is the fault server: three of the four items' generations answer HTTP 500 with
the body vLLM sends once its engine died (``EngineDeadError``), the fourth is rate limited (429)
until the client gives up. The scorer's start-up check passes, so every item fails on its own.
"""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest

from tests.reliability.conftest import TINY_ITEMS, asset_path, fault_server_env, instance_for, materialize
from tests.support.fault_server import FaultServer

pytestmark = [pytest.mark.model, pytest.mark.slow]


def test_failure_names_the_most_common_error_class_and_an_example(tiny_project, embedded_path):
    queries = pl.read_parquet(asset_path(tiny_project.seed_home, "synthesized_queries") / "queries.parquet")
    markers = [q[:32] for q in queries.filter(pl.col("status") == "accepted")["query"].to_list()]
    assert len(markers) == TINY_ITEMS == 4
    server = FaultServer().start()
    for marker in markers[:3]:
        server.on((marker, '"messages"'), "engine_dead")  # chat completions: the item's generations
    server.on((markers[3], '"messages"'), "429")
    home = tiny_project.home("failure_message")
    try:
        run = materialize(home, tiny_project.env(home, fault_server_env(server, embedded_path)),
                          "refined_trajectories", log_name="failure_message.log")
    finally:
        server.stop()
    assert run.returncode != 0
    assert server.count("engine_dead") == 3 * 2 and server.count("429") == 2  # two attempts each

    instance = instance_for(home)
    try:
        (record,) = instance.get_records_for_run(
            instance.get_runs()[0].run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
        failure = record.event_log_entry.dagster_event.step_failure_data
        message = failure.user_failure_data.description if failure.user_failure_data else failure.error.message
    finally:
        instance.dispose()
    assert "4 of 4 items failed, above max_failure_rate=0.25" in message, message
    assert "Most common error: http_500 (3 of 4)" in message, message
    assert "e.g. 'http_500: " in message and "EngineDeadError" in message, message
    assert "the failed ones are retried on the next run" in message
    assert message in run.log  # the same line in the run's console log
