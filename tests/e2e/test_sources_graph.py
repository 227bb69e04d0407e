"""Four domains, one per source reader (pairs, book, reer, generic), configured in a domains.yaml
over the fixture files: the ingest stage (raw_documents, synthesized_queries) materialises for
each, rejects keep their reasons in Parquet and in lineage, and one domain goes on to
filtered_dataset with the embedded model and the ``test`` profile.

Partitions are fixed when the definitions are imported, so the materialisations run in a
fresh interpreter with REER_DOMAINS_FILE set (this pytest process has the bundled domains).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sources"
DOMAINS = ("fixture_pairs", "fixture_book", "fixture_reer", "fixture_generic")
FULL = "fixture_generic"  # the one domain taken to filtered_dataset: fewest accepted queries, so the fastest search
pytestmark = [pytest.mark.model, pytest.mark.slow]

# (accepted, {reason kind: rejected rows}) per domain on the fixtures, with the fixture domains.yaml
EXPECTED = {
    "fixture_pairs": (5, {"missing_field": 2, "empty_file": 1, "bad_csv_row": 1, "score_below_min": 1,
                          "invalid_json": 1, "invalid_encoding": 1, "exact_duplicate_of": 1, "near_duplicate_of": 1,
                          "language_not_allowed": 1, "too_short": 1, "not_an_object": 1, "bad_field": 1}),
    "fixture_book": (7, {"empty_file": 1, "too_short": 1, "invalid_encoding": 1, "missing_gutenberg_markers": 1}),
    "fixture_reer": (5, {"empty_file": 1, "missing_field": 1, "not_an_object": 1, "invalid_encoding": 1,
                         "exact_duplicate_of": 1, "empty_text": 1, "invalid_json": 1}),
    "fixture_generic": (4, {"missing_field": 2, "empty_file": 1, "invalid_encoding": 1, "invalid_json": 1,
                            "too_short": 1}),
}

RUNNER = """
import json, sys, time
import dagster as dg
from reer_assets.definitions import defs
from reer_assets.defs.resources import default_resources

assets = {name: defs.get_assets_def(name) for name in ("raw_documents", "synthesized_queries", "refined_trajectories",
                                                       "filtered_dataset")}
checks = [c for c in defs.asset_checks if "filtered_dataset" in str(c.check_keys)]
instance, resources, report = dg.DagsterInstance.ephemeral(), default_resources(), []
for name, domain in json.loads(sys.argv[1]):
    selection = [assets[name], *(checks if name == "filtered_dataset" else [])]
    started = time.perf_counter()
    result = dg.materialize(selection, partition_key=domain, resources=resources, instance=instance, raise_on_error=False)
    metadata = {}
    events = result.asset_materializations_for_node(name)  # a failed blocking check fails the run, not the asset
    if events:
        metadata = {k: getattr(v, "value", v) for k, v in events[0].metadata.items()}
    report.append({"asset": name, "domain": domain, "success": bool(events), "metadata": metadata,
                   "seconds": round(time.perf_counter() - started, 1),
                   "checks": {e.check_name: e.passed for e in result.get_asset_check_evaluations()}})
print(json.dumps(report, default=str))
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory, embedded_path):
    root = tmp_path_factory.mktemp("sources_graph")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copytree(FIXTURES, root / "sources")  # domains.yaml paths are relative to the file
    plan = [[asset, domain] for domain in DOMAINS for asset in ("raw_documents", "synthesized_queries")]
    plan += [["refined_trajectories", FULL], ["filtered_dataset", FULL]]
    env = {**os.environ, "DAGSTER_HOME": str(home), "REER_DOMAINS_FILE": str(root / "sources" / "domains.yaml"),
           "REER_PROFILE": "test"}
    env.pop("REER_LINEAGE_DB", None)
    out = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(plan)], env=env, capture_output=True, text=True,
                         timeout=1800)
    assert out.returncode == 0, out.stderr[-4000:]
    report = {(r["asset"], r["domain"]): r for r in json.loads(out.stdout.strip().splitlines()[-1])}
    return {"home": home, "report": report, "stderr": out.stderr}


def parquet(run, asset: str, domain: str, name: str) -> pl.DataFrame:
    return pl.read_parquet(run["home"] / "reer/assets" / asset / domain / name)


def test_every_planned_materialisation_succeeds(run):
    failed = [key for key, r in run["report"].items() if not r["success"]]
    assert not failed, run["stderr"][-4000:]


