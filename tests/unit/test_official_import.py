"""Importing the official REER code's output files, and writing ours in that layout (docs/interop.md).

The fixtures in tests/fixtures/official are our own text in the official layout: English and Chinese
items, several rollouts, an early stop, a truncated file, a file without ``alist``, a rollout missing
a field, and the run's input list (one uid there has no file).
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

from reer_assets.core.ingest.official import (
    GAP_REASON, SOURCE, expected_uids, export_rows, import_paths, render,
)
from reer_assets.core.trace import SearchTrace
from reer_assets.cli.imports import LINEAGE_TABLES, import_official
from reer_assets.lib import duckdb_store

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "official"
REPO = FIXTURES.parents[2]
pytestmark = pytest.mark.timeout(300)


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def batch():
    return import_paths([FIXTURES], "essays", expected_uids(FIXTURES / "input.json"))


def by_uid(batch, uid: str) -> list[dict]:
    return sorted((r for r in batch.trajectories if SearchTrace.from_json(r["trace_json"]).item_id == uid),
                  key=lambda r: r["rollout"])


def test_every_file_and_every_expected_item_is_accounted_for(batch):
    files = sorted(p.name for p in FIXTURES.glob("*_meta.jsonl"))
    assert sorted(Path(r.file).name for r in batch.records if r.status != "absent") == files
    status = {r.uid: (r.status, r.reason) for r in batch.records}
    assert {u for u, (s, _) in status.items() if s == "imported"} == {"7", "12", "15", "33"}
    assert status["21"][0] == "rejected" and status["21"][1].startswith("invalid_json")
    assert status["30"][0] == "rejected" and status["30"][1].startswith("missing_alist")
    assert status["40"][0] == "absent"  # in the input list, no file; 21 has a (broken) file, so it is not absent
    assert [r.uid for r in batch.records if r.status == "absent"] == ["40"]
    # every rollout of every imported file is a trajectory row, the malformed one included
    assert len(batch.trajectories) == 2 + 1 + 2 + 2
    summary = batch.summary()
    assert (summary["imported"], summary["rejected"], summary["absent"]) == (4, 2, 1)


def test_scores_steps_and_candidates_map_as_documented(batch):
    official = fixture("run_7_rk0_meta.jsonl")
    rows = by_uid(batch, "7")
    assert [r["rollout"] for r in rows] == [0, 1]
    for row, entry in zip(rows, official["alist"]):
        trace = SearchTrace.from_json(row["trace_json"])
        assert row["status"] == "ok" and row["query"] == official["q"] and row["reference"] == official["ref"]
        assert row["initial_score"] == entry["initial_ppl"][0] == trace.initial_score
        assert row["final_score"] == entry["finalized_avg_token_logp"]
        assert trace.initial_thinking == entry["initial_response"].split("</think>")[0]
        assert trace.initial_raw == "<think>\n" + entry["initial_response"]
        assert trace.initial_segments == entry["thinking_segments"]
        assert trace.initial_tokens == entry["ntokens"] == row["completion_tokens"]
        assert row["final_thinking"] == "\n\n".join(entry["corrected_thinking"])
        assert row["generator_model"] == entry["generator"] and row["prompt_set_version"] == SOURCE
        assert trace.config["imported"] == SOURCE and trace.config["file"] == "run_7_rk0_meta.jsonl"
        assert trace.config["uid"] == "7" and trace.config["rank"] == 0
        steps = [entry[k] for k in entry if k.startswith("refine_thinking_step_No.")]
        assert row["num_steps"] == len(steps) == len(trace.steps)
        for step, raw in zip(trace.steps, steps):
            assert step.best_score == raw["after_avg_token_logp"]
            assert step.segment == raw["segment_to_refine"]
            assert (step.choice is None) == (raw["choice"] == "original")
            if step.choice is not None:
                assert raw["choice"] == f"refinement_No.{step.choice}"
                assert step.candidates[step.choice].text == raw["chosen_refinement"]
            for cand_entry in raw["possible_refinements"]:
                (body,) = cand_entry.values()
                cand = step.candidates[body["id"]]
                assert (cand.text, cand.raw, cand.score) == (body["refinement"], body["raw_output"], body["avg_token_logp"])
    # rollout 1 kept only expansion 1: expansion 0 (an output without <refine>) is a skipped candidate
    step = SearchTrace.from_json(rows[1]["trace_json"]).steps[0]
    assert [c.skipped_reason for c in step.candidates] == [GAP_REASON, None] and step.choice == 1
    assert rows[1]["scorer_calls"] == 2 and rows[1]["generator_calls"] == 2  # z0 + one scored candidate; z0 + one step


def test_chinese_item_and_early_stop(batch):
    (zh,) = by_uid(batch, "12")
    trace = SearchTrace.from_json(zh["trace_json"])
    assert trace.language == "zh" and trace.stopped_reason == "all_segments_visited" and zh["final_score"] == 1.0411
    early = by_uid(batch, "15")
    official = fixture("run_15_rk1_meta.jsonl")
    for row, entry in zip(early, official["alist"]):
        trace = SearchTrace.from_json(row["trace_json"])
        assert trace.skipped_search and not trace.steps and trace.stopped_reason == "official_early_stop"
        assert row["initial_score"] == row["final_score"] == entry["initial_ppl"][0]
        assert row["final_thinking"] == row["initial_thinking"]
    record = next(r for r in batch.records if r.uid == "15")
    assert (record.rank, record.early_stops, record.steps) == (1, 2, 0)


def test_the_official_inputs_published_thinking_is_kept_beside_the_reference(batch):
    """old_solution "<think>已有的思考</think>…" (uid 12): its thinking goes to published_thinking; an item
    whose old_solution is null has none."""
    documents = {json.loads(d["source_meta"])["uid"]: d for d in batch.documents}
    queries = {q["document_id"]: q for q in batch.queries}
    assert documents["12"]["published_thinking"] == "已有的思考"
    assert queries[documents["12"]["id"]]["published_thinking"] == "已有的思考"
    assert documents["15"]["published_thinking"] is None
    # the trajectories carry it (for the published ablation variant), but no score: the official files do not
    # score old_solution, so published_score stays NULL
    rows = [r for r in batch.trajectories if r["document_id"] == documents["12"]["id"]]
    assert rows and all(r["published_thinking"] == "已有的思考" and r["published_score"] is None for r in rows)
    assert all(r["published_score"] is None for r in batch.trajectories)


def test_a_rollout_missing_a_field_is_a_rejected_trajectory(batch):
    good, bad = by_uid(batch, "33")
    assert good["status"] == "ok"
    assert bad["status"] == "rejected" and bad["reject_reason"] == "official_rollout_malformed: alist[1] lacks initial_ppl"
    assert next(r for r in batch.records if r.uid == "33").rejected_rollouts == 1


def _mutated(tmp_path: Path, change) -> Path:
    doc = fixture("run_7_rk0_meta.jsonl")
    text = change(doc)
    path = tmp_path / "x_7_rk0_meta.jsonl"
    path.write_bytes(text if isinstance(text, bytes) else (text if isinstance(text, str) else render(doc)).encode())
    return path


def _drop(doc, key):
    del doc[key]


REJECTS = {
    "a list": (lambda d: "[1, 2]\n", "not_a_json_object"),
    "empty": (lambda d: "\n", "empty_file"),
    "latin-1": (lambda d: b'{"q": "caf\xe9"}', "not_utf8"),
    "no q": (lambda d: _drop(d, "q"), "missing_field: q"),
    "empty alist": (lambda d: d.update(alist=[]), "empty_alist"),
}


@pytest.mark.parametrize("case", sorted(REJECTS))
def test_malformed_files_are_rejected_with_a_reason(tmp_path, case):
    change, reason = REJECTS[case]
    result = import_paths([_mutated(tmp_path, change)], "essays")
    (record,) = result.records
    assert record.status == "rejected" and record.reason.startswith(reason) and not result.trajectories


ROLLOUT_REJECTS = {
    "unknown choice": (lambda d: d["alist"][0]["refine_thinking_step_No.1"].update(choice="best"), "neither 'original'"),
    "step gap": (lambda d: d["alist"][0].update({"refine_thinking_step_No.4": d["alist"][0].pop(
        "refine_thinking_step_No.2")}), "not 1..n"),
    "text score": (lambda d: d["alist"][0].update(initial_ppl=["low"]), "initial_ppl[0] is not a number"),
    "no finalized": (lambda d: d["alist"][0].pop("finalized_avg_token_logp"), "lacks corrected_thinking or finalized"),
}


@pytest.mark.parametrize("case", sorted(ROLLOUT_REJECTS))
def test_malformed_rollouts_are_rejected_trajectories_with_a_reason(tmp_path, case):
    change, reason = ROLLOUT_REJECTS[case]
    result = import_paths([_mutated(tmp_path, change)], "essays")
    (record,) = result.records
    assert record.status == "imported" and record.rejected_rollouts == 1
    first, second = result.trajectories
    assert first["status"] == "rejected" and reason in first["reject_reason"] and second["status"] == "ok"


def lineage_rows(db: Path) -> dict[str, list[dict]]:
    """Every imported table, without what says when and where the rows were written."""
    out = {}
    for table in LINEAGE_TABLES:
        frame = duckdb_store.query(f"SELECT * FROM {table} ORDER BY id", path=db, mode="single")
        out[table] = frame.drop("run_id", "recorded_at", "partition", strict=False).to_dicts()
    return out


def test_round_trip_through_the_official_layout_is_exact(tmp_path, batch):
    first_db, second_db = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    report = import_official([str(FIXTURES)], "essays", db_path=first_db)
    assert report["lineage"]["trajectories"] == 7 and report["lineage"]["candidates"] == 10
    written = export_rows(batch.trajectories, tmp_path / "out")
    assert written["not_written"] == {"rejected": 1}  # the malformed rollout has no official form
    assert sorted(written["files"]) == ["run_12_rk0_meta.jsonl", "run_15_rk1_meta.jsonl", "run_33_rk0_meta.jsonl",
                                        "run_7_rk0_meta.jsonl"]
    # the files equal the originals but for what the import documents as lost (initial_ppl's token list)
    for name in ("run_7_rk0_meta.jsonl", "run_12_rk0_meta.jsonl", "run_15_rk1_meta.jsonl"):
        original = fixture(name)
        for entry in original["alist"]:
            entry["initial_ppl"] = entry["initial_ppl"][:1] + [[]]
        assert json.loads((tmp_path / "out" / name).read_text(encoding="utf-8")) == original, name
    # the malformed rollout of uid 33 has no official form: its original file stands in for it
    shutil.copy(FIXTURES / "run_33_rk0_meta.jsonl", tmp_path / "out" / "run_33_rk0_meta.jsonl")
    import_official([str(tmp_path / "out")], "essays", db_path=second_db)
    before, after = lineage_rows(first_db), lineage_rows(second_db)
    for doc in before["documents"] + after["documents"]:  # the one difference: where the file lay
        uri = doc.pop("source_uri")
        assert uri.startswith("file://") and uri.endswith("/" + json.loads(doc["source_meta"])["file"])
    assert before == after
    # and writing the re-imported rows again gives the same bytes
    again = import_paths([tmp_path / "out"], "essays")
    export_rows(again.trajectories, tmp_path / "out2")
    for name in ("run_7_rk0_meta.jsonl", "run_12_rk0_meta.jsonl", "run_15_rk1_meta.jsonl"):
        assert (tmp_path / "out2" / name).read_bytes() == (tmp_path / "out" / name).read_bytes()


def _reer(*args: str, env: dict) -> subprocess.CompletedProcess:
    merged = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    return subprocess.run([sys.executable, "-m", "reer_assets.cli", *args], capture_output=True, text=True,
                          env=merged, cwd=REPO, timeout=240)


def test_cli_import_and_export_json(tmp_path, batch):
    env = {"REER_LINEAGE_DB": str(tmp_path / "lineage.duckdb"), "DAGSTER_HOME": str(tmp_path / "home"),
           "REER_LINEAGE_MODE": "single", "REER_STORAGE_ROOT": None}
    done = _reer("import", "official", str(FIXTURES), "--domain", "essays", "--input", str(FIXTURES / "input.json"),
                 "--json", env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {r["uid"]: r["status"] for r in report["files"]} == {
        "7": "imported", "12": "imported", "15": "imported", "33": "imported", "21": "rejected", "30": "rejected",
        "40": "absent"}
    assert report["summary"]["trajectories"] == 7 and report["lineage"]["documents"] == 4
    # the documents row carries the provenance: reader, uid and file, joined from a trajectory
    joined = duckdb_store.query(
        "SELECT d.reader, d.source_id, d.source_meta, t.status FROM trajectories t "
        "JOIN documents d ON d.id = t.document_id ORDER BY d.source_id, t.rollout", path=tmp_path / "lineage.duckdb",
        mode="single")
    assert set(joined["reader"]) == {SOURCE} and joined.height == 7
    assert {json.loads(m)["file"] for m in joined["source_meta"]} == {
        "run_7_rk0_meta.jsonl", "run_12_rk0_meta.jsonl", "run_15_rk1_meta.jsonl", "run_33_rk0_meta.jsonl"}
    # reer export reads refined_trajectories' Parquet output of a domain
    target = tmp_path / "home" / "reer" / "assets" / "refined_trajectories" / "essays" / "trajectories.parquet"
    target.parent.mkdir(parents=True)
    batch.frames()["trajectories"].write_parquet(target)
    done = _reer("export", "--format", "reer-official", "--domain", "essays", "--out", str(tmp_path / "out"), "--json",
                 env=env)
    assert done.returncode == 0, done.stderr
    written = json.loads(done.stdout)
    assert written["items"] == 4 and written["rows"] == 6
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(written["files"])
    # nothing importable: exit 1, with the reason on stdout
    done = _reer("import", "official", str(FIXTURES / "run_21_rk1_meta.jsonl"), "--domain", "essays", "--json", env=env)
    assert done.returncode == 1 and json.loads(done.stdout)["files"][0]["reason"].startswith("invalid_json")


@pytest.mark.model
@pytest.mark.timeout(600)
def test_our_own_search_exports_and_imports_back(embedded_generator, embedded_scorer, tmp_path):
    """A real search of the engine, written in the official layout and read back: the same scores,
    thinkings, choices and scored candidates."""
    from reer_assets.core.refinement import ReerSearch, SearchConfig, SearchItem
    from reer_assets.core.trajectories import trajectory_row

    config = SearchConfig(ban_foreign_tags=True, min_rollout_tokens=48, min_segment_chars=40, max_step=2,
                          max_tokens=160, edit_max_tokens=96, stop_thresh=0.0)
    query = "Write a short welcome note for new neighbours on our street."
    reference = ("Welcome to the street! The bakery on the corner opens at seven.\n\nThe park gate is behind the "
                 "school, and on Sundays the market fills the square. Come by for tea any afternoon.")
    for seed in range(8):
        trace = ReerSearch(embedded_generator, embedded_scorer, config, seed=seed).run(SearchItem("n1", query, reference))
        if trace.status == "ok" and trace.steps:
            break
    else:
        pytest.fail("the embedded model gave no searchable initial thinking in 8 seeds")
    query_row = {"id": "query_n1", "document_id": "doc_n1", "domain": "essays", "query": query, "reference": reference}
    row = trajectory_row(query_row, "traj_n1", trace, "cfg", 1.0)
    written = export_rows([row], tmp_path / "out")
    (name,) = written["files"]
    document = json.loads((tmp_path / "out" / name).read_text(encoding="utf-8"))
    assert (document["q"], document["ref"], document["uid"]) == (query, reference, "query_n1")
    (entry,) = document["alist"]
    assert entry["initial_ppl"][0] == trace.initial_score and entry["finalized_avg_token_logp"] == trace.final_score
    back = import_paths([tmp_path / "out"], "essays")
    assert [r.status for r in back.records] == ["imported"] and not back.records[0].notes
    (imported,) = back.trajectories
    again = SearchTrace.from_json(imported["trace_json"])
    assert (imported["initial_score"], imported["final_score"]) == (trace.initial_score, trace.final_score)
    assert again.initial_thinking == trace.initial_thinking and imported["final_thinking"] == trace.final_thinking
    assert again.initial_segments == trace.initial_segments and again.initial_tokens == trace.initial_tokens
    assert [(s.choice, s.best_score, s.segment) for s in again.steps] == [
        (s.choice, s.best_score, s.segment.strip()) for s in trace.steps]
    for ours, theirs in zip(trace.steps, again.steps):
        scored = [(c.text, c.score) for c in ours.candidates if c.text is not None]
        assert [(c.text, c.score) for c in theirs.candidates if c.text is not None] == scored


def test_asset_imports_a_folder_and_curation_reads_it(tmp_path, monkeypatch):
    """refined_trajectories with ``official_outputs``: no model, the same outputs, filtered_dataset unchanged."""
    import dagster as dg

    from reer_assets.definitions import defs
    from reer_assets.defs.resources import LineageResource, ModelBackendResource, WorkloadRunner

    (tmp_path / "domains.yaml").write_text("domains:\n  essays:\n    languages: [en, zh]\n", encoding="utf-8")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("REER_DOMAINS_FILE", str(tmp_path / "domains.yaml"))
    monkeypatch.setenv("REER_PROFILE", "test")
    monkeypatch.delenv("REER_STORAGE_ROOT", raising=False)
    monkeypatch.delenv("REER_LINEAGE_MODE", raising=False)
    db = tmp_path / "lineage.duckdb"
    resources = {"generator": ModelBackendResource(role="generator"), "scorer": ModelBackendResource(role="scorer"),
                 "lineage": LineageResource(db_path=str(db)), "runner": WorkloadRunner(mode="in_process")}
    assets = [defs.get_assets_def("refined_trajectories"), defs.get_assets_def("filtered_dataset")]
    result = dg.materialize(assets, partition_key="essays", resources=resources,
                            instance=dg.DagsterInstance.ephemeral(),
                            run_config={"ops": {"refined_trajectories": {"config": {"official_outputs": str(FIXTURES)}}}})
    assert result.success
    meta = result.asset_materializations_for_node("refined_trajectories")[0].metadata
    assert meta["dagster/row_count"].value == 7 and "run_21_rk1_meta.jsonl" in meta["rejected_files"].value
    dataset = pl.read_parquet(tmp_path / "home" / "reer" / "assets" / "filtered_dataset" / "essays" / "dataset.parquet")
    assert dataset.height == 7
    malformed = dataset.filter(pl.col("reject_reasons").list.first().str.starts_with("search_rejected:official_rollout"))
    assert malformed.height == 1
    provenance = duckdb_store.query("SELECT p.dataset_row_id, p.source_uri FROM row_provenance p", path=db, mode="single")
    assert provenance.height == 7 and provenance["source_uri"].str.contains("_meta.jsonl").all()
