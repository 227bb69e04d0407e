"""DeepWriting-20K's verl layout in and out (issue 24 §2): the ``deepwriting`` reader on JSONL and Parquet,
published thinking kept beside the reference (documents -> queries -> lineage, also for the ``reer`` reader),
``reer export --format deepwriting`` read back equal, and the judge's scores in WritingBench's own layout,
aggregated as WritingBench aggregates them.

Fixtures are ours: ``tests/fixtures/deepwriting/items.jsonl`` (rows in the verl layout, with every kind of
bad row) and Parquet files written here with pyarrow. The graph parts run the real assets in process
(raw_documents, synthesized_queries with given requests so no model is called, sft_dataset).
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reer_assets.core.ingest.pipeline import ingest_path
from reer_assets.core.ingest.readers import deepwriting, reer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ITEMS = FIXTURES / "deepwriting" / "items.jsonl"
DOMAIN = "education"  # a partition of the bundled domains; its sources are replaced by the fixture


def by_place(records) -> dict:
    return {r.source_uri.rsplit("#", 1)[-1]: r for r in records}


def fixture_rows() -> dict[str, dict]:
    """The fixture's well-formed JSON rows by index (what a DeepWriting Parquet file would hold)."""
    rows = {}
    for line in ITEMS.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows[str(row["extra_info"]["index"])] = row
    return rows


# ---------------------------------------------------------------- the reader


def test_jsonl_rows_map_request_answer_thinking_id_and_metadata():
    """What maps to what, and every bad row a reject with its reason (the rows after it still load)."""
    records = by_place(deepwriting.read_deepwriting("d", {"path": str(ITEMS)}))
    rows = fixture_rows()
    scene = records["index=101"]
    assert scene.source_id == "101" and scene.domain == "d" and scene.read_error is None
    assert scene.given_request == rows["101"]["prompt"][1]["content"]  # the user turn, not the system turn
    assert scene.text.startswith("The keeper counted") and "<think>" not in scene.text
    assert scene.published_thinking.startswith("The request wants") and scene.published_thinking.endswith("explaining.")
    assert scene.meta == {"data_source": "deepwriting/fiction", "ability": "writing",
                          "reward_model": {"style": "model", "ground_truth": ""}, "extra_info": {"split": "train"}}
    tea = records["index=102"]  # Chinese, tags without line breaks
    assert tea.given_request == "写一段描写清晨茶馆的短文。" and tea.text.startswith("清晨的茶馆里")
    assert tea.published_thinking.startswith("用户想要") and "</think>" not in tea.published_thinking
    memo = records["index=103"]  # `question` instead of `prompt`, no thinking
    assert memo.given_request.startswith("Write a short office memo") and memo.published_thinking is None
    assert memo.meta == {"data_source": "deepwriting/business", "ability": "writing"}
    essay = records["index=104"]  # an <answer> block after the thinking is unwrapped
    assert essay.text.startswith("My grandmother") and essay.text.endswith("year before.")
    assert essay.published_thinking.startswith("An essay about a habit")
    assert records["index=108"].text == "" and records["index=108"].read_error is None  # cleaning rejects it
    assert {place: r.read_error for place, r in records.items() if r.read_error} == {
        "L5": "invalid_json:Unterminated string starting at (column 79)",
        "index=105": "missing_field:solution",
        "index=106": "unclosed_thinking:solution opens thinking but has no </think>",
        "index=107": "bad_field:prompt:no user turn",
        "L11": "not_an_object:list",
    }


def test_parquet_written_with_pyarrow_reads_like_the_jsonl(tmp_path):
    """Parquet (nested list-of-struct prompt, struct metadata, integer index) gives the same records."""
    rows = fixture_rows()
    text = pa.string()
    schema = pa.schema([("data_source", text), ("prompt", pa.list_(pa.struct([("role", text), ("content", text)]))),
                        ("ability", text), ("reward_model", pa.struct([("style", text), ("ground_truth", text)])),
                        ("extra_info", pa.struct([("index", pa.int64()), ("split", text)])), ("question", text),
                        ("solution", text)])
    pq.write_table(pa.Table.from_pylist(list(rows.values()), schema=schema), tmp_path / "train.parquet",
                   row_group_size=3)
    from_parquet = {r.source_id: r for r in deepwriting.read_deepwriting("d", {"path": str(tmp_path / "train.parquet"),
                                                                               "batch_size": 2})}
    from_jsonl = {r.source_id: r for r in deepwriting.read_deepwriting("d", {"path": str(ITEMS)})
                  if r.source_id in rows}
    assert sorted(from_parquet) == sorted(rows) == sorted(from_jsonl)
    for index, record in from_parquet.items():
        other = from_jsonl[index]
        assert record.source_uri.endswith(f"train.parquet#index={index}")
        assert (record.given_request, record.text, record.published_thinking, record.read_error, record.meta) == (
            other.given_request, other.text, other.published_thinking, other.read_error, other.meta), index


