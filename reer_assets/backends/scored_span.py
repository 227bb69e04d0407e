"""Which tokens a score request scores, decided once for every backend.

hf, the in-process vLLM engine and a vLLM server must score the very same tokens, or
their objectives are not comparable. All of them tokenize here, with the model's own
tokenizer, and send token ids (never text) to the model.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from reer_assets.core.protocols import Message, ScoreRequest


def render(tokenizer: Any, messages: list[Message], assistant_text: str = "") -> str:
    """Chat-template text for ``messages`` with an open assistant turn, plus ``assistant_text``."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + assistant_text


def encode(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def score_tokens(tokenizer: Any, request: ScoreRequest) -> tuple[list[int], int]:
    """Token ids of the whole scored text and the index of the first scored token.

    A token is scored when its first character lies inside the continuation, found
    through the tokenizer's offset mapping. The first token is never scored (nothing
    predicts it).
    """
    context = render(tokenizer, request.messages, request.prefix)
    enc = tokenizer(context + request.continuation, add_special_tokens=False, return_offsets_mapping=True)
    boundary = len(context)
    ids = enc["input_ids"]
    first = next((i for i, (start, _) in enumerate(enc["offset_mapping"]) if start >= boundary), len(ids))
    return ids, max(first, 1)


def logprob_value(entry: Any) -> float:
    """A log-prob from vLLM's in-process ``Logprob`` object or a server's JSON dict."""
    if isinstance(entry, Mapping):
        return float(entry["logprob"])
    return float(entry.logprob)


def pick_prompt_logprobs(ids: Sequence[int], first: int, prompt_logprobs: Sequence[Any] | None) -> list[float]:
    """Log-probs of ``ids[first:]`` from vLLM's per-position prompt log-probs.

    Position ``i`` holds a mapping from token id (int in process, str over HTTP) to the
    log-prob of that token at ``i``; with ``prompt_logprobs=0`` it holds the actual token.
    """
    if prompt_logprobs is None or len(prompt_logprobs) != len(ids):
        got = None if prompt_logprobs is None else len(prompt_logprobs)
        raise ValueError(f"expected prompt log-probs for {len(ids)} prompt tokens, got {got}")
    out = []
    for pos in range(first, len(ids)):
        entries = prompt_logprobs[pos]
        token = ids[pos]
        entry = entries.get(token) if token in entries else entries.get(str(token))
        if entry is None:
            raise ValueError(f"prompt log-probs at position {pos} lack the prompt token {token}")
        out.append(logprob_value(entry))
    return out
