"""Segmentation rule of DESIGN.md §2.3."""

from reer_assets.core.segment import segment

LONG_A = "Alright, the user wants a short story about a lighthouse keeper who finds a letter, and I need to plan it."
LONG_B = "Hmm, maybe the letter should be from the keeper's younger self, which would make the ending land harder."
LONG_C = "Wait, the reader is probably a teenager, so the language should stay simple and the pacing quick enough."


def test_splits_on_blank_lines_and_keeps_text():
    seg = segment(f"{LONG_A}\n\n{LONG_B}\n\n{LONG_C}")
    assert seg.segments == [LONG_A, LONG_B, LONG_C]
    assert seg.separator == "\n\n"
    assert seg.join() == f"{LONG_A}\n\n{LONG_B}\n\n{LONG_C}"


def test_runs_of_blank_lines_and_whitespace_only_fragments_fold_away():
    seg = segment(f"{LONG_A}\n\n\n\n   \n\n\t\n{LONG_B}\n \n{LONG_C}\n\n")
    assert seg.segments == [LONG_A, LONG_B, LONG_C]


def test_short_fragments_fold_into_the_next_segment():
    seg = segment(f"Short one.\n\nAnother short.\n\n{LONG_A}\n\n{LONG_B}")
    assert seg.segments == [f"Short one.\n\nAnother short.\n\n{LONG_A}", LONG_B]


def test_trailing_short_buffer_joins_the_last_segment():
    seg = segment(f"{LONG_A}\n\n{LONG_B}\n\nThat is all.")
    assert seg.segments == [LONG_A, f"{LONG_B}\n\nThat is all."]


def test_latex_display_block_is_never_split():
    block = "\\[\n E = mc^2\n\n \\quad \\text{(energy)}\n\\]"
    seg = segment(f"{LONG_A}\n\n{block}\n\n{LONG_B}")
    joined = [s for s in seg.segments if "\\[" in s]
    assert len(joined) == 1 and block in joined[0]
    # the short display block folds into the next segment, whole
    assert seg.segments == [LONG_A, f"{block}\n\n{LONG_B}"]


def test_single_newline_fallback_when_blank_lines_give_one_segment():
    text = f"{LONG_A}\n{LONG_B}\n{LONG_C}"
    seg = segment(text)
    assert seg.separator == "\n"
    assert seg.segments == [LONG_A, LONG_B, LONG_C]


def test_fallback_keeps_single_segment_when_nothing_splits():
    seg = segment(LONG_A)
    assert seg.segments == [LONG_A]


def test_chinese_text_counts_characters():
    zh_a = "好的，用户想要一篇写给中学生的短文，" * 6
    zh_b = "嗯，也许可以先从一个具体的场景写起，" * 6
    seg = segment(f"{zh_a}\n\n短句。\n\n{zh_b}")
    assert seg.segments == [zh_a, f"短句。\n\n{zh_b}"]
    assert all(len(s) >= 100 for s in seg.segments)


def test_empty_text():
    assert segment("").segments == []
    assert segment("  \n\n  ").segments == []
