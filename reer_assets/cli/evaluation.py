"""`reer eval`: read benchmark files into normalised rows, and judge one response with the configured judge.

    reer eval load --format {longbench-write,writingbench,hellobench} FILE [--jsonl]
    reer eval judge --query TEXT --response FILE [--criteria FILE] [--mode rubric|quality|checklist] [--json]
    reer eval answer --model PATH|ID --benchmark FILE --format F [--backend hf|vllm|openai] [--base-url URL] --json
    reer eval export-scores --format writingbench --out DIR [--judgments judgments.parquet] [--json]

``load`` prints one row per item (``--jsonl``; the summary goes to stderr) or just the summary, and exits 0
even when lines were rejected (each rejected row says why). ``judge`` needs a judge (``REER_JUDGE_*``,
docs/evaluation.md); without one it exits 2 with a message naming those settings. It exits 0 when every
judgment succeeded and 3 when one ended ``judge_failed`` (the output says why). ``answer`` lets a checkpoint
(a folder, or a checkpoint id of the lineage table ``checkpoints``) answer every accepted item of a benchmark
file through the answering backend (``workloads/answering.py``, the code ``benchmark_scores`` runs).

Registered by :func:`register` (``reer_assets/cli/main.py``); heavy imports stay inside the commands so
``reer --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from reer_assets.cli.common import err

FORMATS = ("longbench-write", "writingbench", "hellobench")  # = core.evaluation.benchmarks.BENCHMARKS


def cmd_eval_load(args: argparse.Namespace) -> int:
    from reer_assets.core.evaluation.benchmarks import load_benchmark, summary

    rows = load_benchmark(args.format, args.file)
    if args.jsonl:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False), flush=True)
        err(json.dumps(summary(rows), ensure_ascii=False))
    else:
        print(json.dumps(summary(rows), ensure_ascii=False, indent=2))
    return 0


def _criteria(path: str, mode: str) -> list[Any]:
    """A criteria file: a JSON list (of criteria, or of checklist questions), or an item holding one under
    ``checklist``, ``criteria`` or ``checklists`` (a WritingBench or HelloBench line)."""
    from reer_assets.core.evaluation.judge import Criterion

    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from exc
    if isinstance(raw, dict):
        raw = next((raw[k] for k in ("checklist", "criteria", "checklists") if k in raw), None)
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{path}: expected a non-empty JSON list of criteria (or an item with a 'checklist')")
    if mode == "checklist":
        return [c if isinstance(c, str) else Criterion.from_dict(c) for c in raw]
    return [Criterion.from_dict(c) for c in raw]


def cmd_eval_judge(args: argparse.Namespace) -> int:
    from reer_assets.core.evaluation.judge import (
        JudgeSampling,
        checklist_task,
        quality_task,
        rubric_tasks,
        token_totals,
    )

    mode = args.mode or ("rubric" if args.criteria else "quality")
    if mode in ("rubric", "checklist") and not args.criteria:
        raise ValueError(f"--mode {mode} needs --criteria FILE")
    response = Path(args.response).read_text(encoding="utf-8")
    criteria = _criteria(args.criteria, mode) if args.criteria else []
    if mode == "rubric":
        tasks = rubric_tasks(args.item_id, args.query, response, criteria)
    elif mode == "checklist":
        tasks = [checklist_task(args.item_id, args.query, response, criteria)]
    else:
        tasks = [quality_task(args.item_id, args.query, response)]

    from reer_assets.backends.judge import load_judge

    judge = load_judge(cache=args.cache, reason_max_chars=args.reason_max_chars,
                       sampling=JudgeSampling(args.temperature, args.top_p, args.max_tokens, args.seed))
    judgments = judge.judge(tasks)
    ok = all(j.status == "ok" for j in judgments)
    tokens = token_totals(judgments, by=None)["all"]
    out = {
        "status": "ok" if ok else "judge_failed",
        "mode": mode,
        "scores": [s for j in judgments for s in j.scores],
        "failures": [{"criterion": j.subject, "reason": j.failure, "attempts": j.attempts, "raw_output": j.raw_output}
                     for j in judgments if j.status != "ok"],
        "judge_model": judge.judge_model,
        "prompt_version": judge.prompt_version,
        "sampling": judgments[0].sampling,
        "judged_at": max(j.judged_at for j in judgments),
        "judged_text": judgments[0].judged_text,
        "judge_calls": judge.calls,
        "cached": sum(1 for j in judgments if j.cached),
        "prompt_tokens": tokens["prompt_tokens"],
        "completion_tokens": tokens["completion_tokens"],
    }
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
    else:
        for s in out["scores"]:
            print(f"{s['criterion']}: {s['score']}  {s['reason']}")
        for f in out["failures"]:
            print(f"{f['criterion']}: judge_failed after {f['attempts']} attempt(s): {f['reason']}")
        err(f"judge {out['judge_model']}, prompts {out['prompt_version']}, {judge.calls} call(s), "
            f"{out['cached']} cached")
    return 0 if ok else 3


def cmd_eval_answer(args: argparse.Namespace) -> int:
    from reer_assets.backends.config import BackendSpec
    from reer_assets.core.evaluation.benchmarks import summary
    from reer_assets.core.evaluation.metrics import check_format
    from reer_assets.workloads.answering import Answerer, answer_items, find_checkpoint, load_file

    path, checkpoint_id = find_checkpoint(args.model)
    if args.benchmark is None and args.format != "bundled":
        raise ValueError(f"--format {args.format} needs --benchmark FILE")
    if args.benchmark is None:
        from reer_assets import data

        benchmark = str(data.DATA_DIR / "benchmark" / "prompts.jsonl")
    elif not Path(args.benchmark).is_file():
        raise FileNotFoundError(f"no benchmark file {args.benchmark}")
    else:
        benchmark = args.benchmark
    rows = load_file(args.format, benchmark)
    accepted = [{**r, "benchmark": args.format, "format": args.format} for r in rows if r["status"] == "accepted"]
    accepted = accepted[: args.limit or None]
    generator = BackendSpec.from_env("generator")
    backend = args.backend or ("openai" if args.base_url else generator.backend)
    fields = {**(generator.describe() if backend == generator.backend else {}), "backend": backend}
    if args.max_in_flight:
        fields["max_in_flight"] = args.max_in_flight
    servers = {}
    if backend == "openai":
        url = args.base_url  # never the generator role's server: it serves the generator, not this model
        if not url:
            raise ValueError("--backend openai needs --base-url URL of a server of this model "
                             "(reer serve --checkpoint ID starts one and prints it)")
        servers["*"] = {"base_url": url, "model": args.served_model}
    spec = {"label": "model", "path": path, "model_id": checkpoint_id or path, "checkpoint_id": checkpoint_id}
    cfg = {"temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k, "max_tokens": args.max_tokens,
           "seed": args.seed}
    with Answerer(fields, servers, [spec]) as answerer:
        answered, tokens, how = answer_items(spec, accepted, cfg, err, answerer)
    out_rows = []
    for item, row in zip(accepted, answered):
        out_rows.append({
            "id": row["prompt_id"], "line": item.get("line"), "language": row["language"], "domain": row["domain"],
            "answer": check_format(row["output"]).answer, "output": row["output"], "format_ok": row["format_ok"],
            "output_length": row["output_length"], "required_length": row["required_length"],
            **({"length_score": row["length_score"]} if row["required_length"] else {}),
            **({"heldout_nll": row["heldout_nll"], "heldout_nll_own_thinking": row["heldout_nll_own_thinking"]}
               if item.get("reference") else {}),
        })
    doc = {
        "model": how["model"], "checkpoint_id": checkpoint_id, "path": path, "answering": how,
        "benchmark": benchmark, "format": args.format, "sampling": cfg, "loaded": summary(rows),
        "rows": out_rows,
        "rejected": [{"id": r["id"], "line": r["line"], "reasons": r["reasons"]} for r in rows if r["status"] != "accepted"],
        "tokens": tokens.get(args.format, {"prompt": 0, "completion": 0, "scored": 0}),
    }
    if args.json:
        print(json.dumps(doc, ensure_ascii=False))
    else:
        for r in out_rows:
            print(f"{r['id']}: format_ok={r['format_ok']} length={r['output_length']}"
                  + (f" S_l={r['length_score']:.1f}" if r.get("length_score") is not None else ""))
        err(f"{len(out_rows)} answers by {how['model']} in {how['seconds']}s; {len(doc['rejected'])} line(s) rejected")
    return 0


def cmd_eval_export_scores(args: argparse.Namespace) -> int:
    """benchmark_scores' judge scores in WritingBench's own score files, so its calculate_scores.py
    aggregates our run exactly as it aggregates theirs."""
    from reer_assets.lib.export import export_writingbench_scores

    written = export_writingbench_scores(Path(args.out), args.judgments)
    if args.json:
        print(json.dumps(written, ensure_ascii=False), flush=True)
    else:
        for f in written["files"]:
            left = f" ({len(f['incomplete'])} item(s) with a failed judgment left out)" if f["incomplete"] else ""
            print(f"{f['path']}: {f['items']} items{left}")
    return 0



def add_sampling_args(parser: argparse.ArgumentParser, max_tokens: int, temperature: float, top_p: float,
                      top_k: int | None = None) -> None:
    """--max-tokens, --temperature, --top-p (--top-k when it has a default) and --seed, with a command's defaults."""
    parser.add_argument("--max-tokens", type=int, default=max_tokens)
    parser.add_argument("--temperature", type=float, default=temperature)
    parser.add_argument("--top-p", type=float, default=top_p)
    if top_k is not None:
        parser.add_argument("--top-k", type=int, default=top_k)
    parser.add_argument("--seed", type=int, default=0)

