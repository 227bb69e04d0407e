"""What batch mode costs in wall time against live calls, for the search's generation phases, on the
embedded generator (docs/scale.md, "Batch mode"). A benchmark, not a test.

    .venv/bin/python scripts/bench_batch_steps.py [--items 8] [--steps 2] [--profile test] [--json]

The same requests three ways, side by side in one run:

* **live, one item at a time**: the in-process vLLM engine answers each item's request in its own call,
  which is how the refinement workload drives a local model (``item_concurrency`` 1);
* **live, the whole phase at once**: the same engine given every item's request of the phase in one call
  (what many items in flight against a server approach);
* **batch**: the phase's requests as one batch file through vLLM's ``run-batch`` (``backends/batch.py``, a
  subprocess that starts its own engine), as ``REER_GENERATOR_BATCH=1`` sends them.

Phases: the initial rollouts (one request per item), then edit step 0, 1, ... of the search (one request per
item with ``n = num_expansion``), each step built from the live initial thinkings' segments: step *i* of
every item as one batch, then step *i + 1*. Nothing is scored and no edit is accepted (segment *i* is
rewritten in the original thinking), so every phase asks the same amount of generation whichever way it is
sent. The live engine is started once and its start is printed on its own line; every batch pays an engine
start of its own, which is the point. Batch records go to a throwaway lineage file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def items(count: int) -> list[dict]:
    """``count`` items from the English bundled pieces that come with a request (18 of them), shortest first;
    past 18 the pieces come round again as further rollouts (another id, so other seeds)."""
    from reer_assets import data

    pieces = sorted((p for p in data.corpus() if p.get("request_given") and p["language"] == "en"),
                    key=lambda p: len(p["text"]))
    return [{"id": p["id"] if k < len(pieces) else f"{p['id']}#rollout{k // len(pieces)}", "query": p["request"],
             "reference": p["text"]} for k, p in ((k, pieces[k % len(pieces)]) for k in range(count))]


def initial_requests(chosen: list[dict], cfg, seed: int) -> list:
    """Each item's initial-rollout request, as ReerSearch builds it (rollout 0)."""
    from reer_assets.core.refinement import SearchItem, initial_rollout_request

    return [initial_rollout_request(cfg, seed, SearchItem(i["id"], i["query"], i["reference"]), 0)[0] for i in chosen]


def edit_requests(chosen: list[dict], segments: list[list[str]], step: int, cfg, seed: int) -> list:
    """Edit step ``step`` of every item whose thinking has that many segments, as ReerSearch._step builds it
    (no earlier edit accepted: the segments before ``step`` are the original ones)."""
    from reer_assets.core.prompts import prompts_for
    from reer_assets.core.protocols import GenerationRequest
    from reer_assets.core.refinement import EDIT_BANNED_TAGS, RECOMPOSE_SEPARATOR, derive_seed, is_draft

    out = []
    for item, segs in zip(chosen, segments):
        if len(segs) <= step:
            continue
        prompts = prompts_for(item["query"])
        messages = prompts.segment_edit_messages(item["query"], item["reference"], before=segs[:step],
                                                 target=segs[step], after=segs[step + 1:],
                                                 is_draft=is_draft(segs, step), separator=RECOMPOSE_SEPARATOR)
        out.append(GenerationRequest(messages=messages, prefill=prompts.edit_prefill, n=cfg.num_expansion,
                                     sampling=cfg.sampling(cfg.edit_max_tokens, banned=EDIT_BANNED_TAGS),
                                     seed=derive_seed(seed, item["id"], 0, "edit", step)))
    return out


