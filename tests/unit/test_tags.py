"""Reading <refine> and </think> the way the official REER code does."""

from reer_assets.core.tags import cut_thinking, last_refine


def test_last_refine_takes_the_last_block():
    assert last_refine("<refine>first</refine> then <refine>\n second \n</refine>") == "second"


def test_an_unclosed_block_runs_to_the_end():
    assert last_refine("<analyze>x</analyze><refine>\nrewritten but cut off by max_tokens") == "rewritten but cut off by max_tokens"


def test_no_block_is_none_and_an_empty_block_is_empty():
    assert last_refine("<analyze>only analysis</analyze>") is None
    assert last_refine("<refine>  </refine>") == ""
    # the last </refine> before the last <refine> leaves nothing, as in the official slice
    assert last_refine("<refine>a</refine><refine>b") == ""


def test_strict_reading_needs_a_closed_non_empty_block():
    assert last_refine("<refine>unclosed", require_closed=True) is None
    assert last_refine("<refine> </refine>", require_closed=True) is None
    assert last_refine("<refine>ok</refine>", require_closed=True) == "ok"


def test_cut_thinking_keeps_the_text_exactly():
    assert cut_thinking("Alright, plan.\n\nMore.\n</think>\n<answer>") == ("Alright, plan.\n\nMore.\n", True)
    assert cut_thinking("never closed  ") == ("never closed  ", False)
