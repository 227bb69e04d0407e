"""One inference format from scoring to SFT to benchmarks, and templates that would lose the thinking."""

import pytest

from reer_assets.core.chat_format import (
    TemplateDropsReasoningError,
    answer_of,
    assistant_prefix,
    check_template_keeps_reasoning,
    conversation,
)
from reer_assets.core.objective import build_score_request
from reer_assets.core.segment import segment

QUERY = "Write a short note to a neighbour about a parcel."
THINKING = "Alright, the user wants a friendly note.\n\nHmm, maybe I mention the time — 6 pm — and 'the blue door'.\n"
ANSWER = "Hi Sam,\n\nYour parcel came at six.\n\nIt waits by the blue door. Best, Ada"


def test_scoring_context_is_a_prefix_of_the_sft_row():
    request = build_score_request(QUERY, THINKING, segment(ANSWER))
    row = conversation(QUERY, THINKING, ANSWER)
    assert row[:-1] == request.messages
    assert row[-1]["content"].startswith(request.prefix + request.continuation)
    assert answer_of(row[-1]["content"]) == ANSWER


@pytest.mark.model
def test_the_models_template_keeps_the_thinking_byte_for_byte(embedded_loaded):
    tokenizer = embedded_loaded.tokenizer
    row = conversation(QUERY, THINKING, ANSWER)
    rendered = tokenizer.apply_chat_template(row, tokenize=False)
    assert assistant_prefix(THINKING) in rendered
    assert THINKING in rendered and ANSWER in rendered
    # and it survives tokenization: decoding the ids gives the same text back
    ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=False) == rendered
    check_template_keeps_reasoning(tokenizer, row)


class _Tokenizer:
    """A tokenizer whose template drops <think>…</think> from assistant turns, as some reasoning templates do."""

    name_or_path = "example/drops-reasoning"
    chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"

    def apply_chat_template(self, messages, tokenize=False):
        out = []
        for m in messages:
            text = m["content"]
            if m["role"] == "assistant" and "</think>" in text:
                text = text.split("</think>", 1)[1].lstrip()
            out.append(f"<{m['role']}>{text}")
        return "".join(out)


def test_a_template_that_drops_reasoning_is_refused_by_name():
    with pytest.raises(TemplateDropsReasoningError, match="example/drops-reasoning"):
        check_template_keeps_reasoning(_Tokenizer())


@pytest.mark.model
def test_sft_refuses_such_a_template(tmp_path, embedded_path):
    import shutil

    from transformers import AutoTokenizer

    from reer_assets.backends.training import train
    from reer_assets.core.training import recipe

    base = tmp_path / "base"
    shutil.copytree(embedded_path, base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
                               "{% if m['role'] == 'assistant' %}{{ m['content'].split('</think>')[-1] }}"
                               "{% else %}{{ m['content'] }}{% endif %}<|im_end|>\n{% endfor %}"
                               "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    tokenizer.save_pretrained(base)
    with pytest.raises(TemplateDropsReasoningError, match="does not keep the assistant turn"):
        train(str(base), [conversation(QUERY, THINKING, ANSWER)], tmp_path / "out", recipe("embedded", epochs=1))
    assert not (tmp_path / "out").exists()
