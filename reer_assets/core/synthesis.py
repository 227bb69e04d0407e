"""Synthesis: the request behind a text, back-synthesized by the generator, and the quality checks
every request (synthesized or given) passes before it drives a search.

One generator call per text, parsed; shared by the ``synthesis`` workload and ``reer
synthesize-query`` so both write the same request.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from reer_assets.core.curation import TAG, longest_overlap
from reer_assets.core.language import ZH, prompt_language
from reer_assets.core.language_id import detect_language
from reer_assets.core.prompts import prompts_for
from reer_assets.core.protocols import GenerationRequest, Generator, Sampling


@dataclass(frozen=True)
class QueryQC:
    max_chars: int = 600
    max_copy_chars: int = 60  # longest verbatim span shared with the text
    min_chars: int = 8

    def to_dict(self) -> dict:
        return asdict(self)


def parse_synthesized(raw: str) -> str:
    """The request from a generator's output: drop tags and stray chat markers, keep the first block."""
    text = raw.replace("<|im_end|>", "").strip()
    for marker in ("<|im_start|>", "</think>", "<think>"):
        text = text.split(marker)[0].strip()
    return text.split("\n\n")[0].strip()


def query_reasons(query: str, text: str, text_language: str, qc: QueryQC = QueryQC()) -> list[str]:
    """Every reason a request (synthesized or given) is unfit: empty, too short/long, copies the
    text, carries tags or broken characters, or is not in the text's language."""
    query = query.strip()
    if not query:
        return ["empty_query"]
    reasons = []
    if len(query) < qc.min_chars:
        reasons.append("query_too_short")
    if len(query) > qc.max_chars:
        reasons.append(f"query_too_long:{len(query)}>{qc.max_chars}")
    if longest_overlap(query, text) > qc.max_copy_chars:
        reasons.append("query_copies_text")
    if TAG.search(query) or "<|im_" in query:
        reasons.append("query_contains_tags")
    if "\ufffd" in query:
        reasons.append("query_invalid_characters")
    query_language = detect_language(query)  # lingua, so a French text needs a French request too
    if prompt_language(query) == ZH and query_language != "ja":
        query_language = ZH  # any CJK ideograph selects the Chinese prompt set (docs/algorithm.md §1)
    if query_language != text_language:
        reasons.append(f"query_wrong_language:{query_language}!={text_language}")
    return reasons


@dataclass(frozen=True)
class SynthesizedQuery:
    query: str  # parsed from raw_output
    raw_output: str  # the generator's text as it came back
    model: str
    prompt_tokens: int
    completion_tokens: int

    def to_dict(self) -> dict:
        return asdict(self)


def synthesis_request(text: str, sampling: Sampling, seed: int) -> GenerationRequest:
    """The prompt (in the text's prompt language) asking for the request behind ``text``."""
    return GenerationRequest(messages=prompts_for(text).query_synthesis_messages(text), n=1, sampling=sampling, seed=seed)


def synthesize_query(generator: Generator, text: str, sampling: Sampling, seed: int) -> SynthesizedQuery:
    """One sampled request for ``text``; check it with :func:`query_reasons`."""
    completion = generator.generate([synthesis_request(text, sampling, seed)])[0][0]
    return SynthesizedQuery(
        query=parse_synthesized(completion.text),
        raw_output=completion.text,
        model=generator.model_id,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
    )