@pytest.mark.parametrize("domain", DOMAINS)
def test_raw_documents_keep_rejects_with_reasons(run, domain):
    from reer_assets.core.ingest.pipeline import ingest_summary

    frame = parquet(run, "raw_documents", domain, "documents.parquet")
    accepted, reasons = EXPECTED[domain]
    summary = ingest_summary(frame.iter_rows(named=True))
    assert (summary["accepted"], summary["reasons"]) == (accepted, reasons)
    rejected = frame.filter(pl.col("status") == "rejected")
    assert (rejected["reject_reasons"].list.len() > 0).all()  # > 0: every rejected row names at least one reason
    assert (frame.filter(pl.col("status") == "accepted")["reject_reasons"].list.len() == 0).all()
    assert frame["reader"].unique().to_list() == [domain.removeprefix("fixture_")]
    assert frame["source_uri"].str.starts_with("file:///").all()
    metadata = run["report"][("raw_documents", domain)]["metadata"]
    assert metadata["dagster/row_count"] == frame.height and metadata["rejected"] == rejected.height


def test_lineage_documents_carry_reasons_and_duplicates(run):
    from reer_assets.lib import duckdb_store

    db = run["home"] / "lineage.duckdb"
    docs = duckdb_store.query("SELECT domain, reader, status, reject_reasons, duplicate_of, source_uri, source_id "
                              "FROM documents", path=db)
    for domain, (accepted, reasons) in EXPECTED.items():
        rows = docs.filter(pl.col("domain") == domain)
        assert rows.filter(pl.col("status") == "accepted").height == accepted
        rejected = rows.filter(pl.col("status") == "rejected")
        assert rejected.height == sum(reasons.values()) and (rejected["reject_reasons"].list.len() > 0).all()  # > 0: every rejected row names at least one reason
    duplicates = docs.filter(pl.col("reject_reasons").list.first().str.contains("duplicate_of"))
    assert duplicates.height == 3 and duplicates["duplicate_of"].is_not_null().all()
    kept = set(docs.filter(pl.col("status") == "accepted")["source_uri"].to_list())
    assert all(uri in kept for uri in duckdb_store.query(
        "SELECT k.source_uri FROM documents d JOIN documents k ON k.id = d.duplicate_of", path=db)["source_uri"])
    wp = docs.filter(pl.col("source_uri").str.ends_with("writing_prompts.jsonl#L1"))
    assert wp["source_id"].to_list() == ["wp-101"]


@pytest.mark.parametrize("domain", DOMAINS)
def test_queries_pass_given_requests_and_synthesize_the_rest(run, domain):
    docs = parquet(run, "raw_documents", domain, "documents.parquet").filter(pl.col("status") == "accepted")
    queries = parquet(run, "synthesized_queries", domain, "queries.parquet")
    assert queries.height == docs.height
    joined = queries.join(docs.select(pl.col("id").alias("document_id"), "given_request"), on="document_id")
    given = joined.filter(pl.col("given_request").is_not_null())
    assert (given["query"] == given["given_request"]).all() and (~given["synthesized"]).all()
    made = joined.filter(pl.col("given_request").is_null())
    assert made["synthesized"].all() and made["raw_output"].is_not_null().all()
    assert made["model"].str.starts_with("reer-embedded:").all()
    assert (queries.filter(pl.col("status") == "rejected")["reject_reasons"].list.len() > 0).all()  # > 0: every rejected row names at least one reason


def test_one_domain_reaches_filtered_dataset(run):
    from reer_assets.lib import duckdb_store

    report = run["report"][("filtered_dataset", FULL)]
    frame = parquet(run, "filtered_dataset", FULL, "dataset.parquet")
    # the structural checks pass; the not-empty check says whether any row was accepted (the toy model may get none)
    assert report["checks"]["filtered_dataset_schema"] and report["checks"]["filtered_dataset_unique_queries"]
    assert report["checks"]["filtered_dataset_not_empty"] == bool((frame["status"] == "accepted").any())
    trajectories = parquet(run, "refined_trajectories", FULL, "trajectories.parquet")
    assert frame.height == trajectories.height > 0  # equal to the trajectories; > 0 so the check is not vacuous
    assert (frame.filter(pl.col("status") == "rejected")["reject_reasons"].list.len() > 0).all()  # > 0: every rejected row names at least one reason
    sources = duckdb_store.query("SELECT source_uri FROM row_provenance WHERE domain = ?", [FULL],
                                 path=run["home"] / "lineage.duckdb")["source_uri"].to_list()
    assert sources and all(s.startswith("file:///") and "/generic/" in s for s in sources)
