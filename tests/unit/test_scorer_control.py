"""The embedded scorer reads the thinking: the positive control, the outline rule, and clean training text."""

from __future__ import annotations

import json

import pytest

from reer_assets import data
from reer_assets.core.scorer_control import (
    ControlItem,
    bundled_items,
    control_thinkings,
    outline_items,
    outline_thinking,
    run_control,
)

pytestmark = pytest.mark.model

SHARE_TARGET = 0.90
GAP_TARGET = 0.10


def test_control_holds_on_the_bundled_items(embedded_scorer):
    report = run_control(embedded_scorer, bundled_items(data.corpus()))
    assert report["items"] == len(bundled_items(data.corpus())) == 48
    assert set(report["by_language"]) == {"en", "zh"}
    assert report["share_outline_better"] >= SHARE_TARGET, report
    assert report["mean_gap"] >= GAP_TARGET, report
    for row in report["rows"]:
        assert row["gap"] == pytest.approx(row["unrelated_score"] - row["outline_score"], abs=1e-3)


def test_outline_rule_on_a_small_text():
    text = ("The ferry from Lowmarsh left at 6:40 with nine passengers aboard.\n\n"
            "Captain Odile Varga counted the lifejackets twice. Everyone reached Port Ensley dry.")
    items = outline_items(text)
    assert items.names == ["Lowmarsh", "Odile Varga", "Port Ensley"]
    assert items.numbers == ["6:40 with", "nine passengers"]
    # the four-word run with the most letters outside function words, one per sentence
    assert items.phrases == ["with nine passengers aboard", "Captain Odile Varga counted", "Everyone reached Port Ensley"]
    for item in items.names + items.numbers + items.phrases:
        assert item in text
    thinking = outline_thinking(text)
    assert all(item in thinking for item in items.names + items.numbers + items.phrases)
    assert "---" in thinking


def test_outline_rule_on_a_small_chinese_text():
    text = "码头上的“晚潮号”每天六点四十开船。\n\n船长老周数了三遍救生衣，一共二十件，大家都平安到了对岸。"
    items = outline_items(text)
    assert items.names == ["晚潮号"]
    assert items.numbers == ["四十开", "二十件"]  # a lone numeral (六, 三) is not a number here
    assert items.phrases == ["每天六点四十开船", "船长老周数了三遍"]  # the longest clause, cut to 8


def test_unrelated_thinking_is_another_items_outline_of_similar_length():
    items = bundled_items(data.corpus())
    for item, (outline, unrelated) in zip(items, control_thinkings(items)):
        assert 0.95 * len(outline) <= len(unrelated) <= len(outline)
        names = outline_items(item.reference).names
        # the item's own names do not leak into its unrelated thinking (beyond shared common words)
        assert sum(name in unrelated for name in names) <= max(1, len(names) // 3), item.item_id
    a = ControlItem("a", "Write it.", "Alma sold 12 kites. " * 5)
    b = ControlItem("b", "Write it.", "Bruno mended 30 nets. " * 5)
    (outline_a, unrelated_a), _ = control_thinkings([a, b])
    assert "Bruno" in unrelated_a and "Alma" not in unrelated_a and "Alma" in outline_a


def test_training_text_is_disjoint_from_every_scored_reference(scorer_path):
    from transformers import AutoTokenizer

    from reer_assets.backends.embedded_scorer import DEFAULT_SCORER_CONFIG, contamination_report, training_texts

    texts = training_texts(DEFAULT_SCORER_CONFIG, AutoTokenizer.from_pretrained(str(scorer_path)))
    report = contamination_report(texts)
    assert report["references"] == 108  # 48 corpus pieces and 60 benchmark references
    assert report["references_with_overlap"] == 0 and report["max_share"] == 0.0, report["overlapping"]


def test_build_json_records_the_build_and_its_contamination(scorer_path):
    from reer_assets.backends.embedded_scorer import scorer_build_key

    build = json.loads((scorer_path / "build.json").read_text())
    assert build["key"] == scorer_path.name == scorer_build_key()
    assert build["train_seconds"] > 0 and build["parameters"] > 0  # > 0: recorded; their values are the build's
    contamination = build["contamination"]
    assert contamination["references"] == 108 and contamination["training_ngrams"] > 0  # what the build measured
    assert contamination["max_share"] == 0.0 and contamination["references_with_overlap"] == 0


def test_the_scorer_shares_the_generators_tokenizer(scorer_loaded, embedded_loaded):
    a, b = scorer_loaded.tokenizer, embedded_loaded.tokenizer
    assert a.get_vocab() == b.get_vocab() and a.chat_template == b.chat_template
    assert a.all_special_tokens == b.all_special_tokens


def test_the_scorer_role_resolves_to_the_scorer_build(scorer_path, embedded_path, monkeypatch):
    from reer_assets.backends.config import BackendSpec, model_id, resolve_model_path

    for name in ("REER_SCORER_MODEL", "REER_SCORER_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    spec = BackendSpec.from_env("scorer")
    assert resolve_model_path(spec, "scorer") == (str(scorer_path), f"reer-embedded-scorer:{scorer_path.name}")
    assert model_id(spec) == f"reer-embedded:{embedded_path.name}"
    assert model_id(BackendSpec(backend="vllm"), "scorer") == f"vllm:reer-embedded-scorer:{scorer_path.name}"
    # REER_SCORER_* still override everything
    monkeypatch.setenv("REER_SCORER_BACKEND", "hf")
    monkeypatch.setenv("REER_SCORER_MODEL", str(embedded_path))
    assert resolve_model_path(BackendSpec.from_env("scorer"), "scorer") == (str(embedded_path), f"hf:{embedded_path}")
