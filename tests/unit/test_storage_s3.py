"""Storage that scales: asset files under ``REER_STORAGE_ROOT=s3://bucket/prefix``, against a real S3-compatible
server on loopback (moto's server, started here), and the local default unchanged.

The per-domain stages of a tiny domain (raw_documents -> filtered_dataset, embedded models, workloads in
process) materialise with the root on S3 and lineage in fragments mode: every output, fingerprint and
lineage fragment is an object in the bucket, nothing lands in the local asset folder, a second
materialisation is reused from the fingerprints on S3, and lineage queries read the fragments there.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import polars as pl
import pytest

from reer_assets.defs.resources import LineageResource, ModelBackendResource, WorkloadRunner
from reer_assets.lib import duckdb_store, storage
from tests.support.tiny_domain import DOMAIN, DOMAIN_STAGES, materializer, metadata, write_domains_file

BUCKET, PREFIX = "reer-test", "runs/one"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on a free loopback port, a bucket, and the variables that point fsspec at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    patch = pytest.MonkeyPatch()
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        patch.delenv(name, raising=False)
    patch.setenv("AWS_ACCESS_KEY_ID", "testing")
    patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield {"endpoint": endpoint, "client": client, "patch": patch}
    finally:
        patch.undo()
        server.stop()


def keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@pytest.fixture(scope="module")
def on_s3(s3, tmp_path_factory, embedded_path):
    root = tmp_path_factory.mktemp("s3_stages")
    patch = s3["patch"]
    patch.setenv("DAGSTER_HOME", str(root / "home"))
    patch.setenv("REER_DOMAINS_FILE", str(write_domains_file(root)))
    patch.setenv("REER_PROFILE", "test")
    patch.setenv("REER_STORAGE_ROOT", f"s3://{BUCKET}/{PREFIX}")
    patch.setenv("REER_STORAGE_OPTIONS", json.dumps({"endpoint_url": s3["endpoint"]}))
    patch.setenv("REER_LINEAGE_MODE", "fragments")
    patch.delenv("REER_LINEAGE_DB", raising=False)
    resources = {"generator": ModelBackendResource(role="generator"), "scorer": ModelBackendResource(role="scorer"),
                 "lineage": LineageResource(), "runner": WorkloadRunner(mode="in_process")}
    materialize = materializer(resources)
    results = {name: metadata(materialize(name), name) for name in DOMAIN_STAGES}
    return {"root": root, "home": root / "home", "results": results, "materialize": materialize, **s3}


pytestmark = pytest.mark.model


def test_local_default_is_the_instance_folder_with_plain_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.delenv("REER_STORAGE_ROOT", raising=False)
    path = storage.output_path("raw_documents", "documents", DOMAIN)
    assert type(path) is type(Path()) and path == tmp_path / "reer/assets/raw_documents" / DOMAIN / "documents.parquet"
    assert storage.work_dir("x", DOMAIN, "fp") == tmp_path / "reer/work/x" / DOMAIN / "fp"
    frame = pl.DataFrame({"a": [1, 2]})
    storage.write_parquet(frame, path)
    assert storage.exists(path) and pl.read_parquet(path).equals(frame)
    assert storage.read_parquet(str(path)).equals(frame)
    storage.write_pointer("sft_dataset", {"version": "v1"})
    assert storage.read_pointer("sft_dataset") == {"version": "v1"}
    assert json.loads((tmp_path / "reer/assets/sft_dataset/__all__/current.json").read_text()) == {"version": "v1"}
    assert not list(tmp_path.rglob("*.tmp"))
    monkeypatch.setenv("REER_STORAGE_ROOT", str(tmp_path / "elsewhere"))
    assert storage.asset_dir("raw_documents", DOMAIN) == tmp_path / "elsewhere/assets/raw_documents" / DOMAIN


def test_the_domain_stages_materialise_with_the_root_on_s3(on_s3):
    results = on_s3["results"]
    assert results["raw_documents"]["accepted"] == 2
    assert results["refined_trajectories"]["dagster/row_count"] == 2 and results["refined_trajectories"]["failed"] == 0
    assert results["filtered_dataset"]["accepted"] + results["filtered_dataset"]["rejected"] == 2
    assert results["filtered_dataset"]["path"].startswith(f"s3://{BUCKET}/{PREFIX}/assets/filtered_dataset/")


def test_every_output_and_fingerprint_is_an_object_in_the_bucket(on_s3):
    found = keys(on_s3["client"], f"{PREFIX}/assets/")
    for asset, outputs in storage.OUTPUTS.items():
        if asset not in DOMAIN_STAGES:
            continue
        for file in [*outputs.values(), "fingerprint.json"]:
            assert f"{PREFIX}/assets/{asset}/{DOMAIN}/{file}" in found, (asset, file, found)
    key = f"{PREFIX}/assets/refined_trajectories/{DOMAIN}/trajectories.parquet"
    body = on_s3["client"].get_object(Bucket=BUCKET, Key=key)
    assert pl.read_parquet(io.BytesIO(body["Body"].read())).height == 2
    fingerprint = json.loads(on_s3["client"].get_object(
        Bucket=BUCKET, Key=f"{PREFIX}/assets/filtered_dataset/{DOMAIN}/fingerprint.json")["Body"].read())
    assert fingerprint["summary"]["trajectories"] == 2
    assert not (on_s3["home"] / "reer" / "assets").exists()  # only workload scratch stays local
    assert (on_s3["home"] / "reer" / "work").is_dir()


def test_a_second_materialisation_is_reused_from_the_fingerprints_on_s3(on_s3):
    for name in ("raw_documents", "refined_trajectories"):
        assert metadata(on_s3["materialize"](name), name)["reused"] is True


def test_lineage_fragments_are_objects_and_queries_read_them(on_s3):
    found = keys(on_s3["client"], f"{PREFIX}/lineage/")
    tables = {key.split("/")[3] for key in found}
    assert {"documents", "queries", "trajectories", "dataset_rows"} <= tables
    assert all(key.endswith(".parquet") for key in found)
    counts = duckdb_store.query("SELECT (SELECT count(*) FROM trajectories) AS t, "
                                "(SELECT count(*) FROM dataset_rows) AS r, "
                                "(SELECT count(*) FROM row_provenance WHERE document_id IS NOT NULL) AS p")
    assert counts.to_dicts() == [{"t": 2, "r": 2, "p": 2}]
    before = duckdb_store.query("SELECT * EXCLUDE (recorded_at) FROM documents ORDER BY id")
    duckdb_store.compact()
    assert all(n == 1 for n in duckdb_store.fragment_counts().values())
    assert duckdb_store.query("SELECT * EXCLUDE (recorded_at) FROM documents ORDER BY id").equals(before)
