"""Their thinking beside ours (issue 24 §3), through the real assets in process, in the style of test_stages.py:
a ``reer``-layout source whose solutions carry the writer's own ``<think>…</think>`` (two of its three items),
searched by the embedded models; the published thinking's score under our scorer beside z0 and z*, the
``published`` ablation variant, and the report's searched − published difference."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import polars as pl
import pytest

from tests.assets.test_stages import DOMAIN, RELAXED_FILTERS, metadata, stage  # noqa: F401 (the module-scoped fixture)

pytestmark = pytest.mark.model

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "published" / "items.json"
SEARCH_SEEDS = tuple(range(8))
TRAIN = {"max_steps": 1, "seeds": 1}
EVAL = {"prompts_per_domain": 2, "max_tokens": 8, "floor": False}  # two held-out prompts: a real interval


def _published_texts() -> dict[str, str | None]:
    """index -> the thinking the fixture's solution holds (None without one), read here without the reader."""
    out = {}
    for item in json.loads(FIXTURE.read_text(encoding="utf-8")):
        head, sep, _ = item["solution"].partition("</think>")
        out[item["index"]] = head.strip().removeprefix("<think>").strip() if sep else None
    return out


@pytest.fixture(scope="module")
def searched(stage):  # noqa: F811
    """The domain read from the fixture, its queries, a search that kept an item with a published thinking
    (seeds tried in turn, as test_stages does: what the toy model writes depends on the build and the ids),
    and the relaxed curation; returns the materialise function and the search's metadata."""
    domains = stage.root / "published.yaml"
    domains.write_text(f"domains:\n  {DOMAIN}:\n    languages: [en]\n    sources:\n"
                       f"      - reader: reer\n        path: {FIXTURE}\n", encoding="utf-8")
    patch = pytest.MonkeyPatch()
    patch.setenv("REER_DOMAINS_FILE", str(domains))
    assert metadata(stage("raw_documents"), "raw_documents")["accepted"] == 3
    assert metadata(stage("synthesized_queries"), "synthesized_queries")["with_published_thinking"] == 2
    for seed in SEARCH_SEEDS:
        meta = metadata(stage("refined_trajectories", config={"seed": seed}), "refined_trajectories")
        frame = pl.read_parquet(stage.root / "home/reer/assets/refined_trajectories" / DOMAIN / "trajectories.parquet")
        if frame.filter((pl.col("status") == "ok") & pl.col("published_score").is_not_null()).height:
            break
    else:
        raise AssertionError(f"no search kept an item with a published thinking with any of the seeds {SEARCH_SEEDS}")
    stage("filtered_dataset", config=RELAXED_FILTERS)
    yield stage, meta
    patch.undo()


def test_the_published_thinking_is_scored_beside_z0(searched, embedded_scorer):
    """Every item whose search scored z0 and whose source published a thinking has that thinking's score, the
    same as the scorer gives it directly (same prompt, reference span and clipped objective); the others none."""
    from reer_assets.core.objective import ObjectiveSettings, build_score_request, score_of
    from reer_assets.core.segment import segment
    from reer_assets.core.trace import SearchTrace
    from reer_assets.lib import duckdb_store

    stage, meta = searched
    frame = pl.read_parquet(stage.root / "home/reer/assets/refined_trajectories" / DOMAIN / "trajectories.parquet")
    documents = pl.read_parquet(stage.root / "home/reer/assets/raw_documents" / DOMAIN / "documents.parquet")
    source_of = dict(zip(documents["id"], documents["source_id"]))
    texts = _published_texts()
    assert frame.height == 3 and {source_of[d] for d in frame["document_id"]} == set(texts)
    for row in frame.iter_rows(named=True):
        trace = SearchTrace.from_json(row["trace_json"])
        published = texts[source_of[row["document_id"]]]
        assert row["published_thinking"] == published  # the query's, carried onto the trajectory
        scored_z0 = trace.initial_score is not None
        if published is None or not scored_z0:
            assert row["published_score"] is None and trace.published_score is None
        else:
            cfg = trace.config
            request = build_score_request(row["query"], published, segment(row["reference"], cfg["min_segment_chars"]))
            direct = score_of(embedded_scorer.score([request])[0], ObjectiveSettings(cfg["clip_min"], cfg["clip_max"]))
            assert row["published_score"] == trace.published_score == pytest.approx(direct, abs=1e-5)
        # one scorer call for z0, one for the published thinking, one per candidate that had a <refine>
        candidates = sum(c.text is not None for step in trace.steps for c in step.candidates)
        expected = (int(scored_z0) + int(scored_z0 and published is not None) + candidates)
        assert row["scorer_calls"] == trace.tokens["scorer_calls"] == expected
    ok = frame.filter((pl.col("status") == "ok") & pl.col("published_score").is_not_null())
    assert meta["published_scored"] == ok.height >= 1
    assert meta["mean_published_score"] == round(ok["published_score"].mean(), 4)
    assert meta["search_beat_published"] == int((ok["final_score"] < ok["published_score"]).sum())
    assert "mean published score" in meta["published_beside_ours"]
    # lineage holds the score, and the named query lists it per item beside z0 and z*
    db = stage.root / "lineage.duckdb"
    listed = duckdb_store.query(duckdb_store.named_query("published_vs_search"), path=db, mode="single")
    assert listed["trajectory_id"].to_list() == ok.sort("query_id", "rollout")["id"].to_list()
    by_id = {r["id"]: r for r in ok.iter_rows(named=True)}
    for row in listed.iter_rows(named=True):
        mine = by_id[row["trajectory_id"]]
        assert (row["initial_score"], row["final_score"], row["published_score"]) == (
            mine["initial_score"], mine["final_score"], mine["published_score"])
        assert row["search_beat_published"] == (mine["final_score"] < mine["published_score"])
    # the searches of the seeds tried before this one keep their rows (another config, other ids): this search's
    # rows are those of its config
    (config_hash,) = set(frame["config_hash"])
    con = duckdb.connect(str(db), read_only=True)
    stored = dict(con.execute("SELECT id, published_score FROM trajectories WHERE config_hash = ?", [config_hash]).fetchall())
    con.close()
    assert stored == dict(zip(frame["id"], frame["published_score"]))


