"""Back-synthesis of a request from a text: one generator call, parsed, shared by the
``synthesize`` workload and ``reer synthesize-query`` so both write the same request."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from reer_assets.core.prompts import prompts_for
from reer_assets.core.protocols import GenerationRequest, Generator, Sampling
from reer_assets.core.query_qc import parse_synthesized


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
    """One sampled request for ``text``; check it with :func:`reer_assets.core.query_qc.query_reasons`."""
    completion = generator.generate([synthesis_request(text, sampling, seed)])[0][0]
    return SynthesizedQuery(
        query=parse_synthesized(completion.text),
        raw_output=completion.text,
        model=generator.model_id,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
    )
