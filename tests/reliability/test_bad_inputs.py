"""Bad input corpus: files dropped into a domain's inbox folder and ingested by a real
materialisation of raw_documents (no model).

tests/fixtures/bad_inputs/ holds the small files and ``expected.yaml`` (what each must become);
the 50 MiB single-line file is written at test time. The run must complete, reject every bad
file with a specific reason, accept the legitimate ones (a prompt injection is data; mixed
Chinese/English is a Chinese document), and keep its memory bounded.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml

from tests.reliability.conftest import REPO, assert_ok, lineage, materialize, new_home, run_env

pytestmark = pytest.mark.slow

FIXTURES = REPO / "tests" / "fixtures" / "bad_inputs"
EXPECTED = yaml.safe_load((FIXTURES / "expected.yaml").read_text())
HUGE = "huge_single_line.txt"
HUGE_BYTES = 50 * 1024 * 1024
DOMAIN = "inbox_only"
MIB = 1024  # ru_maxrss is in KiB


def write_huge_line(path: Path, size: int = HUGE_BYTES) -> None:
    """``size`` bytes of seeded English words and spaces, no line break, written in pieces."""
    rng = random.Random(50)
    words = "the river carries light across the stones while a heron waits by the reeds and the town wakes".split()
    written = 0
    with open(path, "w", encoding="ascii") as handle:
        while written < size:
            piece = " ".join(rng.choice(words) for _ in range(20000)) + " "
            piece = piece[: size - written]
            handle.write(piece)
            written += len(piece)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "domains.yaml").write_text(f"domains:\n  {DOMAIN}:\n    languages: [en, zh]\n    sources:\n"
                                       "      - reader: inbox\n", encoding="utf-8")
    home = new_home(root, "home")
    inbox = home / "inbox" / DOMAIN
    inbox.mkdir(parents=True)
    for name in EXPECTED:
        if name != HUGE:
            shutil.copy(FIXTURES / name, inbox / name)
    env = run_env(home, root / "domains.yaml")
    small = materialize(home, env, "raw_documents", DOMAIN, log_name="small.log", measure=True)
    assert_ok(small)
    small_frame = pl.read_parquet(home / "reer/assets/raw_documents" / DOMAIN / "documents.parquet")
    write_huge_line(inbox / HUGE)
    huge = materialize(home, env, "raw_documents", DOMAIN, log_name="huge.log", measure=True)
    frame = pl.read_parquet(home / "reer/assets/raw_documents" / DOMAIN / "documents.parquet", columns=[
        "id", "source_uri", "status", "reject_reasons", "language", "text_hash"])
    yield {"home": home, "small": small, "huge": huge, "small_frame": small_frame, "frame": frame}


def _by_file(frame: pl.DataFrame) -> dict[str, dict]:
    return {row["source_uri"].rsplit("/", 1)[-1]: row for row in frame.iter_rows(named=True)}


def _check(row: dict, expected: dict, name: str) -> None:
    assert row["status"] == expected["status"], (name, row["status"], row["reject_reasons"])
    if expected["status"] == "rejected":
        assert len(row["reject_reasons"]) == 1 and row["reject_reasons"][0].startswith(expected["reason"]), \
            (name, row["reject_reasons"])
    else:
        assert row["reject_reasons"] == [] and row["language"] == expected["language"], (name, row)


def test_every_bad_file_is_rejected_with_a_specific_reason(ingested):
    rows = _by_file(ingested["small_frame"])
    assert set(rows) == set(EXPECTED) - {HUGE}, "a file was dropped silently or read twice"
    for name, expected in EXPECTED.items():
        if name != HUGE:
            _check(rows[name], expected, name)


def test_prompt_injection_and_mixed_language_are_kept_as_data(ingested):
    rows = _by_file(ingested["small_frame"])
    injection = rows["prompt_injection.md"]
    source = (FIXTURES / "prompt_injection.md").read_text(encoding="utf-8")
    assert "IGNORE ALL PREVIOUS INSTRUCTIONS" in injection["text"] and "</think><answer>" in injection["text"]
    assert injection["title"] == "Notice for the building's residents"
    assert injection["text"].split() == source.split()  # verbatim: whitespace collapsed, nothing else changed
    assert "社区花园" in rows["mixed_zh_en.md"]["text"] and "Community Garden" in rows["mixed_zh_en.md"]["text"]


def test_huge_single_line_file_is_rejected_and_the_run_completes(ingested):
    assert_ok(ingested["huge"])
    rows = _by_file(ingested["frame"])
    assert set(rows) == set(EXPECTED)
    for name, expected in EXPECTED.items():
        _check(rows[name], expected, name)
    documents = lineage(ingested["home"], "SELECT id, status FROM documents WHERE partition = ?", [DOMAIN])
    assert documents["id"].n_unique() == documents.height == len(EXPECTED)


def test_memory_stays_bounded_on_a_50_mib_line(ingested):
    small, huge = ingested["small"].rusage_maxrss_kb, ingested["huge"].rusage_maxrss_kb
    print(f"\npeak RSS: small files {small / MIB:.0f} MiB, with the 50 MiB line {huge / MIB:.0f} MiB "
          f"(+{(huge - small) / MIB:.0f} MiB), run {ingested['huge'].seconds:.1f}s")
    assert huge - small < 50 * MIB
