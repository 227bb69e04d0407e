"""Source readers on the fixture files in tests/fixtures/sources: what each format yields, and
that malformed input becomes rejects with reasons while the rest of the file still loads."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from reer_assets.core.ingest.readers import book, common, generic, inbox, pairs, reer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sources"


def by_place(records) -> dict[str, common.SourceRecord]:
    return {r.source_uri.rsplit("/", 1)[-1]: r for r in records}


def errors(records) -> dict[str, str]:
    return {place: r.read_error for place, r in by_place(records).items() if r.read_error}


# ---------------------------------------------------------------- pairs


def test_pairs_jsonl_strips_tags_and_keeps_ids_and_scores():
    records = by_place(pairs.read_pairs("d", {"path": str(FIXTURES / "pairs" / "writing_prompts.jsonl"),
                                               "score_field": "score", "min_score": 5}))
    first = records["writing_prompts.jsonl#L1"]
    assert first.source_uri.startswith("file:///") and first.source_id == "wp-101" and first.domain == "d"
    assert first.given_request.startswith("Every lighthouse keeper") and first.meta == {"score": 41.0, "tags": ["WP"]}
    assert first.text.startswith("The bottle knocked") and first.read_error is None
    assert records["writing_prompts.jsonl#L2"].meta["tags"] == ["WP", "EU"]
    assert records["writing_prompts.jsonl#L13"].given_request == "You travel back to the day you were born."
    assert records["writing_prompts.jsonl#L13"].meta["tags"] == ["TT"]


def test_pairs_malformed_lines_are_rejects_and_the_rest_loads():
    records = list(pairs.read_pairs("d", {"path": str(FIXTURES / "pairs" / "writing_prompts.jsonl"),
                                          "score_field": "score", "min_score": 5}))
    assert len(records) == 13  # 14 lines, one blank
    bad = errors(records)
    assert bad["writing_prompts.jsonl#L3"] == "score_below_min:3<5"
    assert bad["writing_prompts.jsonl#L4"].startswith("invalid_json:")
    assert bad["writing_prompts.jsonl#L5"] == "missing_field:story"
    assert bad["writing_prompts.jsonl#L6"].startswith("invalid_encoding:line 6")
    assert bad["writing_prompts.jsonl#L11"] == "not_an_object:list"
    assert bad["writing_prompts.jsonl#L14"].startswith("bad_field:score")
    assert len(records) - len(bad) == 7


def test_pairs_csv_multiline_story_bad_row_and_missing_prompt():
    records = by_place(pairs.read_pairs("d", {"path": str(FIXTURES / "pairs" / "writing_prompts.csv")}))
    assert list(records) == ["writing_prompts.csv#L2", "writing_prompts.csv#L5", "writing_prompts.csv#L6",
                             "writing_prompts.csv#L7"]
    assert "\n\nThe cactus" in records["writing_prompts.csv#L2"].text
    assert records["writing_prompts.csv#L5"].read_error.startswith("bad_csv_row:")
    assert records["writing_prompts.csv#L6"].read_error == "missing_field:prompt"
    optional = by_place(pairs.read_pairs("d", {"path": str(FIXTURES / "pairs" / "writing_prompts.csv"), "require_prompt": False}))
    assert optional["writing_prompts.csv#L6"].read_error is None and optional["writing_prompts.csv#L6"].given_request is None


def test_pairs_options_field_names_newline_token_and_compression(tmp_path):
    path = tmp_path / "dump.jsonl.gz"
    row = {"post": {"title": "[WP][OT] Two tags", "body": "line one <newline> <newline> line two"}, "ups": 3}
    path.write_bytes(gzip.compress((json.dumps(row) + "\n").encode()))
    [record] = pairs.read_pairs("d", {"path": str(tmp_path), "prompt_field": "post.title", "story_field": "post.body",
                                      "newline_token": "<newline>"})
    assert record.given_request == "Two tags" and record.meta["tags"] == ["WP", "OT"]
    assert record.text == "line one \n \n line two" and record.source_uri.endswith("dump.jsonl.gz#L1")
    assert pairs.strip_tags("(EU) [WP] A door") == ("A door", ["EU", "WP"])


def test_empty_file_and_missing_path_are_one_reject_each(tmp_path):
    [empty] = pairs.read_pairs("d", {"path": str(FIXTURES / "pairs" / "empty.jsonl")})
    assert empty.read_error == "empty_file" and empty.source_uri.endswith("empty.jsonl")
    [missing] = pairs.read_pairs("d", {"path": str(tmp_path / "nope.jsonl")})
    assert missing.read_error.startswith("unreadable:not_found") and "nope.jsonl" in missing.source_uri


def test_unknown_option_is_a_configuration_error():
    with pytest.raises(ValueError, match="unknown option.*story_feild"):
        pairs.read_pairs("d", {"path": "x", "story_feild": "body"})
    with pytest.raises(ValueError, match="needs a 'path'"):
        book.read_book("d", {})


def test_fsspec_urls_are_read(tmp_path):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/reer-test/pairs.jsonl", (FIXTURES / "pairs" / "writing_prompts.jsonl").read_bytes())
    try:
        records = list(pairs.read_pairs("d", {"path": "memory://reer-test/pairs.jsonl"}))
        assert records[0].source_uri == "memory:///reer-test/pairs.jsonl#L1" and records[0].text
        [folder_record, *_] = pairs.read_pairs("d", {"path": "memory://reer-test"})
        assert folder_record.source_uri == records[0].source_uri
    finally:
        fs.rm("/reer-test", recursive=True)


# ---------------------------------------------------------------- book


def test_book_drops_license_and_splits_passages_on_paragraphs():
    records = list(book.read_book("d", {"path": str(FIXTURES / "book" / "keepers_almanac.txt"),
                                        "min_words": 50, "max_words": 100}))
    raw = (FIXTURES / "book" / "keepers_almanac.txt").read_bytes().decode("utf-8", errors="replace")
    body = "\n".join(r.text for r in records)
    assert "START OF" not in body and "END OF" not in body and "test fixture" not in body and "notice" not in body
    chapters = [r for r in records if r.meta["chapter"]]
    assert {r.meta["chapter"] for r in chapters} == {"CHAPTER I. THE TOWER", "CHAPTER II. THE LEDGER", "CHAPTER III. THE FOG"}
    for r in chapters:
        assert r.text[0].isupper() and r.text.endswith("."), r.text  # whole paragraphs only
        assert f"\r\n\r\n{r.text[:30]}" in raw  # starts where a paragraph starts
        assert r.meta["words"] >= 50 and (r.meta["words"] <= 100 or r.meta["parts"] == 1)
        assert "\n" not in r.text.replace("\n\n", "")  # hard wraps joined, paragraphs kept
    first = chapters[0]
    assert first.license == "Project Gutenberg License" and first.language == "en"
    assert first.attribution == "The Keeper's Almanac by Ada Pennant, Project Gutenberg eBook #99999"
    assert first.source_uri.endswith("keepers_almanac.txt#L38-L43") and first.source_id == "L38-L43"


def test_book_badly_encoded_passage_is_rejected_alone():
    records = list(book.read_book("d", {"path": str(FIXTURES / "book" / "keepers_almanac.txt"),
                                        "min_words": 50, "max_words": 100}))
    fog = [r for r in records if r.meta["chapter"] == "CHAPTER III. THE FOG"]
    assert [bool(r.read_error) for r in fog] == [True, False]
    assert fog[0].read_error.startswith("invalid_encoding:line 91")


def test_book_chapter_mode_keeps_short_chapters_whole():
    records = list(book.read_book("d", {"path": str(FIXTURES / "book" / "keepers_almanac.txt"), "split": "chapter",
                                        "min_words": 50, "max_words": 400}))
    assert [r.meta["chapter"] for r in records] == [None, "CHAPTER I. THE TOWER", "CHAPTER II. THE LEDGER",
                                                    "CHAPTER III. THE FOG"]
    assert all(r.meta["parts"] == 1 for r in records)


def test_book_without_markers_and_empty_book():
    records = errors(book.read_book("d", {"path": str(FIXTURES / "book")}))
    assert records["no_markers.txt"].startswith("missing_gutenberg_markers:no START")
    assert records["empty.txt"] == "empty_file"
    [whole] = book.read_book("d", {"path": str(FIXTURES / "book" / "no_markers.txt"), "require_markers": False,
                                   "min_words": 5, "max_words": 500})
    assert whole.read_error is None and whole.text.startswith("A Short Book") and whole.license is None


def test_passage_splitting_rules():
    assert book._greedy([30, 30, 30, 30], 50, 70) == [(0, 2), (2, 4)]
    assert book._greedy([60, 60, 10], 50, 100) == [(0, 1), (1, 3)]  # short tail joins the passage before
    assert book._greedy([500], 50, 100) == [(0, 1)]  # one long paragraph is never cut
    assert book._balanced([100] * 5, 200) == [(0, 2), (2, 4), (4, 5)]
    assert book._balanced([100] * 3, 400) == [(0, 3)]


# ---------------------------------------------------------------- reer


def test_reer_list_keeps_answers_after_think_and_indexes():
    records = by_place(reer.read_reer("d", {"path": str(FIXTURES / "reer" / "items.json")}))
    kite = records["items.json#index=0"]
    assert kite.text.startswith("The kite went up") and "<think>" not in kite.text and "</answer>" not in kite.text
    assert kite.meta["had_thinking"] is True and kite.source_id == "0"
    assert records["items.json#index=7"].given_request is None  # no question: the request gets synthesized
    assert records["items.json#index=2"].given_request.startswith("写一封")
    assert records["items.json#index=8"].text == ""  # thinking only: cleaning rejects it as empty
    assert errors(records.values()) == {
        "items.json#index=3": "missing_field:solution",
        "items.json#item=4": "not_an_object:str",
        "items.json#index=5": "invalid_encoding:not utf-8",
    }


def test_reer_truncated_and_empty_files():
    records = by_place(reer.read_reer("d", {"path": str(FIXTURES / "reer")}))
    assert records["truncated.json#index=10"].read_error is None
    assert records["truncated.json#item=1"].read_error.startswith("invalid_json:")
    assert records["empty.json"].read_error == "empty_file"


def test_reer_stream_parser_across_chunk_boundaries(monkeypatch, tmp_path):
    monkeypatch.setattr(reer, "CHUNK_BYTES", 7)
    items = [{"index": i, "question": f"q{i} ✓", "solution": f"<think>x</think>answer {i} " + "word " * 20, "n": 12345678}
             for i in range(5)]
    path = tmp_path / "many.json"
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    records = list(reer.read_reer("d", {"path": str(path)}))
    assert [r.source_id for r in records] == ["0", "1", "2", "3", "4"]
    assert all(r.read_error is None and r.text.startswith(f"answer {i}") for i, r in enumerate(records))
    assert [p for p, _, _ in reer.iter_json_array(iter(["[1, ", "2", "3]"]))] == [0, 1]
    assert list(reer.iter_json_array(iter(['{"a": 1}'])))[0][2].startswith("invalid_json")
    assert list(reer.iter_json_array(iter(["[]"]))) == []


def test_reer_jsonl_variant(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"index": 3, "question": "Q", "solution": "S"}\nnot json\n', encoding="utf-8")
    records = list(reer.read_reer("d", {"path": str(path)}))
    assert records[0].source_uri.endswith("items.jsonl#index=3") and records[0].text == "S"
    assert records[1].read_error.startswith("invalid_json") and records[1].source_uri.endswith("#L2")


def test_answer_text():
    assert reer.answer_text("plan</think>\n<answer>\nThe end.\n</answer>") == ("The end.", True)
    assert reer.answer_text("a</think>b</think> c") == ("c", True)
    assert reer.answer_text("No thinking here.") == ("No thinking here.", False)


# ---------------------------------------------------------------- generic and inbox

GENERIC = {"text_field": "body", "request_field": "ask", "id_field": "uid", "title_field": "heading"}


def test_generic_jsonl_parquet_and_markdown_with_field_names():
    records = by_place(generic.read_generic("d", {"path": str(FIXTURES / "generic"), **GENERIC}))
    market = records["notes.jsonl#L1"]
    assert market.title == "Market notes" and market.source_id == "n-1" and market.given_request.startswith("Write a short")
    assert records["notes.jsonl#L2"].given_request is None
    choir = records["notices.parquet#row=0"]
    assert choir.text.startswith("Choir practice") and choir.source_id == "q-1" and choir.title == "Choir practice"
    garden = records["window_garden.md"]
    assert garden.title == "A window garden" and garden.license == "CC-BY-4.0"
    assert garden.given_request.startswith("Write a short practical note") and not garden.text.startswith("---")
    assert errors(records.values()) == {
        "blank.md": "empty_file",
        "latin1.md": "invalid_encoding:not utf-8 (byte 5)",
        "notes.jsonl#L3": "missing_field:body",
        "notes.jsonl#L4": "invalid_json:Expecting value (column 24)",
        "notices.parquet#row=1": "missing_field:body",
    }
    assert records["short.txt"].title == "short" and records["short.txt"].read_error is None


def test_generic_parquet_without_the_text_column_is_one_reject():
    [record] = generic.read_generic("d", {"path": str(FIXTURES / "generic" / "notices.parquet")})
    assert record.read_error.startswith("missing_field:text (no such column")


def test_generic_parquet_is_read_in_batches(tmp_path):
    pl.DataFrame({"text": [f"row {i}" for i in range(10)]}).write_parquet(tmp_path / "rows.parquet", row_group_size=3)
    records = list(generic.read_generic("d", {"path": str(tmp_path), "batch_size": 4}))
    assert [r.text for r in records] == [f"row {i}" for i in range(10)]
    assert records[-1].source_uri.endswith("rows.parquet#row=9")


def test_inbox_folder_per_domain(tmp_path):
    root = {"root": str(tmp_path / "inbox")}  # the pipeline places it at $DAGSTER_HOME/inbox
    assert list(inbox.read_inbox("essays", root)) == []  # no folder yet: an empty inbox, not an error
    folder = tmp_path / "inbox" / "essays"
    folder.mkdir(parents=True)
    shutil.copy(FIXTURES / "generic" / "window_garden.md", folder / "garden.md")
    (folder / "bad.txt").write_bytes(b"caf\xe9")
    (folder / "skip.pdf").write_bytes(b"%PDF")
    records = by_place(inbox.read_inbox("essays", root))
    assert set(records) == {"garden.md", "bad.txt", "skip.pdf"}
    assert records["skip.pdf"].read_error == "unsupported_extension:.pdf"  # recorded, never silently skipped
    assert records["bad.txt"].read_error.startswith("invalid_encoding")
    assert records["garden.md"].given_request is None  # inbox files use the default field names
    other = tmp_path / "elsewhere"
    (other / "essays").mkdir(parents=True)
    (other / "essays" / "note.txt").write_text("A note.", encoding="utf-8")
    assert list(by_place(inbox.read_inbox("essays", {"root": str(other)}))) == ["note.txt"]
    with pytest.raises(ValueError, match="needs a 'root'"):
        inbox.read_inbox("essays", {})
