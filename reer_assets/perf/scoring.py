"""Scoring throughput of the hf scorer's modes, side by side in one process (issue 7).

The search scores every step's candidates together, and they share a long token prefix
(chat template + query + the accepted segments before the edited one). This benchmark
builds such steps from bundled items and times

  (a) ``naive``:  full-vocabulary logits over every position, one request at a time;
  (b) ``span``:   decoder over the whole sequence, vocabulary projection only where a
                  scored token is predicted;
  (c) ``prefix``: (b) plus the shared prefix run once and its KV cache reused
                  (and (c1): the same with the suffixes run one at a time);

plus any scorer passed in ``extra_scorers`` (e.g. the in-process vLLM engine). Variants
are interleaved, in a rotating order, so machine noise hits them alike. tokens/s counts
the scored texts' full token counts, so the modes compare like for like; "forwarded"
counts the token positions the decoder actually ran.

Run: ``python -m reer_assets.perf.scoring`` (the last line is ``scoring_speedup=<c÷a>``).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from reer_assets import data
from reer_assets.core.language import prompt_language
from reer_assets.core.objective import build_score_request
from reer_assets.core.protocols import Scorer, ScoreRequest
from reer_assets.core.refinement import recompose
from reer_assets.core.segment import segment

VARIANTS = {
    "naive": "(a) naive: full logits, 1 at a time",
    "span": "(b) span-only logits, batched",
    "prefix": "(c) span-only + shared-prefix KV",
    "prefix-1": "(c1) as (c), suffixes 1 at a time",
}
TOLERANCE = 1e-4
# the targets for (c) against (a)
TARGET_FORWARDED_RATIO = 0.82
TARGET_SPEEDUP = 1.3
TARGET_LOGITS_MEMORY_RATIO = 3.0

_CUES = {
    "en": ("Wait, let me make this more concrete for the reader.", "Hmm, maybe I should put this differently."),
    "zh": ("等等，我得把这一点写得更具体一些。", "嗯，也许换一种说法更好。"),
}
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s*")


@dataclass
class BenchCase:
    """One search step: ``len(requests)`` candidate rewrites of one segment of one item's thinking."""

    item_id: str
    language: str
    edited_segment: int
    segments: int
    requests: list[ScoreRequest]


@dataclass
class VariantResult:
    name: str
    label: str
    seconds: list[float] = field(default_factory=list)
    sequence_tokens: int = 0  # per pass
    forwarded_tokens: int | None = None  # per pass
    padding_tokens: int | None = None  # per pass
    max_logits_rows: int | None = None
    max_abs_diff: float = 0.0

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds)

    @property
    def tokens_per_second(self) -> float:
        return self.sequence_tokens / self.median_seconds

    @property
    def forwarded_per_second(self) -> float | None:
        return None if self.forwarded_tokens is None else self.forwarded_tokens / self.median_seconds