def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval load``, ``eval judge``, ``eval answer`` and ``eval export-scores``."""
    ev = subparsers.add_parser("eval", help="benchmark files (LongBench-Write, WritingBench, HelloBench) and the "
                               "LLM judge").add_subparsers(dest="action", required=True)
    load = ev.add_parser("load", help="normalise a benchmark file: one row per item, bad lines rejected with reasons")
    load.add_argument("--format", required=True, choices=FORMATS)
    load.add_argument("file", help="the benchmark's JSON-lines file")
    load.add_argument("--jsonl", action="store_true", help="one JSON row per item on stdout (summary on stderr)")
    load.set_defaults(func=cmd_eval_load)

    judge = ev.add_parser("judge", help="judge one response with the configured judge (REER_JUDGE_*)")
    judge.add_argument("--query", required=True, help="the request the response answers")
    judge.add_argument("--response", required=True, help="file with the response (thinking before </think> is stripped)")
    judge.add_argument("--criteria", help="JSON file: a list of rubric criteria ({name, criteria_description, "
                       "\"1-2\" … \"9-10\"}) or a WritingBench item; for --mode checklist a list of questions")
    judge.add_argument("--mode", choices=["rubric", "quality", "checklist"],
                       help="default: rubric with --criteria, else quality (the six LongBench-Write dimensions)")
    judge.add_argument("--item-id", default="cli-item", help="id used in the cache key and the record")
    judge.add_argument("--cache", help="JSON-lines cache file: a repeated judgment is answered from it")
    add_sampling_args(judge, max_tokens=1024, temperature=0.0, top_p=1.0)
    judge.add_argument("--reason-max-chars", type=int, help="cap each reason's length in the output schema")
    judge.add_argument("--json", action="store_true", help="one JSON document on stdout")
    judge.set_defaults(func=cmd_eval_judge)

    answer = ev.add_parser("answer", help="a checkpoint answers a benchmark file through hf, the vLLM engine or a server")
    answer.add_argument("--model", required=True, help="a model folder (full or a peft LoRA adapter) or a checkpoint "
                        "id of the lineage table checkpoints")
    answer.add_argument("--benchmark", help="the benchmark's JSON-lines file (default with --format bundled: the "
                        "bundled prompts)")
    answer.add_argument("--format", required=True, choices=[*FORMATS, "bundled"])
    answer.add_argument("--backend", choices=["hf", "vllm", "openai"],
                        help="default: the generator role's backend (REER_GENERATOR_BACKEND; embedded answers as hf)")
    answer.add_argument("--base-url", help="openai: the server that serves this model (e.g. from reer serve --checkpoint)")
    answer.add_argument("--served-model", help="openai: the served model name (default: the server's first model)")
    answer.add_argument("--max-in-flight", type=int, help="requests in flight (vllm, openai; default "
                        "REER_GENERATOR_MAX_IN_FLIGHT or 8)")
    add_sampling_args(answer, max_tokens=512, temperature=0.7, top_p=0.9, top_k=40)
    answer.add_argument("--limit", type=int, help="only the first N accepted items")
    answer.add_argument("--json", action="store_true", help="one JSON document on stdout")
    answer.set_defaults(func=cmd_eval_answer)

    scores = ev.add_parser("export-scores", help="judge scores in a benchmark's own score layout (WritingBench: "
                           "<out>/<benchmark>/<model>.jsonl, read by its calculate_scores.py --score_dir)")
    scores.add_argument("--format", required=True, choices=["writingbench"])
    scores.add_argument("--out", required=True, help="folder to write")
    scores.add_argument("--judgments", help="a judgments.parquet (default: the last benchmark_scores run's)")
    scores.add_argument("--json", action="store_true", help="one JSON document on stdout")
    scores.set_defaults(func=cmd_eval_export_scores)
