"""Batch mode from the asset's config: ``synthesized_queries`` with ``batch: true`` sends its requests as one
batch to the loopback Batches API fake (tests/support/fake_batches_api.py), through Dagster, with the
workload run in process; the same run config with ``batch: false`` is the live path, and neither changes the
asset's fingerprint (how the calls are made, not what they ask)."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from reer_assets.defs.resources import LineageResource, ModelBackendResource, WorkloadRunner
from reer_assets.lib import duckdb_store, storage
from tests.support.batch_docs import TEXTS
from tests.support.fake_batches_api import SYNTHESIZED, FakeBatchesAPI

DOMAIN = "education"
KEY = "sk-fake-batch-key-asset"


@pytest.fixture
def project(tmp_path, monkeypatch):
    api = FakeBatchesAPI(api_key=KEY).start()
    with open(tmp_path / "pieces.jsonl", "w", encoding="utf-8") as handle:
        for k, text in enumerate(TEXTS[:3]):  # no request: synthesis has to ask for one
            handle.write(json.dumps({"id": f"piece-{k}", "text": text}) + "\n")
    (tmp_path / "domains.yaml").write_text(f"domains:\n  {DOMAIN}:\n    languages: [en]\n    cleaning: {{min_units: 10}}\n"
                                           "    sources:\n      - reader: generic\n        path: pieces.jsonl\n",
                                           encoding="utf-8")  # short pieces: 10 words are enough here
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("REER_DOMAINS_FILE", str(tmp_path / "domains.yaml"))
    monkeypatch.setenv("REER_PROFILE", "test")
    monkeypatch.setenv("REER_LINEAGE_DB", str(tmp_path / "lineage.duckdb"))  # the workload's batch records too
    monkeypatch.setenv("REER_BATCH_POLL_INTERVAL_S", "0")
    monkeypatch.setenv("FAKE_BATCH_KEY", KEY)
    monkeypatch.delenv("REER_GENERATOR_BATCH", raising=False)
    resources = {"generator": ModelBackendResource(role="generator", backend="openai", base_url=api.base_url,
                                                   api_key_env="FAKE_BATCH_KEY"),
                 "lineage": LineageResource(), "runner": WorkloadRunner(mode="in_process")}
    yield api, resources
    api.stop()


def materialize(name: str, resources: dict, config: dict | None = None) -> dg.ExecuteInProcessResult:
    from reer_assets.definitions import defs

    result = dg.materialize([defs.get_assets_def(name)], partition_key=DOMAIN, resources=resources,
                            run_config={"ops": {name: {"config": config}}} if config else None)
    assert result.success, name
    return result


def workload_summary(result) -> dict:
    metadata = result.asset_materializations_for_node("synthesized_queries")[0].metadata
    return {k: getattr(v, "value", v) for k, v in metadata.items()}


@pytest.mark.parametrize("mode", ["in_process", "subprocess"])
def test_synthesized_queries_with_batch_in_its_config(project, tmp_path, mode):
    api, resources = project
    resources = {**resources, "runner": WorkloadRunner(mode=mode)}
    materialize("raw_documents", {"lineage": resources["lineage"], "runner": resources["runner"]})
    result = materialize("synthesized_queries", resources, {"batch": True})

    assert (api.uploads, api.creates) == (1, 1) and len(api.input_lines("batch_0001")) == 3
    meta = workload_summary(result)
    assert meta["workload"]["batch"]["submitted"] == 1 and meta["synthesized"] == 3
    queries = duckdb_store.query("SELECT query, prompt_tokens, completion_tokens, run_id, partition FROM queries")
    assert queries.select("query", "prompt_tokens", "completion_tokens").rows() == [(SYNTHESIZED, 40, 12)] * 3
    batches = duckdb_store.query("SELECT batch_id, status, scope, run_id, partition FROM batches")
    assert batches.select("batch_id", "status", "scope").rows() == [("batch_0001", "completed", "synthesis")]
    # under Pipes the batch rows name the run and the partition; in the step's own process there is no Pipes context
    expected = (result.run_id, DOMAIN) if mode == "subprocess" else (None, None)
    assert batches.select("run_id", "partition").rows() == [expected]
    assert duckdb_store.query("SELECT count(*) FROM batch_requests WHERE status = 'ok'").item() == 3

    # batch off in the config: the same fingerprint, so the partition is reused and nothing is asked
    again = materialize("synthesized_queries", resources, {"batch": False})
    assert workload_summary(again)["reused"] is True and api.creates == 1
    assert storage.read_output("synthesized_queries", "queries", DOMAIN)["query"].to_list() == [SYNTHESIZED] * 3
