"""The segmentation rule of the official REER code (docs/algorithm.md), on our own cases."""

import random

import pytest

from reer_assets.core.objective import split_reference
from reer_assets.core.segment import LINE, PARAGRAPH, fold, pieces, segment

LONG_A = "Alright, the user wants a short story about a lighthouse keeper who finds a letter, and I need to plan it."
LONG_B = "Hmm, maybe the letter should be from the keeper's younger self, which would make the ending land harder."
LONG_C = "Wait, the reader is probably a teenager, so the language should stay simple and the pacing quick enough."


def text_of(length: int, letter: str) -> str:
    return (letter * (length - 1)) + "."


def test_sixty_sixty_two_hundred_is_one_segment():
    """A piece closes a segment only when it alone reaches 100 characters."""
    a, b, c = text_of(60, "a"), text_of(60, "b"), text_of(200, "c")
    seg = segment(f"{a}\n\n{b}\n\n{c}")
    assert seg.segments == [f"{a}\n\n{b}\n\n{c}"]
    # the accumulated 60 + 60 would have closed a segment under a buffer rule; here it does not
    assert len(segment(f"{a}\n\n{b}\n\n{c}\n\n{text_of(150, 'd')}")) == 2


def test_splits_on_blank_lines_and_keeps_every_byte():
    text = f"{LONG_A}\n\n{LONG_B}\n\n{LONG_C}"
    seg = segment(text)
    assert seg.cut == PARAGRAPH
    assert seg.segments == [LONG_A, f"\n\n{LONG_B}", f"\n\n{LONG_C}"]
    assert seg.join() == text


def test_whitespace_runs_stay_with_the_next_segment():
    text = f"{LONG_A}  \n\n\n\n   \t\n{LONG_B}\n\n{LONG_C}\n\n"
    seg = segment(text)
    assert seg.segments == [f"{LONG_A}  ", f"\n\n\n\n   \t\n{LONG_B}", f"\n\n{LONG_C}\n\n"]
    assert seg.join() == text


def test_a_blank_line_holding_spaces_is_not_a_cut():
    # "\n \n" is not the two-newline separator: the official code does not cut there
    seg = segment(f"{LONG_A}\n \n{LONG_B}\n\n{LONG_C}")
    assert seg.segments == [f"{LONG_A}\n \n{LONG_B}", f"\n\n{LONG_C}"]


def test_short_pieces_and_a_trailing_tail_are_held():
    seg = segment(f"Short one.\n\nAnother short.\n\n{LONG_A}\n\n{LONG_B}\n\nThat is all.")
    assert seg.segments == [f"Short one.\n\nAnother short.\n\n{LONG_A}", f"\n\n{LONG_B}\n\nThat is all."]


def test_latex_display_block_is_never_cut():
    block = "\\[\n E = mc^2\n\n \\quad \\text{(energy)}\n\n\\]"
    text = f"{LONG_A}\n\n{block}\n\n{LONG_B}"
    seg = segment(text)
    assert seg.join() == text
    assert sum(block in s for s in seg.segments) == 1
    # the block is shorter than 100 characters, so it is held and joins the next long piece
    assert seg.segments == [LONG_A, f"\n\n{block}\n\n{LONG_B}"]


def test_a_long_latex_block_is_one_piece_and_an_unclosed_one_runs_to_the_end():
    formula = "\\[\n" + "\n\n".join(f"x_{i} = {i}" for i in range(30)) + "\n\\]"
    assert pieces(f"{LONG_A}\n\n{formula}") == [LONG_A, "\n\n", formula]
    unclosed = f"{LONG_A}\n\n\\[ a = b\n\n{LONG_B}"
    assert pieces(unclosed) == [LONG_A, "\n\n", f"\\[ a = b\n\n{LONG_B}"]


def test_single_newline_fallback_when_blank_lines_give_one_segment():
    text = f"{LONG_A}\n{LONG_B}\n{LONG_C}"
    seg = segment(text)
    assert seg.cut == LINE
    assert seg.segments == [LONG_A, f"\n{LONG_B}", f"\n{LONG_C}"]


def test_nothing_to_cut_and_empty_texts():
    assert segment(LONG_A).segments == [LONG_A]
    assert segment("").segments == []
    assert segment("  \n\n  ").segments == ["  \n\n  "]  # whitespace alone is one (useless) segment


def test_chinese_text_counts_characters():
    zh_a = "好的，用户想要一篇写给中学生的短文，" * 6
    zh_b = "嗯，也许可以先从一个具体的场景写起，" * 6
    seg = segment(f"{zh_a}\n\n短句。\n\n{zh_b}")
    assert seg.segments == [zh_a, f"\n\n短句。\n\n{zh_b}"]


def test_fold_threshold_is_per_piece():
    assert fold(["x" * 99, "\n\n", "y" * 100]) == ["x" * 99 + "\n\n" + "y" * 100]
    assert fold(["x" * 100, "\n\n", "y" * 99]) == ["x" * 100 + "\n\n" + "y" * 99]
    assert fold(["x" * 10], min_chars=5) == ["x" * 10]


@pytest.mark.parametrize("seed", range(20))
def test_any_text_rejoins_byte_for_byte_and_the_scored_tail_is_the_rest(seed):
    rng = random.Random(seed)
    parts = []
    for _ in range(rng.randint(1, 12)):
        parts.append("".join(rng.choice("abc de\tfg.,\\[]") for _ in range(rng.randint(0, 180))))
        parts.append(rng.choice(["\n\n", "\n", "\n\n\n", " \n\n ", "\n \n", "\r\n\r\n", ""]))
    text = "".join(parts)
    seg = segment(text)
    assert seg.join() == text
    head, tail = split_reference(seg)
    assert head + tail == text
    if len(seg) > 1:
        assert head == seg.segments[0] and tail == text[len(seg.segments[0]):]
