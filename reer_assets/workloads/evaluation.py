"""Workload of the evaluation stage: every configured benchmark, per model, then the judge.

extras: models [{label, path, model_id, checkpoint_id}], benchmarks [{name, format, path?, limit?, weights?}],
outputs {results, judgments, summary}, work (the judge cache), config {max_tokens, temperature, top_p,
top_k, seed, prompts_per_domain?}.

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

from reer_assets.core.chat_format import THINK_OPEN, inference_messages
from reer_assets.core.evaluation import benchmarks as bench
from reer_assets.core.evaluation import judge as judging
from reer_assets.core.evaluation.metrics import check_format, length_score
from reer_assets.core.ids import stable_id
from reer_assets.core.language import length_units
from reer_assets.core.objective import build_score_request, score_of
from reer_assets.core.protocols import GenerationRequest, Sampling
from reer_assets.core.refinement import derive_seed
from reer_assets.core.schemas import BENCHMARK_RESULTS, JUDGE_SCORES
from reer_assets.core.segment import segment
from reer_assets.lib import storage
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


def domain_of(item: dict[str, Any]) -> str:
    meta = item.get("meta") or {}
    return str(meta.get("domain") or meta.get("domain1") or meta.get("category") or item["benchmark"])


def answer_items(spec: dict[str, Any], items: list[dict[str, Any]], cfg: dict[str, Any], log: Log) -> tuple[list, dict]:
    """One model's answers to every item, with the metrics that need no judge; and its token counts."""
    from reer_assets.backends.hf import HFGenerator, HFScorer, LoadedModel

    loaded = LoadedModel.load(spec["path"])
    generator, scorer = HFGenerator(loaded, spec["model_id"]), HFScorer(loaded, spec["model_id"])
    sampling = Sampling(cfg["temperature"], cfg["top_p"], cfg["top_k"], cfg["max_tokens"])
    rows, tokens = [], {}
    for item in items:
        request = GenerationRequest(inference_messages(item["prompt"]), prefill=THINK_OPEN, n=1, sampling=sampling,
                                    seed=derive_seed(cfg["seed"], item["id"], "bench"))
        completion = generator.generate([request])[0][0]
        output = THINK_OPEN + completion.text
        fmt = check_format(output)
        produced = length_units(fmt.answer, item["language"] or "en")
        nll = own = None
        used = tokens.setdefault(item["benchmark"], {"prompt": 0, "completion": 0, "scored": 0})
        used["prompt"] += completion.prompt_tokens
        used["completion"] += completion.completion_tokens
        if item.get("reference"):
            reference = segment(item["reference"])
            # no thinking, then the model's own (its text up to </think>, or all of it when unclosed)
            results = scorer.score([build_score_request(item["prompt"], "", reference),
                                    build_score_request(item["prompt"], fmt.thinking.removeprefix("\n"), reference)])
            nll, own = (score_of(r) for r in results)
            used["scored"] += sum(len(r.token_logprobs) for r in results)
        required = item.get("required_length")
        rows.append({
            "id": stable_id("bench", spec["model_id"], item["benchmark"], item["id"], cfg),
            "checkpoint_id": spec.get("checkpoint_id"), "model_label": spec["label"], "model": spec["model_id"],
            "benchmark": item["benchmark"], "prompt_id": str(item["id"]), "domain": domain_of(item),
            "language": item["language"], "required_length": required, "output_length": produced,
            "length_score": length_score(required, produced) if required else None, "format_ok": fmt.adherent,
            "heldout_nll": nll, "heldout_nll_own_thinking": own, "output": output,
        })
    log(f"{spec['label']}: {len(items)} items answered")
    return rows, tokens


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


def run(extras: Extras, log: Log) -> dict:
    quiet_libraries()
    cfg = extras["config"]
    started = time.perf_counter()
    items, loaded = load_items(extras["benchmarks"], cfg)
    rows, generation_tokens = [], {}
    for spec in extras["models"]:
        answered, tokens = answer_items(spec, items, cfg, log)
        rows += answered
        generation_tokens[spec["label"]] = tokens
    results = BENCHMARK_RESULTS.frame(rows)
    summary: dict[str, Any] = {"benchmarks": loaded, "tokens": {"generation": generation_tokens}}
    judged_rows = []
    judge = _judge(extras, summary, log)
    if judge is not None:
        judged_rows = _judge_all(judge, extras, items, rows, summary, log)
    judgments = JUDGE_SCORES.frame(judged_rows)
    for name, frame in (("results", results), ("judgments", judgments)):
        storage.write_parquet(frame, extras["outputs"][name])
    storage.write_json(extras["outputs"]["summary"], summary, indent=1)
    return {"rows": results.height, "judgments": judgments.height, "judge_calls": judge.calls if judge else 0,
            "seconds": round(time.perf_counter() - started, 1)}


def _judge(extras: Extras, summary: dict[str, Any], log: Log):
    from reer_assets.backends.judge import JudgeNotConfigured, load_judge

    try:
        judge = load_judge(cache=Path(extras["work"]) / "judge_cache.jsonl")
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
    for row in flat:
        row["id"] = stable_id("judge", row["model_label"], row["judgment_key"], row["criterion"])
    return flat


if __name__ == "__main__":
    pipes_main(run)