def test_the_published_variant_and_the_searched_minus_published_difference(searched):
    """ablation_datasets gives the accepted items that have a published thinking a ``published`` row with that
    text; the variant is trained and evaluated like the others, and the report pairs it with ``searched`` over
    the held-out prompts both answered, with its n, interval and MDE."""
    stage, _ = searched
    assets = stage.root / "home/reer/assets"
    meta = metadata(stage("ablation_datasets", config={"variants": ["searched"]}), "ablation_datasets")
    dataset = pl.read_parquet(assets / "filtered_dataset" / DOMAIN / "dataset.parquet").filter(
        pl.col("status") == "accepted")
    documents = pl.read_parquet(assets / "raw_documents" / DOMAIN / "documents.parquet")
    source_of = dict(zip(documents["id"], documents["source_id"]))
    texts = _published_texts()
    with_thinking = {r["id"]: texts[source_of[r["document_id"]]] for r in dataset.iter_rows(named=True)
                     if texts[source_of[r["document_id"]]] is not None}
    assert meta["variants"] == ["searched", "published"] and meta["published_items"] == len(with_thinking) >= 1
    rows = pl.read_parquet(assets / "ablation_datasets" / DOMAIN / "rows.parquet")
    published = rows.filter(pl.col("variant") == "published")
    assert dict(zip(published["item_id"], published["thinking"])) == with_thinking  # their text, as published
    assert set(published["edits"]) == {0}
    searched_rows = rows.filter(pl.col("variant") == "searched")
    assert searched_rows.height == dataset.height == meta["items"]  # every accepted item, published or not
    answers = dict(zip(searched_rows["item_id"], searched_rows["answer"]))
    assert all(answers[i] == a for i, a in zip(published["item_id"], published["answer"]))
    stage("base_model")
    trained = metadata(stage("ablation_checkpoints", config=TRAIN), "ablation_checkpoints")
    assert trained["trained"] == 2  # searched and published, one seed
    results = metadata(stage("ablation_results", config=EVAL), "ablation_results")
    assert results["dagster/row_count"] == 2 * 2 and "searched − published" in results["differences"]
    report = metadata(stage("experiment_report"), "experiment_report")
    frame = pl.read_parquet(assets / "experiment_report" / "__all__" / "results.parquet")
    diff = frame.filter((pl.col("variant") == "searched-published") & (pl.col("domain") == "all")
                        & (pl.col("metric") == "heldout_nll_own_thinking")).to_dicts()
    assert len(diff) == 1 and diff[0]["kind"] == "difference" and diff[0]["n"] == 2 and diff[0]["seeds"] == 1
    assert diff[0]["ci_low"] <= diff[0]["value"] <= diff[0]["ci_high"] and diff[0]["mde"] is not None
    assert "searched − published on heldout_nll_own_thinking" in diff[0]["reading"] and "n = 2" in diff[0]["reading"]
    assert "| searched − published |" in report["report"]
    covered = f"`published` covers {len(with_thinking)} of {dataset.height} items of {DOMAIN}"
    assert (covered in report["report"]) == (len(with_thinking) < dataset.height)
