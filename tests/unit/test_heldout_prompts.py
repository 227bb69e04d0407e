"""The bundled held-out benchmark prompts (reer_assets/data/benchmark/prompts.jsonl): enough of them,
well formed, and disjoint from every text a model of this project is trained on.

Disjointness uses the scorer's contamination units (:func:`reer_assets.backends.embedded_scorer.ngrams`:
8-grams of lower-cased words, each CJK character a unit). The scorer's training text comes from
:func:`training_texts` (what ``contamination_report`` reads); it trains the shared tokenizer and renders
1,800 documents, about 3 s on 2 CPU cores, so it is built once per module. No model is loaded.
"""

from __future__ import annotations

import re
from collections import Counter
from itertools import combinations

import pytest

from reer_assets import data
from reer_assets.backends.embedded_scorer import ngrams, training_texts
from reer_assets.core.language import EN, ZH, has_cjk, length_units

DOMAINS = ("creative_writing", "essays", "business", "science_engineering", "education", "advertising")
PER_DOMAIN = 10
LANGUAGES_PER_DOMAIN = {EN: 8, ZH: 2}
KEYS = {"id", "domain", "language", "prompt", "required_length", "reference", "license"}
LICENSE = "Original text written for reer-assets. License: Apache-2.0."
LENGTH_TOLERANCE = 0.35


@pytest.fixture(scope="module")
def rows():
    return data.benchmark_prompts()


@pytest.fixture(scope="module")
def reference_grams(rows):
    return {r["id"]: ngrams(r["reference"]) for r in rows}


def _overlaps(grams_by_id: dict, seen: set) -> dict:
    return {ref_id: sorted(" ".join(g) for g in grams & seen)[:3]
            for ref_id, grams in grams_by_id.items() if grams & seen}


def test_ten_prompts_per_domain_eight_english_two_chinese(rows):
    assert Counter(r["domain"] for r in rows) == {d: PER_DOMAIN for d in DOMAINS}
    for domain in DOMAINS:
        assert Counter(r["language"] for r in rows if r["domain"] == domain) == LANGUAGES_PER_DOMAIN, domain


def test_ids_are_unique_numbered_and_grouped_by_domain(rows):
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids)
    # lines are grouped by domain, in order bench-1 .. bench-10 (a quick run takes the first N of each)
    assert [r["domain"] for r in rows] == [d for d in DOMAINS for _ in range(PER_DOMAIN)]
    assert ids == [f"{d}-bench-{k}" for d in DOMAINS for k in range(1, PER_DOMAIN + 1)]


def test_every_line_has_the_schema(rows):
    for r in rows:
        assert set(r) == KEYS, r["id"]
        assert r["domain"] in DOMAINS and r["language"] in (EN, ZH), r["id"]
        assert r["license"] == LICENSE, r["id"]
        assert isinstance(r["required_length"], int) and r["required_length"] > 0, r["id"]  # > 0: a stated length; its value is checked against the reference below
        assert isinstance(r["prompt"], str) and isinstance(r["reference"], str), r["id"]
        assert r["prompt"].strip() and r["reference"].strip(), r["id"]
        # the prompt states the length it asks for, in the line's language
        assert str(r["required_length"]) in re.findall(r"\d+", r["prompt"]), r["id"]
        assert has_cjk(r["prompt"]) == has_cjk(r["reference"]) == (r["language"] == ZH), r["id"]


def test_each_reference_is_near_its_required_length(rows):
    off = {}
    for r in rows:
        units, required = length_units(r["reference"], r["language"]), r["required_length"]
        if abs(units - required) > LENGTH_TOLERANCE * required:
            off[r["id"]] = (units, required)
    assert not off, off


def test_references_share_no_ngram_with_the_bundled_corpus(reference_grams):
    seen: set = set()
    for piece in data.corpus():
        for field in ("text", "request", "title"):
            if isinstance(piece.get(field), str):
                seen |= ngrams(piece[field])
    assert seen
    assert not _overlaps(reference_grams, seen)


def test_references_share_no_ngram_with_the_scorers_training_text(reference_grams):
    texts = training_texts()
    assert len(texts) > 1000
    seen: set = set()
    for text in texts:
        seen |= ngrams(text)
    assert not _overlaps(reference_grams, seen)


def test_no_two_benchmark_lines_share_an_ngram(rows):
    grams = {r["id"]: ngrams(r["prompt"]) | ngrams(r["reference"]) for r in rows}
    shared = {(a, b): sorted(" ".join(g) for g in grams[a] & grams[b])[:3]
              for a, b in combinations(grams, 2) if grams[a] & grams[b]}
    assert not shared, shared
