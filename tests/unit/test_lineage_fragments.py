"""Lineage without a single writer: ``REER_LINEAGE_MODE=fragments`` against the DuckDB file.

A tiny domain is materialised once (raw_documents -> filtered_dataset, the embedded models, workloads in
process) with a lineage resource that writes every batch to both stores, so each table, each named
query, ``reer lineage sql|trace|report`` must answer the same in both modes. Then: writers in several
processes at once (with a compaction running meanwhile) lose nothing, the newest row of an id wins as
``INSERT OR REPLACE`` does, and compaction is idempotent, also as the ``lineage_compaction`` asset.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import polars as pl
import pytest

from reer_assets.defs.resources import LineageResource, ModelBackendResource, WorkloadRunner
from reer_assets.lib import duckdb_store
from tests.support.tiny_domain import DOMAIN_STAGES, materializer, metadata, write_domains_file

pytestmark = pytest.mark.model
REPO = Path(__file__).resolve().parents[2]


class BothStores(LineageResource):
    """The fragments store the resource is configured for, plus the DuckDB file, fed the same frames."""

    def write(self, frames: dict[str, pl.DataFrame]) -> dict[str, int]:
        duckdb_store.write_many(frames, self.db_path, mode="single")
        return super().write(frames)


@pytest.fixture(scope="module")
def lineage(tmp_path_factory, embedded_path):
    root = tmp_path_factory.mktemp("fragments")
    patch = pytest.MonkeyPatch()
    patch.setenv("DAGSTER_HOME", str(root / "home"))
    patch.setenv("REER_DOMAINS_FILE", str(write_domains_file(root)))
    patch.setenv("REER_PROFILE", "test")
    patch.setenv("REER_LINEAGE_DB", str(root / "lineage.duckdb"))
    patch.delenv("REER_STORAGE_ROOT", raising=False)
    patch.delenv("REER_LINEAGE_MODE", raising=False)
    resources = {"generator": ModelBackendResource(role="generator"), "scorer": ModelBackendResource(role="scorer"),
                 "lineage": BothStores(db_path=str(root / "lineage.duckdb"), mode="fragments"),
                 "runner": WorkloadRunner(mode="in_process")}
    materialize = materializer(resources, require_steps=True)
    for name in DOMAIN_STAGES:
        materialize(name)
    yield {"root": root, "db": root / "lineage.duckdb", "fragments": root / "home" / "reer" / "lineage",
           "materialize": materialize, "patch": patch}
    patch.undo()


def reer(capfd, *args: str, mode: str) -> tuple[int, str]:
    """The ``reer`` CLI in this process with REER_LINEAGE_MODE set; (exit code, stdout). With --json the CLI
    writes its document to file descriptor 1 itself, so it is read back with ``capfd``."""
    from reer_assets.cli.main import main

    capfd.readouterr()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REER_LINEAGE_MODE", mode)
        code = main(list(args))
    return code, capfd.readouterr().out


def schema_tables() -> list[str]:
    return sorted(duckdb_store.query("SELECT table_name FROM duckdb_tables()", mode="fragments",
                                     root="/nonexistent")["table_name"].to_list())


def table_rows(table: str, **where) -> pl.DataFrame:
    frame = duckdb_store.query(f"SELECT * FROM {table}", **where)
    keys = [c for c in ("id", "dataset_id", "dataset_row_id") if c in frame.columns]
    return frame.drop([c for c in ("recorded_at",) if c in frame.columns]).sort(keys)


def test_fragments_are_parquet_files_under_the_storage_root(lineage):
    files = sorted(p.relative_to(lineage["fragments"]).parts[0] for p in lineage["fragments"].rglob("*.parquet"))
    assert {"documents", "queries", "trajectories", "search_steps", "candidates", "dataset_rows"} <= set(files)
    assert not list(lineage["fragments"].rglob("*.tmp"))
    run_ids = {p.name.split("-")[0] for p in (lineage["fragments"] / "documents").glob("*.parquet")}
    assert len(run_ids) == 1 and len(next(iter(run_ids))) >= 8  # named after the run that wrote them


def test_every_table_has_the_same_rows_in_both_modes(lineage):
    checked = 0
    for table in schema_tables():
        single = table_rows(table, mode="single", path=lineage["db"])
        fragments = table_rows(table, mode="fragments", root=lineage["fragments"])
        assert single.schema == fragments.schema, table
        assert single.equals(fragments), table
        checked += single.height
    assert checked > 10
    assert duckdb_store.query("SELECT count(*) AS n FROM trajectories", mode="fragments",
                              root=lineage["fragments"])["n"][0] >= 2  # 2 per search seed tried


@pytest.mark.parametrize("sql", [
    "SELECT domain, status, count(*) AS n FROM dataset_rows GROUP BY ALL ORDER BY ALL",
    ("SELECT p.*, d.language, d.reader, d.text_hash FROM row_provenance p JOIN documents d ON d.id = p.document_id "
     "ORDER BY p.dataset_row_id"),
    ("SELECT t.id, count(c.id) AS candidates, sum(c.completion_tokens) AS tokens FROM trajectories t "
     "LEFT JOIN candidates c ON c.trajectory_id = t.id GROUP BY t.id ORDER BY t.id"),
])
def test_reer_lineage_sql_answers_the_same(lineage, sql, capfd):
    code_single, single = reer(capfd, "lineage", "sql", sql, "--json", mode="single")
    code_fragments, fragments = reer(capfd, "lineage", "sql", sql, "--json", mode="fragments")
    assert code_single == code_fragments == 0
    assert json.loads(single) == json.loads(fragments) and json.loads(single)


def test_named_queries_trace_and_search_report_answer_the_same(lineage, capfd):
    _, single = reer(capfd, "lineage", "report", "search", "--json", mode="single")
    _, fragments = reer(capfd, "lineage", "report", "search", "--json", mode="fragments")
    assert json.loads(single) == json.loads(fragments)
    assert any(section["rows"] for section in json.loads(single)["sections"])
    first = duckdb_store.query("SELECT id FROM dataset_rows ORDER BY id LIMIT 1", path=lineage["db"], mode="single")
    row_id = first["id"][0]
    _, single = reer(capfd, "lineage", "trace", row_id, "--json", mode="single")
    _, fragments = reer(capfd, "lineage", "trace", row_id, "--json", mode="fragments")
    assert json.loads(single) == json.loads(fragments) and json.loads(single)["dataset_row_id"] == row_id
    for name in ("stage_counts", "dataset_sources", "incomplete_provenance"):
        sql = duckdb_store.named_query(name)
        params = ["x"] * sql.count("?")
        assert duckdb_store.query(sql, params, mode="single", path=lineage["db"]).equals(
            duckdb_store.query(sql, params, mode="fragments", root=lineage["fragments"])), name


def test_the_newest_row_of_an_id_wins_as_in_the_file(tmp_path):
    def documents(status: str, reasons: list[str]) -> pl.DataFrame:
        return pl.DataFrame({"id": ["doc_a", "doc_b"], "domain": ["d", "d"], "source_uri": ["u#L1", "u#L2"],
                             "status": [status, "accepted"], "reject_reasons": [reasons, []],
                             "run_id": ["run1", "run1"]},
                            schema_overrides={"reject_reasons": pl.List(pl.String)})

    for mode, where in (("single", {"path": tmp_path / "l.duckdb"}), ("fragments", {"root": tmp_path / "frag"})):
        duckdb_store.write_many({"documents": documents("accepted", [])}, mode=mode, **where)
        duckdb_store.write_many({"documents": documents("rejected", ["too_short"])}, mode=mode, **where)
        rows = duckdb_store.query("SELECT id, status, reject_reasons FROM documents ORDER BY id", mode=mode, **where)
        assert rows.to_dicts() == [{"id": "doc_a", "status": "rejected", "reject_reasons": ["too_short"]},
                                   {"id": "doc_b", "status": "accepted", "reject_reasons": []}], mode
    # a table the DDL does not know is kept as written
    duckdb_store.write_many({"extra_table": pl.DataFrame({"id": ["x", "x"], "v": [1, 1]}).unique()}, mode="fragments",
                            root=tmp_path / "frag")
    extra = duckdb_store.query("SELECT v FROM extra_table", mode="fragments", root=tmp_path / "frag")
    assert extra["v"].to_list() == [1]


WRITER = textwrap.dedent("""
    import sys
    import polars as pl
    from reer_assets.lib import duckdb_store

    root, writer, batches, shared = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    for b in range(batches):
        ids = [f"w{writer}_b{b}_{k}" for k in range(3)] + [f"shared_{(b + k) % shared}" for k in range(2)]
        frame = pl.DataFrame({"id": ids, "domain": ["d"] * len(ids), "source_uri": ids,
                              "status": ["accepted"] * len(ids),
                              "run_id": [f"run{writer}"] * len(ids)})
        steps = pl.DataFrame({"id": [f"s_{i}" for i in ids], "trajectory_id": ids, "step_index": [b] * len(ids)},
                             schema_overrides={"step_index": pl.Int32})
        duckdb_store.write_many({"documents": frame, "search_steps": steps}, mode="fragments", root=root)
