"""Cleaning and the wiring of readers into raw_documents rows: normalisation, language
identification, duplicates, bounds, domain configuration, lineage columns, request QC."""

from __future__ import annotations

from pathlib import Path

import pytest

from reer_assets.core.ingest.cleaning import detect_language, normalize_text
from reer_assets.core.ingest.pipeline import (
    Cleaner,
    CleaningConfig,
    domain_sources,
    ingest_domain,
    ingest_path,
    ingest_summary,
    public_record,
)
from reer_assets.core.protocols import Completion, Sampling
from reer_assets.core.schemas import DOCUMENTS
from reer_assets.core.synthesis import QueryQC, query_reasons, synthesize_query
from reer_assets.lib.domains import source_places

ROW_SCHEMA = DOCUMENTS.schema
from reer_assets.core.ingest.readers.common import SourceRecord

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sources"
STORY = ("The harbour clock had stopped at twenty past four for as long as anyone could remember, and the town had "
         "quietly arranged its life around the mistake. Buses left at twenty past. Shops opened at twenty past. "
         "Children were told to be home by twenty past, and somehow always were, even in winter, even in rain.")


def test_normalize_text_nfc_controls_and_whitespace():
    assert normalize_text("Cafe\u0301\u200b  au\tlait\x07\r\n\r\n\r\n\r\nnext  ") == "Café au lait\n\nnext"


def test_language_identification_is_lingua_with_a_small_language_set():
    assert detect_language(STORY) == "en"
    assert detect_language("港口的钟一直停在四点二十分，镇上的人早已习惯了这个错误。") == "zh"
    assert detect_language("Le phare s'est éteint pendant trois secondes, puis il s'est rallumé.") == "fr"
    assert detect_language("12345 !!!") == "en"  # nothing to identify: falls back to the prompt-set rule


def cleaner(**overrides) -> Cleaner:
    return Cleaner("d", CleaningConfig().with_overrides(overrides), ["en"], "cfg")


def record(text: str, place: str, **fields) -> SourceRecord:
    return SourceRecord(f"file:///x.jsonl#{place}", text, **fields)


def test_exact_and_near_duplicates_keep_the_first_and_name_it():
    clean = cleaner()
    first = clean.row(record(STORY, "L1", given_request="Write about a clock."), "pairs")
    exact = clean.row(record(STORY.replace(" ", "  "), "L2"), "pairs")
    near = clean.row(record(STORY.replace("winter", "summer"), "L3"), "pairs")
    assert first["status"] == "accepted" and first["given_request"] == "Write about a clock."
    assert exact["reject_reasons"] == [f"exact_duplicate_of:{first['id']}"] and exact["duplicate_of"] == first["id"]
    assert near["reject_reasons"] == [f"near_duplicate_of:{first['id']}"] and near["duplicate_of"] == first["id"]
    edited = STORY.replace("winter", "summer").replace("rain", "snow").replace("Buses", "Trains").replace("Shops", "Banks")
    for threshold, status in ((0.95, "accepted"), (0.5, "rejected")):
        configured = cleaner(near_duplicate_threshold=threshold)
        configured.row(record(STORY, "L1"), "pairs")
        assert configured.row(record(edited, "L3"), "pairs")["status"] == status, threshold
    off = cleaner(near_duplicate_threshold=None)
    off.row(record(STORY, "L1"), "pairs")
    assert off.row(record(STORY.replace("winter", "summer"), "L3"), "pairs")["status"] == "accepted"


def test_bounds_language_and_read_errors_are_reasons():
    clean = cleaner(min_chars=10, max_chars=200)
    long_row = clean.row(record(STORY, "L1"), "generic")
    assert long_row["reject_reasons"] == [f"too_many_chars:{len(STORY)}>200"]
    french = cleaner(min_units=5).row(record("Le phare s'est éteint pendant trois secondes, puis il s'est rallumé "
                                             "comme si de rien n'était.", "L2"), "pairs")
    assert french["language"] == "fr" and french["reject_reasons"] == ["language_not_allowed:fr"]
    broken = clean.row(record("", "L3", read_error="invalid_json:oops"), "pairs")
    assert broken["reject_reasons"] == ["invalid_json:oops"] and broken["language"] is None
    assert clean.row(record("   ", "L4"), "pairs")["reject_reasons"] == ["empty_text"]


def test_rows_fill_every_documents_lineage_column():
    row = cleaner().row(record(STORY, "L1", source_id="wp-1", meta={"tags": ["WP"]}, attribution="Someone"), "pairs")
    assert set(DOCUMENTS.lineage) <= set(row) and set(row) == set(ROW_SCHEMA)
    assert row["reader"] == "pairs" and row["source_id"] == "wp-1" and row["source_meta"] == '{"tags": ["WP"]}'


