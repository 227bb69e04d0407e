"""The clipped objective (docs/algorithm.md), independent of any model."""

import math

import pytest

from reer_assets.core.objective import ObjectiveSettings, build_score_request, clipped_nll, split_reference
from reer_assets.core.prompts import CHINESE, ENGLISH
from reer_assets.core.segment import segment


def test_clipping_at_minus_two_and_zero():
    assert clipped_nll([-5.0, -1.0, 0.3]) == pytest.approx((2.0 + 1.0 + 0.0) / 3)
    assert clipped_nll([-0.5]) == pytest.approx(0.5)
    assert clipped_nll([-1e9] * 4) == pytest.approx(2.0)


def test_clip_bounds_are_settings():
    assert clipped_nll([-5.0], ObjectiveSettings(clip_min=-4.0)) == pytest.approx(4.0)


def test_empty_span_is_an_error():
    with pytest.raises(ValueError):
        clipped_nll([])


def test_first_reference_segment_is_context_not_scored():
    first = "The first paragraph of the reference sets the scene and is long enough to stand alone as a segment of its own."
    rest = "The second paragraph carries on with the story and is long enough to be its own segment in the text as well."
    request = build_score_request("Write a story.", "I will plan.", segment(f"{first}\n\n{rest}"))
    assert request.prefix == "<think>\nI will plan.\n</think>\n<answer>\n" + first
    assert request.continuation == "\n\n" + rest  # the reference after its first segment, byte for byte
    # the standard inference prompt: the query and the thinking instructions, never the reference
    assert all(first not in m["content"] and rest not in m["content"] for m in request.messages)
    assert request.messages == ENGLISH.inference_messages("Write a story.")
    assert request.messages[-1]["content"].startswith("Write a story.\n\n") and "<think></think>" in request.messages[-1]["content"]


def test_single_segment_reference_is_scored_whole():
    head, tail = split_reference(segment("Only one short paragraph."))
    assert head == "" and tail == "Only one short paragraph."


def test_chinese_query_uses_same_objective_layout():
    request = build_score_request("写一首诗", "我打算", segment("第一段" * 40 + "\n\n" + "第二段" * 40))
    assert request.continuation == "\n\n" + "第二段" * 40
    assert request.messages == CHINESE.inference_messages("写一首诗")
    assert not math.isnan(clipped_nll([-0.1, -3.0]))
