"""hf, the in-process vLLM engine and a real vLLM server agree on the REER objective.

All three tokenize through ``backends.scored_span`` and score the same token span; the
clipped objective must agree within 1e-3 (measured: about 1e-5) in English and Chinese.
"""

from __future__ import annotations

import pytest

from reer_assets import data
from reer_assets.core.objective import build_score_request, score_of
from reer_assets.core.prompts import prompts_for
from reer_assets.core.protocols import GenerationRequest, Sampling
from reer_assets.core.refinement import INITIAL_BANNED_TAGS, THINK_PREFILL
from reer_assets.core.segment import segment

pytestmark = [pytest.mark.model, pytest.mark.vllm, pytest.mark.slow]


def _contexts():
    """Score requests as the search builds them, for two English and two Chinese items."""
    thinking = {row["piece_id"]: row for row in data.initial_thinking_examples()}
    requests = []
    for language in ("en", "zh"):
        pieces = [p for p in data.corpus() if p["language"] == language and p["id"] in thinking][:2]
        assert len(pieces) == 2, language
        for piece in pieces:
            z = thinking[piece["id"]]["thinking"]
            requests.append(build_score_request(piece["request"], z, segment(piece["text"])))
            # a second candidate with one segment swapped, as a search step scores it
            parts = segment(z).segments
            swapped = "\n\n".join(parts[:-1] + ["I will keep it short and end on the image."])
            requests.append(build_score_request(piece["request"], swapped, segment(piece["text"])))
    return requests


@pytest.fixture(scope="module")
def scorers(embedded_scorer, vllm_engine, vllm_server, embedded_path):
    from reer_assets.backends.config import BackendSpec
    from reer_assets.backends.openai_compat import OpenAIClient, OpenAIScorer
    from reer_assets.backends.vllm_engine import VLLMScorer

    client = OpenAIClient(BackendSpec(backend="openai", base_url=vllm_server.base_url, tokenizer=str(embedded_path)))
    return {"hf": embedded_scorer, "vllm": VLLMScorer(vllm_engine, "vllm"), "openai": OpenAIScorer(client, "openai")}


def test_objective_agrees_across_backends(scorers):
    requests = _contexts()
    results = {name: scorer.score(requests) for name, scorer in scorers.items()}
    for k, request in enumerate(requests):
        hf = results["hf"][k]
        assert len(hf.token_logprobs) > 20
        for name in ("vllm", "openai"):
            other = results[name][k]
            assert other.context_tokens == hf.context_tokens, (name, k)
            assert len(other.token_logprobs) == len(hf.token_logprobs), (name, k)
            assert abs(score_of(other) - score_of(hf)) < 1e-3, (name, k, score_of(other), score_of(hf))
            assert max(abs(a - b) for a, b in zip(other.token_logprobs, hf.token_logprobs)) < 1e-3, (name, k)
    # the swapped candidate is a different context: the scores must differ, or the test proves nothing
    assert score_of(results["hf"][0]) != score_of(results["hf"][1])


def test_openai_scorer_counts_prompt_tokens(scorers):
    client = scorers["openai"].client
    before = client.usage.prompt_tokens
    scorers["openai"].score(_contexts()[:2])
    assert client.usage.prompt_tokens > before


def _thinking_request(n: int = 2) -> GenerationRequest:
    piece = data.corpus("essays")[0]
    prompts = prompts_for(piece["request"])
    return GenerationRequest(prompts.initial_thinking_messages(piece["request"], piece["text"]), THINK_PREFILL, n,
                             Sampling(0.8, 0.85, 40, 48, banned=INITIAL_BANNED_TAGS), seed=11)