def test_domain_spec_paths_resolve_against_the_domains_file(tmp_path, monkeypatch):
    domains = tmp_path / "conf" / "domains.yaml"
    domains.parent.mkdir()
    domains.write_text("domains: {x: {sources: [{reader: reer, path: data}]}}", encoding="utf-8")
    monkeypatch.setenv("REER_DOMAINS_FILE", str(domains))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    places = source_places()  # what the settings say: the domains file's folder, $DAGSTER_HOME/inbox, the corpus
    assert places.domains_dir == tmp_path / "conf" and places.inbox_root == tmp_path / "inbox"
    sources = domain_sources("x", {"sources": [{"reader": "reer", "path": "data"}, {"reader": "pairs", "path": "s3://b/k"}]},
                             places)
    assert sources == [{"reader": "reer", "path": str(tmp_path / "conf" / "data")},
                       {"reader": "pairs", "path": "s3://b/k"}, {"reader": "inbox", "root": str(tmp_path / "inbox")}]
    assert domain_sources("x", {}, places)[0] == {"reader": "bundled", "dir": str(places.bundled_dir)}
    with pytest.raises(ValueError, match="unknown reader 'nope'"):
        domain_sources("x", {"sources": [{"reader": "nope"}]}, places)


def test_ingest_domain_with_cleaning_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("REER_DOMAINS_FILE", str(FIXTURES / "domains.yaml"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    spec = {"languages": ["en"], "cleaning": {"min_units": 40},
            "sources": [{"reader": "book", "path": "book", "min_words": 50, "max_words": 100}]}
    frame = ingest_domain("books", spec, CleaningConfig(), "cfg", source_places())
    assert frame.schema == ROW_SCHEMA
    assert ingest_summary(frame.iter_rows(named=True)) == {
        "rows": 11, "accepted": 7, "rejected": 4,
        "reasons": {"empty_file": 1, "too_short": 1, "invalid_encoding": 1, "missing_gutenberg_markers": 1}}
    assert frame.filter(frame["status"] == "rejected")["reject_reasons"].list.len().min() == 1
    with pytest.raises(ValueError, match="unknown cleaning setting"):
        ingest_domain("books", {**spec, "cleaning": {"min_wrods": 3}}, CleaningConfig(), "cfg", source_places())


def test_ingest_path_routes_cleaning_options_and_shapes_cli_records(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    rows = list(ingest_path("pairs", str(FIXTURES / "pairs" / "writing_prompts.jsonl"), "adhoc",
                            {"min_units": 5, "languages": ["en"], "score_field": "score", "min_score": 5}))
    records = [public_record(r) for r in rows]
    accepted = [r for r in records if r["status"] == "accepted"]
    assert "file:///" in records[0]["source"] and records[0]["source"].endswith("writing_prompts.jsonl#L1")
    assert all(set(r) == {"id", "source", "status", "reasons", "language", "query", "text"} for r in accepted)
    assert all("text" not in r and r["reasons"] for r in records if r["status"] == "rejected")
    short = next(r for r in records if r["source"].endswith("#L10"))
    assert short["status"] == "accepted"  # min_units=5 reached the cleaner
    assert next(r for r in records if r["source"].endswith("#L9"))["reasons"] == ["language_not_allowed:fr"]


def test_query_qc_covers_empty_long_copy_and_language():
    text = STORY
    qc = QueryQC(max_chars=80, max_copy_chars=40)
    assert query_reasons("  ", text, "en", qc) == ["empty_query"]
    assert query_reasons("Write a story about a town. " * 5, text, "en", qc)[0].startswith("query_too_long")
    assert "query_copies_text" in query_reasons("Write: Buses left at twenty past. Shops opened at twenty past.",
                                                text, "en", QueryQC(max_copy_chars=40))
    assert query_reasons("写一个关于港口时钟的故事。", text, "en") == ["query_wrong_language:zh!=en"]
    # a stray ideograph would switch the search to the Chinese prompt set
    assert query_reasons("Write a short story about a harbour clock 钟 that stopped.", text, "en") == [
        "query_wrong_language:zh!=en"]
    assert query_reasons("Écris une courte histoire sur une horloge de port arrêtée.", text, "en") == [
        "query_wrong_language:fr!=en"]
    assert query_reasons("Écris une courte histoire sur une horloge de port arrêtée.", "Le texte.", "fr") == []
    assert query_reasons("Write a short story about a town whose harbour clock stopped.", text, "en") == []


class FakeGenerator:
    model_id = "fake"

    def __init__(self, text: str):
        self.text, self.requests = text, []

    def generate(self, requests):
        self.requests.extend(requests)
        return [[Completion(self.text, completion_tokens=7, prompt_tokens=30)] for _ in requests]


def test_synthesize_query_keeps_raw_output_and_parses_it():
    generator = FakeGenerator("Write a short story about a stopped harbour clock.\n\nextra notes<|im_end|>")
    made = synthesize_query(generator, STORY, Sampling(max_tokens=64), seed=5)
    assert made.query == "Write a short story about a stopped harbour clock."
    assert made.raw_output.endswith("<|im_end|>") and made.model == "fake" and made.completion_tokens == 7
    request = generator.requests[0]
    assert request.seed == 5 and request.sampling.max_tokens == 64 and STORY in request.messages[-1]["content"]