def test_unreadable_parquet_files_are_rejects_not_crashes(tmp_path):
    pq.write_table(pa.table({"prompt": ["Write a haiku."], "answer": ["Cold rain on the roof."]}),
                   tmp_path / "a.parquet")
    (tmp_path / "b.parquet").write_bytes(b"PAR1 this is not parquet")
    (tmp_path / "notes.txt").write_text("not a dataset file", encoding="utf-8")
    records = by_place_name(deepwriting.read_deepwriting("d", {"path": str(tmp_path)}))
    assert records["a.parquet"].read_error == "missing_field:solution (no such column; columns: answer, prompt)"
    assert records["b.parquet"].read_error.startswith("unreadable:")
    assert records["notes.txt"].read_error == "unsupported_extension:.txt"
    with pytest.raises(ValueError, match="unknown option"):
        list(deepwriting.read_deepwriting("d", {"path": str(tmp_path), "answer_field": "x"}))
    with pytest.raises(ValueError, match="format must be jsonl or parquet"):
        list(deepwriting.read_deepwriting("d", {"path": str(tmp_path), "format": "csv"}))


def by_place_name(records) -> dict:
    return {r.source_uri.rsplit("/", 1)[-1]: r for r in records}


def test_requests_may_be_synthesized_when_asked():
    """``require_request: false``: a row without a user turn loads, its request left to synthesis."""
    records = by_place(deepwriting.read_deepwriting("d", {"path": str(ITEMS), "require_request": False}))
    assert records["index=107"].read_error is None and records["index=107"].given_request is None
    assert deepwriting.request_of("A plain string prompt. ") == ("A plain string prompt.", None)
    assert deepwriting.request_of([{"role": "user", "content": "first"}, {"role": "assistant", "content": "x"},
                                   {"role": "user", "content": "second"}]) == ("second", None)
    assert deepwriting.request_of({"role": "user"}) == (None, "not a list of messages (dict)")


def test_reer_reader_keeps_the_published_thinking():
    """The official input list: the thinking before </think> is kept, not dropped; the answer is as before."""
    records = by_place(reer.read_reer("d", {"path": str(FIXTURES / "sources" / "reer" / "items.json")}))
    kite = records["index=0"]
    assert kite.text.startswith("The kite went up") and kite.meta["had_thinking"] is True
    assert kite.published_thinking == ("Alright, the user wants a warm scene. I will keep it small and let the laugh "
                                       "carry it.")
    assert records["index=1"].published_thinking is None
    assert reer.split_solution("<think>\nplan\n</think>\n<answer>\nThe end.\n</answer>") == ("The end.", "plan")
    assert reer.split_solution("a</think>b</think> c") == ("c", "a</think>b")
    assert reer.split_solution("</think>answer only") == ("answer only", None)


def test_documents_rows_carry_published_thinking_and_it_is_part_of_the_id():
    rows = {r["source_id"]: r for r in ingest_path("deepwriting", str(ITEMS), "d", {"languages": "en,zh"})}
    assert rows["101"]["status"] == "accepted" and rows["101"]["published_thinking"].startswith("The request wants")
    assert rows["103"]["status"] == "accepted" and rows["103"]["published_thinking"] is None
    assert rows["108"]["status"] == "rejected"  # thinking only: nothing to learn to write
    reer_file = str(FIXTURES / "sources" / "reer" / "items.json")
    reer_rows = {r["source_id"]: r for r in ingest_path("reer", reer_file, "d", {})}
    assert reer_rows["0"]["published_thinking"].startswith("Alright, the user")
    # the same answer with another published thinking is another document
    from reer_assets.core.ingest.pipeline import Cleaner, CleaningConfig
    from reer_assets.core.ingest.readers.common import SourceRecord

    cleaner = Cleaner("d", CleaningConfig(near_duplicate_threshold=None), [], "cfg")
    text = "word " * 60
    plain, thought = (cleaner.row(SourceRecord("file:///x#index=1", text, published_thinking=t), "deepwriting")
                      for t in (None, "a plan"))
    assert plain["id"] != thought["id"] and thought["published_thinking"] == "a plan"


