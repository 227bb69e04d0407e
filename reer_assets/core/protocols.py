"""What the search needs from models: a Generator that samples and a Scorer that reads.

Backends (hf, vllm, openai, embedded) implement these; the core never imports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

Message = dict[str, str]  # {"role": ..., "content": ...}


class PromptTooLongError(ValueError):
    """The prompt does not fit the model's context: retrying cannot help."""


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.8
    top_p: float = 0.85
    top_k: int = 40
    max_tokens: int = 8000
    stop: tuple[str, ...] = ()
    # strings the sampler may never emit (every backend bans them at the token level)
    banned: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerationRequest:
    """Chat messages plus text that pre-fills the assistant turn; ``n`` samples wanted."""

    messages: list[Message]
    prefill: str = ""
    n: int = 1
    sampling: Sampling = field(default_factory=Sampling)
    seed: int = 0


@dataclass(frozen=True)
class Completion:
    """One sample: the text after the prefill, and what it cost."""

    text: str
    completion_tokens: int
    prompt_tokens: int = 0
    finish_reason: str = "stop"


@dataclass(frozen=True)
class ScoreRequest:
    """Score ``continuation`` given a chat prompt and assistant-side ``prefix`` text.

    The scored string is render(messages, add_generation_prompt) + prefix + continuation;
    only tokens that start inside ``continuation`` are returned.
    """

    messages: list[Message]
    prefix: str
    continuation: str


@dataclass(frozen=True)
class ScoreResult:
    token_logprobs: list[float]
    context_tokens: int = 0


@runtime_checkable
class Generator(Protocol):
    model_id: str

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        """Return ``request.n`` completions per request, in order."""
        ...


@runtime_checkable
class Scorer(Protocol):
    model_id: str

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """Return the log-probs of each request's continuation tokens, in order."""
        ...
