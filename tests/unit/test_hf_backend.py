"""The transformers backend on the real embedded model: loading, sampling, scoring."""

from __future__ import annotations

import pytest

from reer_assets.core.objective import build_score_request, clipped_nll
from reer_assets.core.prompts import ENGLISH
from reer_assets.core.protocols import GenerationRequest, Sampling, ScoreRequest
from reer_assets.core.segment import segment

pytestmark = pytest.mark.model


def _requests(bundled_item):
    zh_ref = "第一段写的是清晨的菜市场，卖菜的人把青菜摆得整整齐齐，空气里有泥土的味道。" * 3 + "\n\n" + \
             "第二段写一位老人每天来买豆腐，她总是和摊主聊上几句家常，然后慢慢走回家。" * 3
    return [
        build_score_request(bundled_item.query, "I will plan the piece carefully.\n\nThen I write it.",
                            segment(bundled_item.reference)),
        build_score_request(bundled_item.query, "Short plan.", segment(bundled_item.reference)),
        build_score_request("写一篇关于菜市场的短文", "好的，我先想想读者。\n\n然后写。", segment(zh_ref)),
    ]


def test_embedded_model_loads_with_auto_classes(embedded_path):
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(embedded_path)
    tokenizer = AutoTokenizer.from_pretrained(embedded_path)
    assert model.config.model_type == "llama"
    for tag in ("<think>", "</think>", "<refine>", "</refine>", "<analyze>", "</analyze>", "<answer>"):
        assert len(tokenizer(tag, add_special_tokens=False)["input_ids"]) == 1, tag
    assert tokenizer.chat_template
    report = json.loads((embedded_path / "build.json").read_text())
    assert "train_seconds" in report  # the build time is reported (build.json), never asserted
    assert report["parameters"] == model.num_parameters()
    # the context covers the longest training example, which is the longest prompt the engine sends plus output
    assert model.config.max_position_embeddings >= report["longest_example_tokens"]


def test_scored_tokens_are_exactly_the_continuation(embedded_scorer, bundled_item):
    request = _requests(bundled_item)[0]
    ids, first = embedded_scorer.tokenize(request)
    tok = embedded_scorer.loaded.tokenizer
    assert tok.decode(ids[first:]) == request.continuation
    assert not tok.decode(ids[:first]).endswith(request.continuation[:20])


def test_batched_equals_unbatched_and_padding_safe(embedded_loaded, bundled_item):
    from reer_assets.backends.hf import HFScorer

    requests = _requests(bundled_item)
    batched = HFScorer(embedded_loaded, batch_size=3).score(requests)
    single = [HFScorer(embedded_loaded, batch_size=1).score([r])[0] for r in requests]
    for a, b in zip(batched, single):
        assert len(a.token_logprobs) == len(b.token_logprobs) > 0  # > 0: both scored something; the lengths are compared exactly
        assert max(abs(x - y) for x, y in zip(a.token_logprobs, b.token_logprobs)) < 1e-4


def test_span_only_logits_equal_full_logits(embedded_loaded, bundled_item):
    from reer_assets.backends.hf import HFScorer

    requests = _requests(bundled_item)
    fast = HFScorer(embedded_loaded, span_only=True).score(requests)
    naive = HFScorer(embedded_loaded, span_only=False).score(requests)
    for a, b in zip(fast, naive):
        assert abs(clipped_nll(a.token_logprobs) - clipped_nll(b.token_logprobs)) < 1e-4


def test_scores_are_log_probs(embedded_scorer, bundled_item):
    for result in embedded_scorer.score(_requests(bundled_item)):
        assert all(lp <= 0 for lp in result.token_logprobs)
        assert 0 <= clipped_nll(result.token_logprobs) <= 2


def test_sampling_n_candidates_seeded_and_stop_strings(embedded_generator):
    request = GenerationRequest(ENGLISH.inference_messages("Write a short note to a neighbour."), prefill="<think>\n",
                                n=2, sampling=Sampling(max_tokens=40), seed=3)
    a = embedded_generator.generate([request])[0]
    b = embedded_generator.generate([request])[0]
    assert len(a) == 2 and [c.text for c in a] == [c.text for c in b]
    assert all(0 < c.completion_tokens <= 40 for c in a)
    stopped = embedded_generator.generate([GenerationRequest(
        request.messages, prefill="<think>\n", n=1, sampling=Sampling(max_tokens=60, stop=(" ",)), seed=3)])[0][0]
    assert " " not in stopped.text and stopped.finish_reason == "stop"


def test_prompt_too_long_is_a_clear_error(embedded_generator):
    from reer_assets.backends.hf import PromptTooLongError

    huge = "word " * 6000
    with pytest.raises(PromptTooLongError):
        embedded_generator.generate([GenerationRequest(ENGLISH.inference_messages(huge), sampling=Sampling(max_tokens=5))])


def test_score_request_continuation_excludes_closing_tags(bundled_item):
    request = _requests(bundled_item)[0]
    assert "</answer>" not in request.continuation and isinstance(request, ScoreRequest)