def test_an_old_lineage_database_gains_the_column(tmp_path):
    """A database made before the column existed is migrated when opened; its rows stay, with NULL."""
    from reer_assets.lib import duckdb_store

    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute((duckdb_store.SQL_DIR / "schema" / "001_lineage.sql").read_text())
    assert "published_thinking" not in [c[0] for c in con.execute("DESCRIBE documents").fetchall()]
    con.execute("INSERT INTO documents (id, domain, source_uri, status) "
                "VALUES ('doc_old', 'd', 'file:///x', 'accepted')")
    con.close()
    with duckdb_store.connect(path) as con:
        for table in ("documents", "queries"):
            assert "published_thinking" in [c[0] for c in con.execute(f"DESCRIBE {table}").fetchall()]
        assert con.execute("SELECT published_thinking FROM documents WHERE id = 'doc_old'").fetchone() == (None,)


# ---------------------------------------------------------------- through the graph, and out again


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    """A domain read by the deepwriting reader, ingested and given its queries by the real assets."""
    import dagster as dg

    from reer_assets.definitions import defs
    from reer_assets.defs.resources import LineageResource, ModelBackendResource, WorkloadRunner

    root = tmp_path_factory.mktemp("deepwriting")
    (root / "domains.yaml").write_text(
        f"domains:\n  {DOMAIN}:\n    languages: [en, zh]\n    sources:\n"
        f"      - reader: deepwriting\n        path: {ITEMS}\n", encoding="utf-8")
    patch = pytest.MonkeyPatch()
    patch.setenv("DAGSTER_HOME", str(root / "home"))
    patch.setenv("REER_DOMAINS_FILE", str(root / "domains.yaml"))
    patch.setenv("REER_PROFILE", "test")
    patch.delenv("REER_LINEAGE_DB", raising=False)
    patch.delenv("REER_STORAGE_ROOT", raising=False)
    # every request is given, so the generator is never called; naming a served one keeps the embedded build out
    resources = {"generator": ModelBackendResource(role="generator", backend="openai", model="never-called",
                                                      base_url="http://127.0.0.1:9/v1"),
                 "lineage": LineageResource(), "runner": WorkloadRunner(mode="in_process")}
    instance = dg.DagsterInstance.ephemeral()

    def materialize(name: str) -> None:
        asset = defs.get_assets_def(name)
        result = dg.materialize([asset], partition_key=DOMAIN if asset.partitions_def else None,
                                resources={k: v for k, v in resources.items()}, instance=instance)
        assert result.success, name

    materialize("raw_documents")
    materialize("synthesized_queries")
    yield {"root": root, "materialize": materialize, "db": root / "home" / "lineage.duckdb"}
    patch.undo()


def test_published_thinking_travels_from_documents_to_queries_and_lineage(graph):
    from reer_assets.lib import storage

    docs = storage.read_output("raw_documents", "documents", DOMAIN).filter(pl.col("reader") == "deepwriting")
    queries = storage.read_output("synthesized_queries", "queries", DOMAIN)
    accepted = docs.filter(pl.col("status") == "accepted")
    assert sorted(accepted["source_id"].to_list()) == ["101", "102", "103", "104"]
    assert set(docs.filter(pl.col("status") == "rejected")["source_id"].to_list()) == {
        "L5", "105", "106", "107", "108", "L11"}
    joined = queries.join(accepted.select("id", "source_id", pl.col("published_thinking").alias("doc_thinking")),
                          left_on="document_id", right_on="id")
    assert joined.height == 4 and not joined["synthesized"].any()
    assert joined["published_thinking"].to_list() == joined["doc_thinking"].to_list()
    assert joined.filter(pl.col("source_id") == "103")["published_thinking"].to_list() == [None]
    with duckdb.connect(str(graph["db"]), read_only=True) as con:
        in_lineage = dict(con.execute(
            "SELECT d.source_id, q.published_thinking FROM queries q JOIN documents d ON d.id = q.document_id"
        ).fetchall())
        rejected = con.execute("SELECT reject_reasons FROM documents WHERE source_id = '106'").fetchone()[0]
    assert in_lineage["102"].startswith("用户想要") and in_lineage["103"] is None and len(in_lineage) == 4
    assert rejected == ["unclosed_thinking:solution opens thinking but has no </think>"]