def tokens(results: list[list]) -> int:
    return sum(c.completion_tokens for completions in results for c in completions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2, help="edit steps to measure after the initial rollouts")
    parser.add_argument("--profile", default="test", help="the run profile whose search settings are used")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout instead of the table")
    args = parser.parse_args(argv)
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout is for the table
    scratch = Path(tempfile.mkdtemp(prefix="reer-bench-batch-"))
    os.environ["REER_LINEAGE_DB"] = str(scratch / "lineage.duckdb")  # batch records: a throwaway file
    os.environ.pop("REER_LINEAGE_MODE", None)

    from reer_assets.backends.batch import BatchGenerator, VLLMRunBatch, runner_for
    from reer_assets.backends.embedded import build_key, ensure_embedded_model
    from reer_assets.backends.spec import BackendSpec
    from reer_assets.backends.vllm_engine import EngineSettings, VLLMEngine, VLLMGenerator
    from reer_assets.core.refinement import SearchConfig
    from reer_assets.core.segment import segment
    from reer_assets.core.tags import cut_thinking
    from reer_assets.lib.profiles import profile

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    model = str(ensure_embedded_model(log=say))
    search = {k: v for k, v in profile(args.profile)["search"].items()}
    cfg = SearchConfig(**search)
    chosen = items(args.items)
    phases: list[dict] = []

    # --- live: one engine, started once -----------------------------------------------------------------
    started = time.perf_counter()
    engine = VLLMEngine(EngineSettings(model))
    engine_start_s = time.perf_counter() - started
    live = VLLMGenerator(engine, f"vllm:reer-embedded:{build_key()}")
    requests = {"initial rollouts": initial_requests(chosen, cfg, args.seed)}

    def run_live(name: str, batch: list) -> dict:
        t0 = time.perf_counter()
        one_by_one = [live.generate([r])[0] for r in batch]
        sequential_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        together = live.generate(batch)
        together_s = time.perf_counter() - t0
        say(f"{name}: live one at a time {sequential_s:.1f}s, all at once {together_s:.1f}s")
        return {"phase": name, "requests": len(batch), "completions": sum(r.n for r in batch),
                "live_sequential_s": round(sequential_s, 2), "live_sequential_tokens": tokens(one_by_one),
                "live_together_s": round(together_s, 2), "live_together_tokens": tokens(together),
                "results": together}

    phases.append(run_live("initial rollouts", requests["initial rollouts"]))
    segments = []
    for completions in phases[0].pop("results"):
        thinking, _ = cut_thinking(completions[0].text)
        segments.append([s.strip() for s in segment(thinking, cfg.min_segment_chars).segments])
    for step in range(args.steps):
        batch = edit_requests(chosen, segments, step, cfg, args.seed)
        if not batch:
            say(f"edit step {step}: no item's thinking has {step + 1} segments; stopping")
            break
        requests[f"edit step {step}"] = batch
        phases.append(run_live(f"edit step {step}", batch))
        phases[-1].pop("results")
    engine.close()

    # --- batch: one run-batch (one engine start) per phase --------------------------------------------------
    spec = BackendSpec(batch=True)
    for phase in phases:
        folder = scratch / phase["phase"].replace(" ", "-")
        transport = VLLMRunBatch(spec, "generator", folder)
        generator = BatchGenerator(runner_for(spec, "generator", phase["phase"], folder, say, transport=transport),
                                   transport.model_id)
        t0 = time.perf_counter()
        outcomes = generator.generate_outcomes(requests[phase["phase"]])
        phase["batch_s"] = round(time.perf_counter() - t0, 2)
        phase["batch_ok"] = sum(o.ok for o in outcomes)
        phase["batch_tokens"] = sum(c.completion_tokens for o in outcomes if o.ok for c in o.completions)
        say(f"{phase['phase']}: batch {phase['batch_s']:.1f}s")

    total = {key: round(sum(p[key] for p in phases), 2) for key in ("live_sequential_s", "live_together_s", "batch_s")}
    report = {"items": len(chosen), "profile": args.profile, "engine_start_s": round(engine_start_s, 2),
              "phases": phases, "total": total, "cpu_count": os.cpu_count()}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"embedded generator, profile {args.profile}, {len(chosen)} items; live engine start "
          f"{engine_start_s:.1f}s (once, not in the rows)")
    header = ("phase", "requests", "completions", "live 1-by-1 s", "live together s", "batch s", "batch/1-by-1",
              "tokens live/batch")
    print(" | ".join(header))
    for p in phases:
        print(" | ".join(str(v) for v in (
            p["phase"], p["requests"], p["completions"], p["live_sequential_s"], p["live_together_s"], p["batch_s"],
            f"{p['batch_s'] / p['live_sequential_s']:.1f}x", f"{p['live_together_tokens']}/{p['batch_tokens']}")))
    print(" | ".join(str(v) for v in ("all phases", "", "", total["live_sequential_s"], total["live_together_s"],
                                      total["batch_s"], f"{total['batch_s'] / total['live_sequential_s']:.1f}x", "")))
    return 0


if __name__ == "__main__":  # vLLM starts its engine core in a spawned process
    sys.exit(main())
