"""Workload of the evaluation stage: every configured benchmark, per model, then the judge.

extras: models [{label, path, model_id, checkpoint_id}], benchmarks [{name, format, path?, limit?, weights?}],
outputs {results, judgments, summary}, work (the judge cache), config {max_tokens, temperature, top_p,
top_k, seed, prompts_per_domain?}, answering? (BackendSpec fields: the generator role's backend with the
run's overrides; default hf), servers? ({label | checkpoint id | path | "*": {base_url, model}} for openai).

Answers go through :mod:`reer_assets.workloads.answering` (hf, the vLLM engine or a server, many requests
in flight); each model is loaded once for all items.

Per answer, without a judge: the LongBench-Write length score S_l (where the item asks for a length),
format adherence (one closed, clean think block and an answer) and, for items with a held-out
reference (the bundled prompts), the model's clipped NLL of it given no thinking and given its own
generated thinking (the REER objective in the one inference format). With a judge (``REER_JUDGE_*``):
WritingBench rubric scores, LongBench-Write quality S_q (and the bundled prompts' quality), HelloBench
checklist scores, and base-vs-fine-tuned pairwise verdicts in both orders; each benchmark aggregated
its own way. Without a judge nothing claims a judge score: the summary says why there is none.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from reer_assets.core.evaluation import benchmarks as bench
from reer_assets.core.evaluation import judge as judging
from reer_assets.core.ids import stable_id
from reer_assets.core.schemas import BENCHMARK_RESULTS, JUDGE_SCORES
from reer_assets.lib import prompt_sets, storage
from reer_assets.workloads.answering import Answerer, answer_items, domain_of  # noqa: F401 (re-exported)
from reer_assets.workloads.common import Extras, Log, pipes_main, quiet_libraries

BUNDLED = "bundled"


def bundled_items(prompts_per_domain: int | None = None, domains: list[str] | None = None) -> list[dict[str, Any]]:
    """The project's own benchmark prompts as normalised items (each with a held-out reference),
    optionally only those of ``domains``."""
    from reer_assets import data

    items, seen = [], Counter()
    for p in data.benchmark_prompts():
        if domains is not None and p["domain"] not in domains:
            continue
        seen[p["domain"]] += 1
        if prompts_per_domain and seen[p["domain"]] > prompts_per_domain:
            continue  # a quick run: the first N prompts of every domain
        items.append({"id": p["id"], "benchmark": BUNDLED, "language": p["language"], "prompt": p["prompt"],
                      "required_length": p["required_length"], "criteria": [], "status": "accepted",
                      "reference": p["reference"], "meta": {"domain": p["domain"]}})
    return items


def load_items(benchmarks: list[dict[str, Any]], cfg: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every accepted item of every configured benchmark, and what each file's loading accepted/rejected."""
    items, loaded = [], {}
    for spec in benchmarks:
        if spec["format"] == BUNDLED:
            rows = bundled_items(cfg.get("prompts_per_domain"))
        else:
            rows = bench.load_benchmark(spec["format"], spec["path"])
        loaded[spec["name"]] = {"format": spec["format"], **bench.summary(rows)}
        accepted = [r for r in rows if r["status"] == "accepted"][: spec.get("limit") or None]
        items += [{**r, "benchmark": spec["name"], "format": spec["format"]} for r in accepted]
    return items, loaded


def judge_tasks(item: dict[str, Any], output: str) -> list[judging.JudgeTask]:
    """The judgments a benchmark's own scoring asks for, for one answer."""
    fmt, name = item["format"], item["benchmark"]
    if fmt == "writingbench":
        return judging.rubric_tasks(str(item["id"]), item["prompt"], output, item["criteria"], name)
    if fmt == "hellobench":
        return [judging.checklist_task(str(item["id"]), item["prompt"], output, item["criteria"], name)]
    return [judging.quality_task(str(item["id"]), item["prompt"], output, name)]  # longbench-write, bundled


def aggregate(spec: dict[str, Any], items: list[dict[str, Any]], answers: dict[str, str],
              scores: list[dict[str, Any]]) -> dict[str, Any]:
    """One benchmark's own aggregation of one model's judge scores."""
    if spec["format"] == "writingbench":
        return bench.writingbench_summary(items, scores)
    if spec["format"] == "hellobench":
        weights = json.loads(Path(spec["weights"]).read_text()) if spec.get("weights") else None
        return bench.hellobench_summary(items, scores, weights)
    return bench.longbench_write_summary(items, answers, scores)  # S_l and S_q (bundled: the same measures)