def test_vllm_generator_samples_n_reproducibly_without_banned_tags(vllm_engine):
    from reer_assets.backends.vllm_engine import VLLMGenerator

    generator = VLLMGenerator(vllm_engine, "vllm")
    first = generator.generate([_thinking_request(), _thinking_request(1)])
    again = generator.generate([_thinking_request(), _thinking_request(1)])
    assert [len(c) for c in first] == [2, 1]
    assert [c.text for c in first[0]] == [c.text for c in again[0]]
    for completion in first[0] + first[1]:
        assert 0 < completion.completion_tokens <= 48 and completion.prompt_tokens > 100
        assert not any(tag in completion.text for tag in INITIAL_BANNED_TAGS)


def test_openai_generator_continues_the_prefill(vllm_server, embedded_path):
    from reer_assets.backends.config import BackendSpec
    from reer_assets.backends.openai_compat import OpenAIClient, OpenAIGenerator

    for mode in ("chat", "completions"):
        client = OpenAIClient(BackendSpec(backend="openai", base_url=vllm_server.base_url, prefill_mode=mode, tokenizer=str(embedded_path)))
        completions = OpenAIGenerator(client, "openai").generate([_thinking_request()])[0]
        assert len(completions) == 2, mode
        for completion in completions:
            assert completion.text and not completion.text.startswith("<think>"), (mode, completion.text[:40])
        assert client.usage.completion_tokens == sum(c.completion_tokens for c in completions) > 0  # equal to the sum; > 0 so the check is not vacuous
        assert client.usage.prompt_tokens > 100


def test_same_seed_same_trajectory_with_every_scorer(scorers, embedded_loaded, bundled_item):
    """The search's choices depend only on score order, so every scorer variant picks the same path."""
    from reer_assets.backends.hf import HFScorer
    from reer_assets.core.refinement import ReerSearch, SearchConfig
    from tests.unit.test_search import ScriptedGenerator, _thinking

    edits = ["<analyze>\nVague.\n</analyze>\n<refine>\nI open on the lighthouse keeper's logbook and its empty pages.\n</refine>",
             "<analyze>\nOff.\n</analyze>\n<refine>\nThe reader is a child at bedtime; I keep every sentence short.\n</refine>",
             "<analyze>\nWeak.\n</analyze>\n<refine>\nI will end with the lamp going out and the ships still safe.\n</refine>"]
    variants = {**scorers, "hf-naive": HFScorer(embedded_loaded, mode="naive"), "hf-span": HFScorer(embedded_loaded, mode="span")}
    config = SearchConfig(max_step=3, num_expansion=3, stop_thresh=0.0)
    traces = {name: ReerSearch(ScriptedGenerator(_thinking(4), edits), scorer, config, seed=5).run(bundled_item)
              for name, scorer in variants.items()}
    reference = traces["hf"]
    assert reference.status == "ok" and len(reference.steps) == 3
    for name, trace in traces.items():
        assert [s.choice for s in trace.steps] == [s.choice for s in reference.steps], name
        assert trace.final_thinking == reference.final_thinking, name
        assert abs(trace.final_score - reference.final_score) < 1e-3, name


def test_the_scoring_bench_row_d_is_the_session_engine(vllm_engine):
    """`reer bench scoring`'s row (d), the in-process vLLM engine, timed and checked beside the hf modes (the
    bench's own test in make check runs it with --no-vllm; here the session engine stands in for the one it
    would start)."""
    from reer_assets.backends.vllm_engine import VLLMScorer
    from reer_assets.perf.scoring import TOLERANCE, run_scoring_bench

    lines: list[str] = []
    report = run_scoring_bench(n_items=2, n_candidates=2, repeats=1, out=lines.append,
                               extra_scorers={"in-process vLLM engine": VLLMScorer(vllm_engine, "vllm")})
    row = report["variants"]["in-process vLLM engine"]
    assert report["agree"] and row.max_abs_diff <= TOLERANCE, row
    # timed like the others (one pass per repeat) on the same tokens as row (a), which are some (> 0: an empty bench
    # would agree trivially); the times themselves vary with the machine
    assert len(row.seconds) == 1 and row.sequence_tokens == report["variants"]["naive"].sequence_tokens > 0
    assert sum(line.startswith("(d) in-process vLLM engine") for line in lines) == 1, lines
