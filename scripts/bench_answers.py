"""Benchmark answers per minute and completion tokens/s: the vLLM engine with 8 and with all requests in
flight against in-process transformers one at a time, on the same checkpoint, items and sampling
(docs/performance.md, "Benchmark answers"). A benchmark, not a test.

    .venv/bin/python scripts/bench_answers.py [--items 16] [--max-tokens 256] [--model PATH] [--json]

Default checkpoint: the embedded generator; items: the first N bundled benchmark prompts; sampling:
temperature 0.7, top-p 0.9, top-k 40, seeded per item. Each configuration answers through
``workloads/answering.py`` (what ``benchmark_scores`` runs); model loading and engine start are not
timed, only the answering call. Answers differ in length between backends (hf and vLLM sample
differently), so completion tokens/s is the fair ratio; answers/minute is what a run feels.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def measure(backend: str, in_flight: int | None, model: str, items: list, cfg: dict) -> dict:
    from reer_assets.workloads.answering import Answerer, answer_items

    spec = {"label": backend, "path": model, "model_id": model, "checkpoint_id": None}
    fields = {"backend": backend, **({"max_in_flight": in_flight} if in_flight else {})}
    started = time.perf_counter()
    with Answerer(fields, models=[spec]) as answerer:
        answerer.open(spec)  # load or start first: only the answering is timed
        load_s = time.perf_counter() - started
        rows, _, how = answer_items(spec, items, cfg, lambda message: print(message, file=sys.stderr), answerer)
    return {"backend": backend, "in_flight": how["in_flight"], "answers": how["answers"], "seconds": how["seconds"],
            "completion_tokens": how["completion_tokens"], "answers_per_min": how["answers_per_min"],
            "completion_tokens_per_s": how["completion_tokens_per_s"], "load_s": round(load_s, 1),
            "format_ok": sum(r["format_ok"] for r in rows)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--model", help="a checkpoint folder (default: the embedded generator)")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout instead of the table")
    args = parser.parse_args(argv)
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout is for the table

    from reer_assets.workloads.evaluation import bundled_items

    if args.model:
        model = args.model
    else:
        from reer_assets.backends.embedded import ensure_embedded_model

        model = str(ensure_embedded_model(log=lambda message: print(message, file=sys.stderr)))
    items = [{**i, "format": "bundled", "reference": None} for i in bundled_items()][: args.items]
    cfg = {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "max_tokens": args.max_tokens, "seed": 0}
    runs = [measure("hf", None, model, items, cfg), measure("vllm", 8, model, items, cfg),
            measure("vllm", len(items), model, items, cfg)]
    hf = runs[0]
    for run in runs:
        run["ratio_answers_per_min"] = round(run["answers_per_min"] / hf["answers_per_min"], 2)
        run["ratio_tokens_per_s"] = round(run["completion_tokens_per_s"] / hf["completion_tokens_per_s"], 2)
    doc = {"model": model, "items": len(items), "sampling": cfg, "runs": runs}
    if args.json:
        print(json.dumps(doc))
        return 0
    print(f"{len(items)} bundled prompts, max_tokens {args.max_tokens}, {model}")
    print(f"{'backend':<8}{'in flight':>10}{'seconds':>9}{'tokens':>8}{'answers/min':>13}{'tokens/s':>10}"
          f"{'x answers/min':>15}{'x tokens/s':>12}")
    for r in runs:
        print(f"{r['backend']:<8}{r['in_flight']:>10}{r['seconds']:>9.1f}{r['completion_tokens']:>8}"
              f"{r['answers_per_min']:>13.1f}{r['completion_tokens_per_s']:>10.1f}{r['ratio_answers_per_min']:>15.2f}"
              f"{r['ratio_tokens_per_s']:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
