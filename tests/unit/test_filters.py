"""Each filter of docs/algorithm.md and the query QC, with their thresholds."""

from reer_assets.core.curation import FilterConfig, NearDuplicateIndex, row_reasons, tail_cue_count, top3_trigram_share
from reer_assets.core.synthesis import QueryQC, parse_synthesized, query_reasons

GOOD = ("Alright, the user wants a warm note for new neighbours, and I will keep it short and friendly. "
        "The reader is a family who just moved in, so I will mention the bakery and the park nearby.\n\n"
        "For structure I will open with a welcome, then two useful tips, then an invitation for tea. "
        "That should work; I'll write it now.")
REF = "Welcome to the street! The bakery on the corner opens at seven, and the park gate is behind the school."
OK_TRACE = {"status": "ok", "initial_closed": True, "initial_score": 1.5, "final_score": 1.2}


def reasons(thinking=GOOD, query="Write a welcome note for new neighbours.", reference=REF, trace=OK_TRACE, **cfg):
    return row_reasons(query, thinking, reference, trace, FilterConfig(**cfg))


def test_good_row_passes():
    assert reasons() == []


def test_unconcluded_thinking():
    tail = GOOD + " Hmm, wait, maybe not. Wait, alternatively, hmm."
    assert tail_cue_count(tail) > 2
    assert "unconcluded_thinking" in reasons(tail)
    assert "unconcluded_thinking" not in reasons(tail, max_tail_cues=10)


def test_trigram_repetition():
    looped = GOOD + " " + "I will write it. " * 40
    assert top3_trigram_share(looped) > 0.2  # the threshold the filter uses
    assert "trigram_repetition" in reasons(looped)
    assert "trigram_repetition" not in reasons(looped, max_top3_trigram_share=0.99)


def test_length_bounds():
    assert "thinking_too_short" in reasons("Too short a plan.")
    assert "thinking_too_long" in reasons(GOOD, max_thinking_units=20)


def test_copies_reference():
    copied = GOOD + " Draft: " + REF
    assert "copies_reference" in reasons(copied, max_copy_chars=60)
    assert "copies_reference" not in reasons(copied, max_copy_chars=500)


def test_malformed_tags_and_invalid_characters():
    assert "malformed_tags:tag_inside_thinking" in reasons(GOOD + "\n</refine>")
    assert "malformed_tags:unclosed_think" in reasons(trace={**OK_TRACE, "initial_closed": False})
    assert "invalid_characters" in reasons(GOOD + " \ufffd")


def test_language_mismatch():
    assert "language_mismatch" in reasons(query="写一封欢迎新邻居的短信。")
    zh = "好的，用户想要一封写给新邻居的欢迎短信，我要写得温暖简短。" * 4
    assert "language_mismatch" in reasons(zh)
    assert "language_mismatch" not in reasons(zh, query="写一封欢迎新邻居的短信。", reference="欢迎你们搬来！")


def test_score_filters_are_off_by_default_and_configurable():
    worse = {**OK_TRACE, "final_score": 1.5}
    assert reasons(trace=worse) == []
    assert "no_improvement" in reasons(trace=worse, require_improvement=True)
    assert "score_above_threshold" in reasons(max_final_score=1.0)


def test_search_rejects_propagate_with_reason():
    assert reasons(trace={"status": "rejected", "reject_reason": "initial_rollout_too_short"}) == [
        "search_rejected:initial_rollout_too_short"]


def test_near_duplicates_keep_the_first():
    index = NearDuplicateIndex(threshold=0.8)
    text = "The quick brown fox jumps over the lazy dog near the river bank every single morning."
    assert index.first_duplicate("a", text) is None
    assert index.first_duplicate("b", text.replace("morning", "morning!")) == "a"
    assert index.first_duplicate("c", "Completely different words about tea, rain and old trains.") is None


def test_query_qc():
    text = "The bakery on the corner opens at seven and sells rye bread with caraway seeds every day."
    assert query_reasons("", text, "en") == ["empty_query"]
    assert "query_copies_text" in query_reasons("Write: " + text, text, "en", QueryQC(max_copy_chars=30))
    assert any(r.startswith("query_too_long") for r in query_reasons("Write " * 200, text, "en"))
    assert any(r.startswith("query_wrong_language") for r in query_reasons("写一篇短文。", text, "en"))
    assert "query_contains_tags" in query_reasons("Write a note <refine>", text, "en")
    assert query_reasons("Write a short note about a bakery for neighbours.", text, "en") == []
    assert parse_synthesized("Write a note.\n\nextra<|im_end|>") == "Write a note."


def test_a_filter_is_one_small_class_and_a_user_can_add_one():
    from dataclasses import dataclass

    from reer_assets.core.curation import Row, filters_from

    @dataclass(frozen=True)
    class MentionsTheReader:
        name = "mentions_the_reader"

        def reason_or_none(self, row: Row) -> str | None:
            return None if "reader" in row.thinking else "no_reader"

    filters = filters_from(FilterConfig()) + [MentionsTheReader()]
    assert row_reasons("Write a welcome note for new neighbours.", GOOD, REF, OK_TRACE, filters) == []
    assert row_reasons("Write a welcome note for new neighbours.", GOOD.replace("reader", "family"), REF, OK_TRACE,
                       filters) == ["no_reader"]
    assert {f.name for f in filters_from(FilterConfig(reject_malformed_tags=False))}.isdisjoint({"malformed_tags"})
