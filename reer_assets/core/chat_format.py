"""The one inference format, shared by scoring, SFT rows and benchmarks.

A conversation is: system prompt, user = the standard inference prompt for the request
(``PromptSet.inference_messages``), assistant = ``<think>\\n`` + thinking + ``\\n</think>\\n``
+ ``<answer>\\n`` + answer + ``\\n</answer>``. The scorer reads exactly this text up to the
scored part of the answer; an SFT row is exactly this conversation; a benchmark prompts the
model with the same messages and a ``<think>\\n`` prefill. Changing a string here changes
every stage at once, which is the point.

A chat template that drops the reasoning from assistant turns (as some reasoning-model
templates do for earlier turns) would silently train on answers alone:
:func:`check_template_keeps_reasoning` refuses such a template.
"""

from __future__ import annotations

import hashlib
from typing import Any

import polars as pl

from reer_assets.core.prompts import prompts_for
from reer_assets.core.protocols import Message

THINK_OPEN = "<think>\n"
THINK_CLOSE = "\n</think>\n"
ANSWER_OPEN = "<answer>\n"
ANSWER_CLOSE = "\n</answer>"


def inference_messages(query: str) -> list[Message]:
    """System and user turns for ``query``, in the query's prompt language."""
    return prompts_for(query).inference_messages(query)


def assistant_prefix(thinking: str, answer_head: str = "") -> str:
    """The assistant text up to (and including) ``answer_head``: what the scorer conditions on."""
    return THINK_OPEN + thinking + THINK_CLOSE + ANSWER_OPEN + answer_head


def assistant_turn(thinking: str, answer: str) -> str:
    """The whole assistant turn of a trained (or scored) conversation."""
    return assistant_prefix(thinking, answer) + ANSWER_CLOSE


def conversation(query: str, thinking: str, answer: str) -> list[Message]:
    """An SFT row: the inference messages plus the assistant turn."""
    return inference_messages(query) + [{"role": "assistant", "content": assistant_turn(thinking, answer)}]


def answer_of(assistant_text: str) -> str:
    """The answer inside an assistant turn in this format (text after ``</think>``, tags removed)."""
    _, _, after = assistant_text.partition("</think>")
    body = after.strip()
    if body.startswith("<answer>"):
        body = body[len("<answer>"):]
    return body.split("</answer>", 1)[0].strip()


class TemplateDropsReasoningError(ValueError):
    """The tokenizer's chat template does not keep an assistant turn's thinking as written."""


def template_name(tokenizer: Any) -> str:
    """A name for a tokenizer's chat template: its model path plus a short hash of the template text."""
    template = getattr(tokenizer, "chat_template", None) or ""
    digest = hashlib.sha256(str(template).encode()).hexdigest()[:10]
    return f"{getattr(tokenizer, 'name_or_path', '') or 'tokenizer'} (chat template {digest})"


def check_template_keeps_reasoning(tokenizer: Any, messages: list[Message] | None = None) -> None:
    """Raise :class:`TemplateDropsReasoningError` unless the template renders the assistant turn verbatim.

    The probe is ``messages`` (an SFT row) or a small conversation in this format; the rendered
    conversation must contain the assistant content byte for byte.
    """
    probe = messages or conversation("Write two lines about rain.", "I will keep it short.\n\nMaybe rhyme.",
                                     "Rain on the roof,\nsleep without proof.")
    rendered = tokenizer.apply_chat_template(probe, tokenize=False)
    content = probe[-1]["content"]
    if content not in rendered:
        raise TemplateDropsReasoningError(
            f"the chat template of {template_name(tokenizer)} does not keep the assistant turn as written "
            "(it drops or rewrites the <think> block), so fine-tuning on it would lose the thinking; "
            "use a template that renders assistant content verbatim")


def to_chat(frame: pl.DataFrame) -> pl.DataFrame:
    """Chat-format rows in the one inference format (``core.chat_format``): system, the standard
    inference prompt for the query, and the assistant turn <think>…</think><answer>…</answer>."""
    return frame.select(
        "id", "domain", "trajectory_id", "document_id", "final_score",
        pl.struct(["query", "thinking", "reference"]).map_elements(
            lambda r: conversation(r["query"], r["thinking"], r["reference"]),
            return_dtype=pl.List(pl.Struct({"role": pl.String, "content": pl.String})),
        ).alias("messages"),
    )