def candidate_rewrites(text: str, language: str, n: int) -> list[str]:
    """``n`` deterministic rewrites of a segment, standing in for the generator's candidates.

    They differ from the original in different places (end, start, middle), as real
    rewrites do, so the requests share exactly the prefix before the segment.
    """
    sentences = [s for s in _SENTENCE_END.split(text) if s]
    joiner = "" if language == "zh" else " "
    cue_a, cue_b = _CUES[language]
    swapped = sentences[1:2] + sentences[:1] + sentences[2:] if len(sentences) > 1 else sentences
    variants = [
        text + joiner + cue_a,
        joiner.join(sentences[:-1]) if len(sentences) > 1 else text + joiner + cue_b,
        cue_b + joiner + text,
        joiner.join(swapped) + joiner + cue_a,
    ]
    while len(variants) < n:
        variants.append(variants[len(variants) % 4] + joiner + cue_b * (len(variants) // 4))
    return variants[:n]


def build_cases(n_items: int = 6, n_candidates: int = 4) -> list[BenchCase]:
    """Bundled items, one per domain in turn, every third one Chinese.

    The edited segment runs evenly from the first to the last over the items, as the
    search's steps visit every segment once; where it sits sets how long the shared
    prefix is (candidates for the first segment share only the template and the query).
    """
    pieces = data.pieces_by_id()
    examples = data.initial_thinking_examples()
    domains = data.domains()
    used: set[str] = set()
    cases = []
    for k in range(n_items):
        language = "zh" if k % 3 == 2 else "en"
        domain = domains[k % len(domains)]
        example = next(
            e for e in examples
            if e["id"] not in used and pieces[e["piece_id"]]["domain"] == domain
            and prompt_language(e["query"]) == language
        )
        used.add(example["id"])
        thinking = segment(example["thinking"])
        reference = segment(pieces[example["piece_id"]]["text"])
        edited = round(k * (len(thinking) - 1) / max(n_items - 1, 1))
        requests = [
            build_score_request(example["query"],
                                recompose([p.strip() for p in thinking.segments[:edited]] + [rewrite]
                                          + [p.strip() for p in thinking.segments[edited + 1 :]]),
                                reference)
            for rewrite in candidate_rewrites(thinking.segments[edited], language, n_candidates)
        ]
        cases.append(BenchCase(example["id"], language, edited, len(thinking), requests))
    return cases


def matmul_flops(size: int = 1024, repeats: int = 10) -> float:
    """This machine's float32 matmul rate (FLOP/s), best of ``repeats``: the ceiling to compare against."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def _max_abs_diff(a: list[list[float]], b: list[list[float]]) -> float:
    if [len(x) for x in a] != [len(y) for y in b]:
        return float("inf")
    return max((abs(x - y) for xs, ys in zip(a, b) for x, y in zip(xs, ys)), default=0.0)


def _score_all(scorer: Scorer, cases: list[BenchCase]) -> list[list[float]]:
    return [r.token_logprobs for case in cases for r in scorer.score(case.requests)]


def _profile(scorers: dict[str, Any], cases: list[BenchCase], out: Callable[[str], None]) -> None:
    from torch.profiler import ProfilerActivity, profile

    for name, scorer in scorers.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            _score_all(scorer, cases)
        out(f"\nprofile of {name} (one pass):")
        out(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def run_scoring_bench(
    model_path: str | Path | None = None,
    n_items: int = 6,
    n_candidates: int = 4,
    repeats: int = 5,
    device: str = "cpu",
    suffix_batch: int | None = None,
    extra_scorers: dict[str, Scorer] | None = None,
    profile: bool = False,
    out: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure (a), (b), (c) and any ``extra_scorers``; print a table; return the numbers.

    ``extra_scorers`` maps a row name to any object with ``score(requests)`` (e.g. the
    vLLM engine scorer); it is timed and checked like the others.
    """
    from reer_assets.backends.embedded import ensure_embedded_model
    from reer_assets.backends.hf import HFScorer, LoadedModel

    loaded = LoadedModel.load(model_path or ensure_embedded_model(), device=device)
    cases = build_cases(n_items, n_candidates)
    scorers: dict[str, Any] = {
        "naive": HFScorer(loaded, mode="naive"),
        "span": HFScorer(loaded, mode="span"),
        "prefix": HFScorer(loaded, mode="prefix", suffix_batch=suffix_batch),
        "prefix-1": HFScorer(loaded, mode="prefix", suffix_batch=1),
    }
    for name, scorer in (extra_scorers or {}).items():
        if name in scorers:
            raise ValueError(f"extra scorer name {name!r} is taken by a built-in variant")
        scorers[name] = scorer
    tokenizer_scorer = scorers["naive"]
    sequence_tokens = sum(len(tokenizer_scorer.tokenize(r)[0]) for case in cases for r in case.requests)
    results = {name: VariantResult(name, VARIANTS.get(name, f"(d) {name}"), sequence_tokens=sequence_tokens)
               for name in scorers}

    peak_before = matmul_flops()
    # warm-up pass, which is also the agreement check
    reference = _score_all(scorers["naive"], cases)
    for name, scorer in scorers.items():
        results[name].max_abs_diff = _max_abs_diff(_score_all(scorer, cases), reference)
    start_stats = {name: _stats_tuple(s) for name, s in scorers.items()}

    names = list(scorers)
    for rep in range(repeats):
        turn = rep % len(names)
        for name in names[turn:] + names[:turn]:
            start = time.perf_counter()
            _score_all(scorers[name], cases)
            results[name].seconds.append(time.perf_counter() - start)
    for name, scorer in scorers.items():
        after = _stats_tuple(scorer)
        if after is not None and start_stats[name] is not None:
            forwarded, padding = (after[i] - start_stats[name][i] for i in (0, 1))
            results[name].forwarded_tokens = forwarded // repeats
            results[name].padding_tokens = padding // repeats
            results[name].max_logits_rows = after[2]

    parameters = loaded.model.num_parameters()
    vocab = loaded.model.get_output_embeddings().weight.shape[0]
    peak = max(peak_before, matmul_flops())  # best of before and after: other load only lowers it
    report = _report(results, cases, scorers["naive"], parameters, vocab, peak, repeats, out)
    if profile:
        _profile({n: scorers[n] for n in ("naive", "span", "prefix")}, cases, out)
    return report


def _stats_tuple(scorer: Any) -> tuple[int, int, int] | None:
    stats = getattr(scorer, "stats", None)
    if stats is None:
        return None
    return stats.forwarded_tokens, stats.padding_tokens, stats.max_logits_rows


def _report(
    results: dict[str, VariantResult],
    cases: list[BenchCase],
    tokenizer_scorer: Any,
    parameters: int,
    vocab: int,
    peak_flops: float,
    repeats: int,
    out: Callable[[str], None],
) -> dict[str, Any]:
    from reer_assets.backends.hf import shared_prefix_length

    requests = sum(len(c.requests) for c in cases)
    out(f"scoring bench: {len(cases)} items × {len(cases[0].requests)} candidates = {requests} requests, "
        f"{results['naive'].sequence_tokens:,} tokens per pass; "
        f"{parameters:,} parameters, vocab {vocab:,}; torch threads {torch.get_num_threads()}; "
        f"median of {repeats} interleaved passes after a warm-up")
    out("items (edited segment; shared-prefix tokens / tokens per request; forwarded share with the prefix shared):")
    for c in cases:
        encoded = [tokenizer_scorer.tokenize(r) for r in c.requests]
        shared = shared_prefix_length(encoded)
        total = sum(len(ids) for ids, _ in encoded)
        out(f"  {c.item_id:<30} {c.language}  segment {c.edited_segment + 1}/{c.segments}  "
            f"{shared}/{total // len(encoded)}  {(total - shared * (len(encoded) - 1)) / total:.2f}")
    out(f"matmul rate (float32 1024², best of 10 before and 10 after): {peak_flops / 1e9:.1f} GFLOP/s")
    header = (f"{'variant':<38} {'pass s':>7} {'tokens/s':>9} {'forwarded':>9} {'fwd/s':>8} "
              f"{'padding':>7} {'logits MiB':>10} {'GFLOP/s':>8} {'% mm':>5} {'max|Δ|':>8}")
    out(header)
    out("-" * len(header))
    for r in results.values():
        fwd_s = r.forwarded_per_second
        logits_mib = None if r.max_logits_rows is None else r.max_logits_rows * vocab * 4 / 2**20
        flops = None if fwd_s is None else 2 * parameters * fwd_s
        out(f"{r.label:<38} {r.median_seconds:>7.2f} {r.tokens_per_second:>9,.0f} "
            f"{_fmt(r.forwarded_tokens, '{:,}'):>9} {_fmt(fwd_s, '{:,.0f}'):>8} {_fmt(r.padding_tokens, '{:,}'):>7} "
            f"{_fmt(logits_mib, '{:.2f}'):>10} {_fmt(None if flops is None else flops / 1e9, '{:.2f}'):>8} "
            f"{_fmt(None if flops is None else 100 * flops / peak_flops, '{:.1f}'):>5} {r.max_abs_diff:>8.1e}")
    a, c = results["naive"], results["prefix"]
    speedup = c.tokens_per_second / a.tokens_per_second
    forwarded_ratio = c.forwarded_tokens / a.forwarded_tokens  # type: ignore[operator]
    memory_ratio = a.max_logits_rows / c.max_logits_rows  # type: ignore[operator]
    max_diff = max(r.max_abs_diff for r in results.values())
    agree = max_diff <= TOLERANCE
    out("")
    out(f"logits memory = rows of the largest logits tensor × vocab × 4 bytes: "
        f"(a) {a.max_logits_rows} rows, (c) {c.max_logits_rows} rows")
    out(f"(c) vs (a): forwarded {forwarded_ratio:.2f}× (target ≤ {TARGET_FORWARDED_RATIO}) "
        f"{'met' if forwarded_ratio <= TARGET_FORWARDED_RATIO else 'MISSED'}; "
        f"tokens/s {speedup:.2f}× (target ≥ {TARGET_SPEEDUP}) {'met' if speedup >= TARGET_SPEEDUP else 'MISSED'}; "
        f"logits memory {memory_ratio:.1f}× less (target ≥ {TARGET_LOGITS_MEMORY_RATIO}) "
        f"{'met' if memory_ratio >= TARGET_LOGITS_MEMORY_RATIO else 'MISSED'}")
    out(f"(b) vs (a): tokens/s {results['span'].tokens_per_second / a.tokens_per_second:.2f}×; "
        f"(c) vs (b): tokens/s {c.tokens_per_second / results['span'].tokens_per_second:.2f}×")
    out(f"scores agree: max |Δ log-prob| vs (a) = {max_diff:.2e} (tolerance {TOLERANCE:g}) "
        f"{'ok' if agree else 'DISAGREE'}")
    return {
        "speedup": speedup,
        "forwarded_ratio": forwarded_ratio,
        "logits_memory_ratio": memory_ratio,
        "max_abs_diff": max_diff,
        "agree": agree,
        "parameters": parameters,
        "matmul_flops": peak_flops,
        "variants": {n: r for n, r in results.items()},
    }


def _fmt(value: float | int | None, pattern: str) -> str:
    return "n/a" if value is None else pattern.format(value)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # keep the report readable
    parser = argparse.ArgumentParser(prog="reer bench scoring", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model path (default: the embedded model)")
    parser.add_argument("--items", type=int, default=6)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--suffix-batch", type=int, default=None,
                        help="suffixes per decoder pass in (c) (default: the scorer's batch size)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="also print a torch.profiler table per variant")
    parser.add_argument("--no-vllm", action="store_true", help="skip row (d), the in-process vLLM engine")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    extra, engine = {}, None
    if not args.no_vllm:
        from reer_assets.backends.embedded import ensure_embedded_model
        from reer_assets.backends.vllm_engine import EngineSettings, VLLMEngine, VLLMScorer

        engine = VLLMEngine(EngineSettings(args.model or str(ensure_embedded_model())))
        extra["in-process vLLM engine"] = VLLMScorer(engine, "vllm")
    try:
        report = run_scoring_bench(args.model, args.items, args.candidates, args.repeats, args.device,
                                   args.suffix_batch, profile=args.profile, extra_scorers=extra)
    finally:
        if engine is not None:
            engine.close()
    print(f"scoring_speedup={report['speedup']:.2f}")
    return 0 if report["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
