"""`reer ingest` and `reer synthesize-query` as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sources"
KEYS = {"id", "source", "status", "reasons", "language", "query"}


def reer(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reer_assets.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


def ingest(reader: str, path: Path | str, *options: str) -> tuple[list[dict], dict]:
    args = ["ingest", "--reader", reader, str(path), "--jsonl"]
    for option in options:
        args += ["--option", option]
    out = reer(*args)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()], json.loads(out.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("reader, path, options, accepted", [
    ("pairs", "pairs", ["score_field=score", "min_score=5", "languages=[en]"], 5),
    ("book", "book", ["min_words=50", "max_words=100", "min_units=40"], 7),
    ("reer", "reer", [], 5),
    ("generic", "generic", ["text_field=body", "request_field=ask", "id_field=uid", "title_field=heading"], 4),
])
def test_ingest_jsonl_per_reader(reader, path, options, accepted):
    records, summary = ingest(reader, FIXTURES / path, *options)
    assert summary["rows"] == len(records) and summary["accepted"] == accepted
    for record in records:
        assert KEYS <= set(record) and record["source"].startswith("file:///")
        if record["status"] == "accepted":
            assert record["reasons"] == [] and record["text"]
        else:
            assert record["status"] == "rejected" and record["reasons"] and "text" not in record
    assert any(r["status"] == "rejected" for r in records)


def test_ingest_sources_name_line_or_index():
    records, _ = ingest("pairs", FIXTURES / "pairs" / "writing_prompts.jsonl")
    first = records[0]
    assert first["source"] == (FIXTURES / "pairs" / "writing_prompts.jsonl").resolve().as_uri() + "#L1"
    assert first["query"].startswith("Every lighthouse keeper") and first["language"] == "en"
    items, _ = ingest("reer", FIXTURES / "reer" / "items.json")
    assert items[0]["source"].endswith("items.json#index=0")
    no_question = next(r for r in items if r["source"].endswith("#index=7"))
    assert no_question["status"] == "accepted" and no_question["query"] is None


def test_ingest_never_crashes_on_unreadable_input(tmp_path):
    records, summary = ingest("reer", tmp_path / "missing.json")
    assert len(records) == 1 and records[0]["status"] == "rejected"
    assert records[0]["reasons"][0].startswith("unreadable:not_found") and "missing.json" in records[0]["source"]
    junk = tmp_path / "junk.json"
    junk.write_bytes(bytes(range(256)) * 4)
    records, _ = ingest("reer", junk)
    assert [r["status"] for r in records] == ["rejected"] and records[0]["reasons"][0].startswith("invalid_json")
    records, _ = ingest("book", junk)
    assert [r["status"] for r in records] == ["rejected"]
    records, _ = ingest("pairs", "nosuchproto://bucket/key.jsonl")
    assert records[0]["status"] == "rejected" and records[0]["reasons"][0].startswith("unreadable:")


def test_ingest_configuration_errors_are_clear(tmp_path):
    out = reer("ingest", "--reader", "pairs", str(FIXTURES / "pairs"), "--option", "story_feild=body")
    assert out.returncode == 2 and "unknown option(s) story_feild" in out.stderr and "Traceback" not in out.stderr
    out = reer("ingest", "--reader", "pairs", str(FIXTURES / "pairs"), "--option", "oops")
    assert out.returncode == 2 and "key=value" in out.stderr


def test_ingest_summary_without_jsonl():
    out = reer("ingest", "--reader", "reer", str(FIXTURES / "reer"))
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["rows"] == 12 and summary["reasons"]["invalid_json"] == 1


def test_synthesize_query_checks_a_given_request(tmp_path):
    reference = tmp_path / "ref.txt"
    reference.write_text((FIXTURES / "book" / "no_markers.txt").read_text(encoding="utf-8"), encoding="utf-8")
    out = reer("synthesize-query", "--reference", str(reference), "--query", "写一篇介绍这本短书的文章。", "--json")
    assert out.returncode == 0, out.stderr
    verdict = json.loads(out.stdout)
    assert verdict["synthesized"] is False and verdict["raw_output"] is None
    assert verdict["status"] == "rejected" and verdict["reasons"] == ["query_wrong_language:zh!=en"]


@pytest.mark.model
def test_synthesize_query_with_the_generator(tmp_path, embedded_path):
    reference = tmp_path / "ref.txt"
    reference.write_text("The footbridge over the canal closes for repairs from the first of March. Walkers can cross "
                         "at the lock gates two hundred metres east, where a ramp has been fitted for prams and "
                         "wheelchairs, and the bridge should reopen before the Easter holidays.", encoding="utf-8")
    out = reer("synthesize-query", "--reference", str(reference), "--profile", "test", "--seed", "1", "--json")
    assert out.returncode == 0, out.stderr
    verdict = json.loads(out.stdout)
    assert verdict["synthesized"] is True and verdict["model"].startswith("reer-embedded:")
    assert isinstance(verdict["raw_output"], str) and isinstance(verdict["query"], str)
    assert verdict["status"] in ("accepted", "rejected") and verdict["language"] == "en"
    assert (verdict["status"] == "accepted") == (verdict["reasons"] == [])


def test_every_file_under_the_path_gets_a_record(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "garden.md").write_text("# Garden\n\n" + "The beans climb the fence every June. " * 12,
                                                  encoding="utf-8")
    (tmp_path / "notes" / "photo.bin").write_bytes(bytes(range(256)))
    (tmp_path / "notes" / "README").write_text("no suffix", encoding="utf-8")
    records, summary = ingest("generic", tmp_path / "notes")
    by_file = {Path(r["source"].split("#")[0]).name: r for r in records}
    assert set(by_file) == {"garden.md", "photo.bin", "README"}
    assert by_file["photo.bin"]["status"] == "rejected" and by_file["photo.bin"]["reasons"] == ["unsupported_extension:.bin"]
    assert by_file["README"]["reasons"] == ["unsupported_extension:(none)"]
    assert by_file["garden.md"]["status"] == "accepted"
    assert summary["reasons"]["unsupported_extension"] == 2