@prompt_sets.applied  # the prompt set of the extras (REER_PROMPTS) is in force while it runs
def run(extras: Extras, log: Log) -> dict:
    quiet_libraries()
    cfg = extras["config"]
    started = time.perf_counter()
    items, loaded = load_items(extras["benchmarks"], cfg)
    rows, generation_tokens, answering = [], {}, {}
    with Answerer(extras.get("answering"), extras.get("servers"), extras["models"]) as answerer:
        for spec in extras["models"]:
            answered, generation_tokens[spec["label"]], answering[spec["label"]] = answer_items(
                spec, items, cfg, log, answerer)
            rows += answered
    results = BENCHMARK_RESULTS.frame(rows)
    summary: dict[str, Any] = {"benchmarks": loaded, "tokens": {"generation": generation_tokens},
                               "answering": answering}
    judged_rows = []
    judge = _judge(extras, summary, log)
    if judge is not None:
        judged_rows = _judge_all(judge, extras, items, rows, summary, log)
    judgments = JUDGE_SCORES.frame(judged_rows)
    for name, frame in (("results", results), ("judgments", judgments)):
        storage.write_parquet(frame, extras["outputs"][name])
    storage.write_json(extras["outputs"]["summary"], summary, indent=1)
    return {"rows": results.height, "judgments": judgments.height, "judge_calls": judge.calls if judge else 0,
            "answering": answering, "seconds": round(time.perf_counter() - started, 1)}


def _judge(extras: Extras, summary: dict[str, Any], log: Log):
    from reer_assets.backends.judge import JudgeNotConfigured, load_judge

    try:
        judge = load_judge(cache=Path(extras["work"]) / "judge_cache.jsonl", batch_dir=Path(extras["work"]) / "batches",
                           log=log)  # REER_JUDGE_BATCH=1: each round of judgments as one batch
    except JudgeNotConfigured as exc:
        summary["judge"] = {"configured": False, "why": str(exc)}
        log(f"no judge: {exc}")
        return None
    summary["judge"] = {"configured": True, "model": judge.judge_model, "prompt_version": judge.prompt_version,
                        "sampling": judge.sampling.__dict__}
    return judge


def _judge_all(judge, extras: Extras, items: list, rows: list, summary: dict, log: Log) -> list[dict]:
    """Judge every answer as its benchmark asks, then base against fine-tuned in both orders."""
    outputs = {(r["model_label"], r["benchmark"], r["prompt_id"]): r["output"] for r in rows}
    labels = [m["label"] for m in extras["models"]]
    flat, all_judgments = [], []
    summary["judged"] = {}
    for label in labels:
        tasks, owners = [], []
        for item in items:
            made = judge_tasks(item, outputs[(label, item["benchmark"], str(item["id"]))])
            tasks += made
            owners += [item["benchmark"]] * len(made)
        judgments = judge.judge(tasks)
        all_judgments += judgments
        scores = judging.score_rows(judgments)
        flat += [{**row, "model_label": label} for row in scores]
        for spec in extras["benchmarks"]:
            mine = [i for i in items if i["benchmark"] == spec["name"]]
            answers = {str(i["id"]): outputs[(label, spec["name"], str(i["id"]))] for i in mine}
            summary["judged"].setdefault(spec["name"], {})[label] = aggregate(
                spec, mine, answers, [s for s in scores if s["benchmark"] == spec["name"]])
        log(f"judged {label}: {len(judgments)} judgments, {sum(j.status != 'ok' for j in judgments)} failed")
    if len(labels) == 2:  # base vs fine-tuned (or variant vs variant): the second is response a
        b, a = labels
        summary["pairwise"] = {"a": a, "b": b}
        for spec in extras["benchmarks"]:
            mine = [i for i in items if i["benchmark"] == spec["name"]]
            pairs = judge.judge_pairs([(str(i["id"]), i["prompt"], outputs[(a, spec["name"], str(i["id"]))],
                                        outputs[(b, spec["name"], str(i["id"]))]) for i in mine], spec["name"])
            summary["pairwise"][spec["name"]] = judging.win_rate(pairs)
            for pair in pairs:
                all_judgments += [pair.ab, pair.ba]
                flat += [{**row, "model_label": f"{a}_vs_{b}", "pair_winner": pair.winner}
                         for row in judging.score_rows([pair.ab, pair.ba])]
    summary["tokens"]["judge"] = judging.token_totals(all_judgments)
    summary["judge_failed"] = sum(j.status != "ok" for j in all_judgments)
    if hasattr(judge.backend, "runner"):  # a batch judge: its submissions, adoptions and resubmissions
        summary["judge_batch"] = judge.backend.runner.stats.to_dict()
    for row in flat:
        row["id"] = stable_id("judge", row["model_label"], row["judgment_key"], row["criterion"])
    return flat


if __name__ == "__main__":
    pipes_main(run)