""")


def test_concurrent_writers_in_fragments_mode_lose_nothing(tmp_path):
    root, writers, batches, shared = tmp_path / "lineage", 4, 12, 5
    compactions: list[dict] = []
    done = threading.Event()

    def compact_meanwhile() -> None:  # one compaction at a time, as the asset's pool guarantees
        while not done.is_set():
            compactions.append(duckdb_store.compact(root))

    compactor = threading.Thread(target=compact_meanwhile)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(w), str(batches), str(shared)], cwd=REPO)
             for w in range(writers)]
    compactor.start()
    try:
        assert [p.wait(timeout=300) for p in procs] == [0] * writers
    finally:
        done.set()
        compactor.join(timeout=120)
    expected = {f"w{w}_b{b}_{k}" for w in range(writers) for b in range(batches) for k in range(3)}
    expected |= {f"shared_{k}" for k in range(shared)}
    for stage in ("before", "after"):
        if stage == "after":
            duckdb_store.compact(root)
            assert duckdb_store.fragment_counts(root) == {"documents": 1, "search_steps": 1}
        docs = duckdb_store.query("SELECT id FROM documents", mode="fragments", root=root)["id"].to_list()
        assert len(docs) == len(set(docs)) and set(docs) == expected, stage
        steps = duckdb_store.query("SELECT trajectory_id FROM search_steps", mode="fragments", root=root)
        assert set(steps["trajectory_id"]) == expected and steps.height == len(expected), stage
    assert compactions and any(r.get("documents", {}).get("files_merged") for r in compactions)


def test_compaction_merges_into_one_file_per_table_and_is_idempotent(lineage, tmp_path):
    root = tmp_path / "lineage"
    shutil.copytree(lineage["fragments"], root)
    before = {t: table_rows(t, mode="fragments", root=root) for t in schema_tables()}
    counts = duckdb_store.fragment_counts(root)
    assert any(n > 1 for n in counts.values()) or len(counts) >= 6
    first = duckdb_store.compact(root)
    assert all(r["files_merged"] == counts[t] for t, r in first.items())
    assert duckdb_store.fragment_counts(root) == {t: 1 for t in counts}
    files = {p: p.read_bytes() for p in root.rglob("*.parquet")}
    second = duckdb_store.compact(root)
    assert all(r["files_merged"] == 0 for r in second.values())
    assert {t: r["rows"] for t, r in second.items()} == {t: r["rows"] for t, r in first.items()}
    assert {p: p.read_bytes() for p in root.rglob("*.parquet")} == files  # nothing rewritten
    for table, frame in before.items():
        assert table_rows(table, mode="fragments", root=root).equals(frame), table
    # and after more writes, the compacted file and the new fragments read together (new rows win)
    newer = before["documents"].head(1).with_columns(status=pl.lit("rejected"), run_id=pl.lit("later"))
    duckdb_store.write_many({"documents": newer}, mode="fragments", root=root)
    merged = table_rows("documents", mode="fragments", root=root)
    assert merged.height == before["documents"].height
    assert merged.filter(pl.col("id") == newer["id"][0])["status"].to_list() == ["rejected"]


def test_lineage_compaction_asset(lineage, tmp_path):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REER_LINEAGE_MODE", "single")
        meta = metadata(lineage["materialize"]("lineage_compaction"), "lineage_compaction")
        assert meta["mode"] == "single" and meta["tables"] == 0
        home = tmp_path / "home"
        shutil.copytree(lineage["fragments"], home / "reer" / "lineage")
        patch.setenv("DAGSTER_HOME", str(home))
        patch.setenv("REER_LINEAGE_MODE", "fragments")
        before = duckdb_store.query("SELECT count(*) AS n FROM candidates")["n"][0]
        first = metadata(lineage["materialize"]("lineage_compaction"), "lineage_compaction")
        again = metadata(lineage["materialize"]("lineage_compaction"), "lineage_compaction")
        assert first["mode"] == "fragments" and first["files_merged"] > 0 and again["files_merged"] == 0  # > 0: the first compaction merged files; the second, exactly none
        assert first["rows"] == again["rows"]
        assert duckdb_store.query("SELECT count(*) AS n FROM candidates")["n"][0] == before


@pytest.mark.timeout(120)
def test_the_later_write_wins_whatever_the_writers_clocks_say(tmp_path, monkeypatch):
    """Two writers on machines whose clocks disagree: the first runs a day ahead, the second is right (and
    later a third runs a day behind). Each write comes after the previous one was published, so each must
    win, as INSERT OR REPLACE in the file would have it; the wall clock decides nothing."""
    import time as clock

    root = tmp_path / "frag"
    day = 86400 * 10**9
    real = clock.time_ns

    def write(status: str, skew_ns: int) -> None:
        frame = pl.DataFrame({"id": ["doc_a"], "domain": ["d"], "source_uri": ["u#L1"], "status": [status],
                              "run_id": [f"run_{status}"]})
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(clock, "time_ns", lambda: real() + skew_ns)  # this machine's clock
            patch.setattr(duckdb_store, "_last_seq", 0)  # a writer process of its own, on another machine
            duckdb_store.write_many({"documents": frame}, mode="fragments", root=root)

    def winner() -> str:
        return duckdb_store.query("SELECT status FROM documents WHERE id = 'doc_a'", mode="fragments",
                                  root=root)["status"].to_list()

    write("ahead", +day)
    write("right", 0)
    assert winner() == ["right"]
    write("behind", -day)
    assert winner() == ["behind"]
    duckdb_store.compact(root)  # the order survives a compaction: the next write still wins
    assert winner() == ["behind"]
    write("after_compaction", -2 * day)
    assert winner() == ["after_compaction"]
    seqs = duckdb_store.query(f"SELECT {duckdb_store.SEQ_COLUMN} AS s FROM read_parquet('{root}/documents/*.parquet')")
    assert seqs["s"].max() < 10**6  # sequences, not nanosecond timestamps