def test_export_deepwriting_reads_back_equal(graph, tmp_path):
    """sft_dataset -> `reer export --format deepwriting` -> the deepwriting reader: every row equal."""
    from reer_assets.cli.main import main
    from reer_assets.core.ids import stable_id
    from reer_assets.core.schemas import DATASET_ROWS
    from reer_assets.lib import fingerprints, storage

    queries = storage.read_output("synthesized_queries", "queries", DOMAIN).filter(pl.col("status") == "accepted")
    rows = [{"id": stable_id("row", q["id"]), "trajectory_id": stable_id("trj", q["id"]), "query_id": q["id"],
             "document_id": q["document_id"], "domain": DOMAIN, "query": q["query"],
             "thinking": f"Our searched plan for this piece.\n\nFirst the setting, then the turn. 先想结构。 {i}",
             "reference": q["reference"], "initial_score": 2.5, "final_score": 2.0 - i / 10, "status": "accepted",
             "reject_reasons": [], "config_hash": "cfg"} for i, q in enumerate(queries.iter_rows(named=True))]
    storage.write_parquet(DATASET_ROWS.frame(rows), storage.output_path("filtered_dataset", "dataset", DOMAIN))
    fingerprints.save("filtered_dataset", DOMAIN, "fp-deepwriting-test", {"filters": {}})
    graph["materialize"]("sft_dataset")

    out = tmp_path / "export"
    assert main(["export", "--format", "deepwriting", "--out", str(out), "--json"]) == 0
    assert {"train.parquet", "train.jsonl", "README.md"} <= {p.name for p in out.iterdir()}
    expected = {r["id"]: r for r in rows}
    first = json.loads((out / "train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first["prompt"] == [{"role": "user", "content": expected[first["extra_info"]["index"]]["query"]}]
    assert first["solution"].startswith("<think>\nOur searched plan") and "\n</think>\n" in first["solution"]
    for name in ("train.parquet", "train.jsonl"):
        back = list(deepwriting.read_deepwriting("d", {"path": str(out / name)}))
        assert sorted(r.source_id for r in back) == sorted(expected), name
        for record in back:
            row = expected[record.source_id]
            assert record.read_error is None
            assert (record.given_request, record.text, record.published_thinking) == (
                row["query"], row["reference"], row["thinking"]), (name, record.source_id)
            assert record.meta["data_source"] == f"reer/{DOMAIN}"
            assert record.meta["extra_info"]["trajectory_id"] == row["trajectory_id"]


# ---------------------------------------------------------------- WritingBench's score layout


class ScoringBackend:
    """A judge backend that scores by criterion (and one point more for the fine-tuned answers); it writes
    prose instead of JSON for one criterion of the fine-tuned model, so that judgment fails."""

    model_id = "fake:judge-wb"
    max_in_flight = 1
    base = {"Feasibility": 7, "Age_Fit": 4, "Completeness": 9, "Register": 8, "Action_Items": 6, "情节完整": 3,
            "细节描写": 5}

    def complete(self, messages, schema, name, sampling, seed):
        from reer_assets.core.evaluation.judge import JudgeReply

        text = "\n".join(m["content"] for m in messages)
        if name.endswith("pairwise"):
            return JudgeReply('{"reason": "alike", "winner": "tie"}', prompt_tokens=10, completion_tokens=5,
                              finish_reason="stop")
        finetuned = "FINETUNED" in text
        criterion = next(c for c in self.base if f"{c}" in text)
        if finetuned and criterion == "Register":
            return JudgeReply("I would rather not say.", prompt_tokens=10, completion_tokens=5, finish_reason="stop")
        score = min(10, self.base[criterion] + int(finetuned))
        return JudgeReply(json.dumps({"reason": f"{criterion} seen", "score": score}), prompt_tokens=10,
                          completion_tokens=5, finish_reason="stop")


def writingbench_aggregate(score_file: Path, benchmark_file: Path) -> dict:
    """WritingBench's aggregation as its calculate_scores.py documents it, from its own files: an item's
    score is the mean of its evaluations; overall the mean of *all* evaluations (not of items); a domain's
    score the mean of its items' scores, the domains taken from the benchmark file by index."""
    item_scores, total, count = {}, 0.0, 0
    for line in score_file.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        values = [e["score"] for evaluations in record["scores"].values() for e in evaluations]
        item_scores[record["index"]] = sum(values) / len(values)
        total, count = total + sum(values), count + len(values)
    domains = {}
    for line in benchmark_file.read_text(encoding="utf-8").splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict) and "index" in item:
            domains[item["index"]] = (item.get("domain1"), item.get("domain2"))
    by_domain: dict[str, dict[str, list[float]]] = {"domain1": {}, "domain2": {}}
    for index, score in item_scores.items():
        for level, name in zip(("domain1", "domain2"), domains[index]):
            by_domain[level].setdefault(name, []).append(score)
    return {"overall": total / count, "items": item_scores,
            **{level: {n: sum(v) / len(v) for n, v in groups.items()} for level, groups in by_domain.items()}}


def test_writingbench_score_export_aggregates_as_writingbench_summary(tmp_path):
    """The judge rows benchmark_scores writes -> `reer eval export-scores --format writingbench` -> WritingBench's
    own aggregation of that file equals what writingbench_summary reported in the same run."""
    from reer_assets.cli.main import main
    from reer_assets.core.evaluation.judge import Judge
    from reer_assets.core.schemas import JUDGE_SCORES
    from reer_assets.workloads import evaluation

    bench_file = FIXTURES / "benchmarks" / "writingbench.jsonl"
    spec = {"name": "wb", "format": "writingbench", "path": str(bench_file)}
    items, _ = evaluation.load_items([spec], {})
    answers = [{"model_label": label, "benchmark": "wb", "prompt_id": str(i["id"]),
                "output": f"<think>\nplan\n</think>\n<answer>\n{label.upper()} answer to item {i['id']}\n</answer>"}
               for label in ("base", "finetuned") for i in items]
    summary: dict = {"tokens": {}}
    flat = evaluation._judge_all(Judge(ScoringBackend()), {"models": [{"label": "base"}, {"label": "finetuned"}],
                                                           "benchmarks": [spec]}, items, answers, summary, print)
    judgments = tmp_path / "judgments.parquet"
    JUDGE_SCORES.frame(flat).write_parquet(judgments)
    assert {r["mode"] for r in flat} == {"rubric", "pairwise"}  # the pairwise rows must stay out of the files

    out = tmp_path / "scores"
    assert main(["eval", "export-scores", "--format", "writingbench", "--out", str(out), "--judgments",
                 str(judgments), "--json"]) == 0
    assert sorted(p.name for p in (out / "wb").iterdir()) == ["base.jsonl", "finetuned.jsonl"]
    first = json.loads((out / "wb" / "base.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first == {"index": 1, "scores": {"Feasibility": [{"score": 7, "reason": "Feasibility seen"}],
                                            "Age_Fit": [{"score": 4, "reason": "Age_Fit seen"}]}}
    for label in ("base", "finetuned"):
        ours = summary["judged"]["wb"][label]
        theirs = writingbench_aggregate(out / "wb" / f"{label}.jsonl", bench_file)
        assert theirs["overall"] == pytest.approx(ours["overall"]["mean"], abs=1e-12), label
        assert theirs["domain1"] == pytest.approx({k: v["mean"] for k, v in ours["domain1"].items()}), label
        assert theirs["domain2"] == pytest.approx({k: v["mean"] for k, v in ours["domain2"].items()}), label
        assert len(theirs["items"]) == ours["items"]
    # the failed judgment leaves its item out of both, and the two overall readings differ on the base model
    assert [i["id"] for i in summary["judged"]["wb"]["finetuned"]["incomplete"]] == ["2"]
    base = writingbench_aggregate(out / "wb" / "base.jsonl", bench_file)
    mean_of_items = sum(base["items"].values()) / len(base["items"])
    assert base["overall"] == pytest.approx(42 / 7) and mean_of_items == pytest.approx((5.5 + 23 / 3 + 4) / 3)
    assert abs(base["overall"] - mean_of_items) > 0.05  # the two overall definitions really differ on this fixture
