"""The REER search through the openai backends against a real `vllm serve`, driven by Dagster.

One partition goes raw_documents -> synthesized_queries -> refined_trajectories with both
roles on HTTP; the trajectories, their traces and token counts must land in lineage.
"""

from __future__ import annotations

import json
import os

import pytest

DOMAIN = "essays"
pytestmark = [pytest.mark.model, pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def openai_run(vllm_server, embedded_path, tmp_path_factory):
    import dagster as dg

    home = tmp_path_factory.mktemp("openai_home")
    env = {"DAGSTER_HOME": str(home), "REER_PROFILE": "test"}
    for role in ("GENERATOR", "SCORER"):
        env.update({f"REER_{role}_BACKEND": "openai", f"REER_{role}_BASE_URL": vllm_server.base_url,
                    f"REER_{role}_MODEL": str(embedded_path), f"REER_{role}_MAX_IN_FLIGHT": "4"})
    saved = {k: os.environ.get(k) for k in [*env, "REER_LINEAGE_DB"]}
    os.environ.update(env)
    os.environ.pop("REER_LINEAGE_DB", None)
    try:
        from reer_assets.definitions import defs
        from reer_assets.defs.resources import default_resources

        assets = {key.to_user_string(): defs.get_assets_def(key) for key in defs.resolve_all_asset_keys()}
        resources = default_resources()
        instance = dg.DagsterInstance.ephemeral()
        results = {name: dg.materialize([assets[name]], partition_key=DOMAIN, resources=resources, instance=instance)
                   for name in ("raw_documents", "synthesized_queries", "refined_trajectories")}
        yield {"home": home, "results": results, "model": str(embedded_path)}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_search_over_http_writes_traces_and_token_counts_to_lineage(openai_run):
    from reer_assets.lib import duckdb_store

    assert all(r.success for r in openai_run["results"].values())
    rows = duckdb_store.query(
        "SELECT status, generator_model, scorer_model, prompt_tokens, completion_tokens, scored_tokens, "
        "generator_calls, scorer_calls, trace_json FROM trajectories WHERE partition = ?", [DOMAIN],
        path=openai_run["home"] / "lineage.duckdb")
    import polars as pl

    queries = pl.read_parquet(openai_run["home"] / "reer/assets/synthesized_queries" / DOMAIN / "queries.parquet")
    assert rows.height == queries.filter(pl.col("status") == "accepted").height >= 4
    expected = f"openai:{openai_run['model']}"
    assert set(rows["generator_model"]) == {expected}
    assert set(rows.filter(rows["status"] == "ok")["scorer_model"]) <= {expected}
    searched = rows.filter(rows["status"] == "ok")
    assert searched.height >= 1, rows.select("status").to_series().to_list()
    for row in rows.iter_rows(named=True):
        assert row["status"] in ("ok", "rejected"), row["status"]  # nothing failed over HTTP
        assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0 and row["generator_calls"] >= 1  # > 0: the exact count depends on what the model writes
        trace = json.loads(row["trace_json"])
        assert trace["generator_model"] == row["generator_model"]
    for row in searched.iter_rows(named=True):
        assert row["scored_tokens"] > 0 and row["scorer_calls"] >= 1  # > 0: the exact count depends on what the model writes
    steps = duckdb_store.query("SELECT count(*) AS n FROM search_steps WHERE partition = ?", [DOMAIN],
                               path=openai_run["home"] / "lineage.duckdb")
    assert steps["n"][0] >= searched.height


def test_synthesized_queries_came_from_the_server(openai_run):
    import polars as pl

    frame = pl.read_parquet(openai_run["home"] / "reer/assets/synthesized_queries" / DOMAIN / "queries.parquet")
    synthesized = frame.filter(pl.col("synthesized"))
    assert synthesized.height >= 1
    assert set(synthesized["model"]) == {f"openai:{openai_run['model']}"}
