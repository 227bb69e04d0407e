"""Workload of the experiments stage: fine-tune every ablation variant, or evaluate every ablation checkpoint.

extras, task ``train``: base_model (path), base_model_id, dataset (Parquet of ablation rows, ``messages``),
checkpoints [{id, variant, seed, out_dir}], recipe {name, overrides...}, budget {kind: steps | tokens,
max_steps, train_tokens}, domain, outputs {checkpoints}.

extras, task ``evaluate``: checkpoints (Parquet of ablation_checkpoints), domain, config {prompts_per_domain,
max_tokens, temperature, top_p, top_k}, outputs {results, judgments}, work (the judge cache), answering? and
servers? (as the evaluation workload: the backend every checkpoint answers through,
:mod:`reer_assets.workloads.answering`; LoRA checkpoints of one base share one vLLM engine).

"The same budget" (docs/experiments.md): every variant trains from the same base, on the same items, with
the same recipe and seed; under ``steps`` every checkpoint takes the same number of optimizer steps
(``max_steps``, or the recipe's epochs, which give the same steps because the variants share their
items); under ``tokens`` every checkpoint sees about ``train_tokens`` supervised (assistant) tokens, so a
variant with shorter rows (``no_thinking``) takes more steps. A checkpoint whose folder already holds its
``training.json`` is reused, so a re-run after a crash trains only what is missing.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

from reer_assets.core.ids import stable_id
from reer_assets.core.schemas import ABLATION_CHECKPOINTS, ABLATION_RESULTS, JUDGE_SCORES
from reer_assets.lib import prompt_sets, storage
from reer_assets.workloads.common import Extras, Log, pipes_main, quiet_libraries

BUDGETS = ("steps", "tokens")


def budget_steps(budget: dict[str, Any], rows: int, batch: int, tokens_per_row: float) -> int | None:
    """The optimizer steps of one checkpoint under ``budget``; None = the recipe's epochs (a steps budget
    without ``max_steps``). A step sees ``min(batch, rows)`` rows."""
    kind = budget.get("kind", "steps")
    if kind not in BUDGETS:
        raise ValueError(f"budget must be one of {BUDGETS}, not {kind!r}")
    if kind == "steps":
        return budget.get("max_steps")
    if not budget.get("train_tokens"):
        raise ValueError("a tokens budget needs train_tokens (supervised tokens per checkpoint)")
    per_step = max(1.0, min(batch, rows) * tokens_per_row)
    return max(1, math.ceil(budget["train_tokens"] / per_step))


def _messages(value: Any) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in value]


def train_variants(extras: Extras, log: Log) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from reer_assets.backends.training import encode_chat, train
    from reer_assets.core.training import recipe

    started = time.perf_counter()
    frame = storage.read_parquet(extras["dataset"]).sort("item_id")
    tokenizer = AutoTokenizer.from_pretrained(extras["base_model"])
    spec = dict(extras["recipe"])
    name = spec.pop("name")
    budget = extras["budget"]
    rows_of = {v: [_messages(m) for m in frame.filter(frame["variant"] == v)["messages"].to_list()]
               for v in sorted(set(frame["variant"].to_list()))}
    tokens_of = {v: [sum(1 for label in encode_chat(tokenizer, m)[1] if label != -100) for m in rows]
                 for v, rows in rows_of.items()}
    records, counts = [], {"trained": 0, "reused": 0, "skipped": 0}
    for ck in extras["checkpoints"]:
        rows, tokens = rows_of.get(ck["variant"], []), tokens_of.get(ck["variant"], [])
        base = {"id": ck["id"], "domain": extras.get("domain"), "variant": ck["variant"], "seed": ck["seed"],
                "path": ck["out_dir"], "base_model": extras["base_model_id"], "rows": len(rows)}
        if not rows:
            log(f"{ck['variant']} seed {ck['seed']}: no rows, nothing to train")
            records.append({**base, "status": "skipped_no_rows"})
            counts["skipped"] += 1
            continue
        per_row = statistics.fmean(tokens)
        probe = recipe(name, **spec)
        steps = budget_steps(budget, len(rows), probe.global_batch, per_row)
        chosen = recipe(name, **{**spec, "seed": ck["seed"], "max_steps": steps})
        out_dir = Path(ck["out_dir"])
        if (out_dir / "training.json").exists():
            report = json.loads((out_dir / "training.json").read_text())
            counts["reused"] += 1
            log(f"{ck['variant']} seed {ck['seed']}: checkpoint {ck['id']} already trained, reused")
        else:
            report = train(extras["base_model"], rows, out_dir, chosen, eval_fraction=0.0, log=log)
            counts["trained"] += 1
        records.append({**base, "status": "trained", "steps": report["steps"],
                        "trained_tokens": round(report["steps"] * min(chosen.global_batch, len(rows)) * per_row)
                        if steps is not None else round(chosen.epochs * sum(tokens)),
                        "assistant_tokens_per_row": round(per_row, 1), "train_loss": report["train_loss"],
                        "seconds": report["seconds"]})
        log(f"{ck['variant']} seed {ck['seed']}: {report['steps']} steps on {len(rows)} rows, "
            f"train loss {report['train_loss']:.4f}")
    storage.write_parquet(ABLATION_CHECKPOINTS.frame(records), extras["outputs"]["checkpoints"])
    return {**counts, "checkpoints": len(records), "seconds": round(time.perf_counter() - started, 1)}


def evaluate_checkpoints(extras: Extras, log: Log) -> dict[str, Any]:
    from reer_assets.core.evaluation import judge as judging
    from reer_assets.workloads.answering import Answerer, answer_items
    from reer_assets.workloads.evaluation import BUNDLED, _judge, bundled_items

    started = time.perf_counter()
    cfg = extras["config"]
    checkpoints = storage.read_parquet(extras["checkpoints"])
    checkpoints = checkpoints.filter(checkpoints["status"] == "trained").sort("variant", "seed")
    evaluated = list(checkpoints.iter_rows(named=True))
    if extras.get("base") and evaluated:  # the floor: the base model itself, with every seed's sampling
        evaluated += [{"id": f"{extras['base']['model_id']}#seed{seed}", "variant": "base", "seed": seed,
                       "path": extras["base"]["path"]} for seed in sorted({int(ck["seed"]) for ck in evaluated})]
    items = [{**i, "format": BUNDLED} for i in bundled_items(cfg.get("prompts_per_domain"), [extras["domain"]])]
    if not items:
        log(f"{extras['domain']}: no bundled held-out prompts for this domain; nothing to evaluate")
    summary: dict[str, Any] = {}
    judge = _judge(extras, summary, log) if items and len(evaluated) else None
    results, judged, tokens, answering = [], [], {"prompt": 0, "completion": 0, "scored": 0}, {}
    specs = [{"label": f"{ck['variant']}/seed{ck['seed']}", "path": ck["path"], "model_id": ck["id"],
              "checkpoint_id": ck["id"]} for ck in evaluated]
    answerer = Answerer(extras.get("answering"), extras.get("servers"), specs if items else [])
    with answerer:
        for ck, spec in zip(evaluated, specs):
            label = spec["label"]
            answered, used, answering[label] = answer_items(spec, items, {**cfg, "seed": int(ck["seed"])}, log, answerer)
            for kind, count in (used.get(BUNDLED) or {}).items():
                tokens[kind] += count
            judge_scores: list[float | None] = [None] * len(answered)
            if judge is not None:
                by_id = {str(i["id"]): i for i in items}
                judgments = judge.judge([judging.quality_task(r["prompt_id"], by_id[r["prompt_id"]]["prompt"], r["output"],
                                                              BUNDLED) for r in answered])
                for k, j in enumerate(judgments):
                    scores = [s["score"] for s in j.scores] if j.status == "ok" else []
                    judge_scores[k] = statistics.fmean(scores) if scores else None
                    for row in judging.score_rows([j]):
                        judged.append({**row, "model_label": f"ablation:{label}",
                                       "id": stable_id("judge", f"ablation:{label}", row["judgment_key"], row["criterion"])})
            for row, score in zip(answered, judge_scores):
                results.append({
                    "id": stable_id("ablres", ck["id"], row["prompt_id"], cfg), "domain": extras["domain"],
                    "variant": ck["variant"], "seed": ck["seed"], "checkpoint_id": ck["id"], "prompt_id": row["prompt_id"],
                    "language": row["language"], "required_length": row["required_length"],
                    "output_length": row["output_length"], "length_score": row["length_score"],
                    "format_ok": row["format_ok"], "heldout_nll": row["heldout_nll"],
                    "heldout_nll_own_thinking": row["heldout_nll_own_thinking"], "judge_score": score,
                    "output": row["output"],
                })
    storage.write_parquet(ABLATION_RESULTS.frame(results), extras["outputs"]["results"])
    storage.write_parquet(JUDGE_SCORES.frame(judged), extras["outputs"]["judgments"])
    return {"rows": len(results), "checkpoints": len(checkpoints), "floor": bool(extras.get("base")),
            "prompts": len(items), "judgments": len(judged),
            "judge": summary.get("judge", {"configured": False, "why": "nothing to judge"}), "tokens": tokens,
            "judge_calls": judge.calls if judge else 0, "answering": answering,
            "seconds": round(time.perf_counter() - started, 1)}


@prompt_sets.applied  # the prompt set of the extras (REER_PROMPTS) is in force while it runs
def run(extras: Extras, log: Log) -> dict:
    quiet_libraries()
    if extras.get("task") == "train":
        return train_variants(extras, log)
    if extras.get("task") == "evaluate":
        return evaluate_checkpoints(extras, log)
    raise ValueError(f"unknown experiments task {extras.get('task')!r}: train or evaluate")


if __name__ == "__main__":
    pipes_main(run)
