"""benchmark_scores: base vs fine-tuned model on the configured benchmarks, with a judge when one is set up."""


import json
from typing import Optional

import dagster as dg
import polars as pl

from reer_assets import settings as app_settings
from reer_assets.core.evaluation.benchmarks import benchmark_specs
from reer_assets.core.evaluation.judge import PROMPT_VERSION
from reer_assets.core.evaluation.metrics import summary_table
from reer_assets.core.ids import config_hash
from reer_assets.defs.resources import LineageResource, ModelBackendResource, WorkloadRunner
from reer_assets.defs.stage import run_stage
from reer_assets.defs.training.assets import pointer
from reer_assets.lib import prompt_sets, storage
from reer_assets.lib.metadata import md_table
from reer_assets.lib.run_config import AnsweringConfig, SamplingConfig, SeedConfig


class BenchmarkConfig(SamplingConfig, AnsweringConfig, SeedConfig):
    """Generation settings for the benchmarks; unset fields come from the profile's ``benchmark`` section.
    ``servers`` labels: base | finetuned | a checkpoint id."""

    section = "benchmark"
    # True/False overrides REER_JUDGE_BATCH for this run: each round of judgments as one batch (docs/scale.md)
    judge_batch: Optional[bool] = None

    def answering(self, generator: ModelBackendResource) -> tuple[dict, dict]:
        return answering_backend(generator, self.backend, self.max_in_flight), dict(self.servers or {})


def answering_backend(generator: ModelBackendResource, backend: Optional[str], max_in_flight: Optional[int]) -> dict:
    """The BackendSpec fields benchmark answers go through: the generator role's, with this run's overrides."""
    spec = generator.spec()
    return {**spec.describe(), "backend": backend or spec.backend, "max_in_flight": max_in_flight or spec.max_in_flight}



def judged_table(summary: dict) -> list[tuple]:
    """One row per benchmark and model: its own headline numbers (WritingBench overall, LongBench-Write
    S_l / S_q, HelloBench checklist score) with their intervals, and the pairwise win rate."""
    def fmt(interval):
        if not isinstance(interval, dict) or interval.get("mean") is None:
            return ""
        lo, hi = interval.get("ci_low"), interval.get("ci_high")
        return f"{interval['mean']:.2f}" + (f" [{lo:.2f}, {hi:.2f}]" if lo is not None else "")

    rows = []
    for name, per_model in (summary.get("judged") or {}).items():
        for label, result in per_model.items():
            headline = {k: fmt(result.get(k)) for k in ("overall", "S_l", "S_q") if k in result}
            rows.append((name, label, result.get("items"), ", ".join(f"{k} {v}" for k, v in headline.items() if v),
                         len(result.get("incomplete") or [])))
    for name, rate in (summary.get("pairwise") or {}).items():
        if isinstance(rate, dict) and "win_rate_a" in rate:
            mean = rate["win_rate_a"]
            span = f" [{rate['ci_low']:.2f}, {rate['ci_high']:.2f}]" if rate.get("ci_low") is not None else ""
            rows.append((name, f"{summary['pairwise']['a']} vs {summary['pairwise']['b']}", rate["items"],
                         f"win rate {mean:.2f}{span}, ties {rate['ties']}" if mean is not None else "no pairs",
                         rate["failed"]))
    return rows


@dg.asset(code_version="1", deps=["base_model", "finetuned_checkpoint"], group_name="evaluation", pool="gpu", kinds={"pytorch", "duckdb"})
def benchmark_scores(
    context: dg.AssetExecutionContext, config: BenchmarkConfig, lineage: LineageResource, runner: WorkloadRunner,
    judge: ModelBackendResource, generator: ModelBackendResource,
) -> dg.MaterializeResult:
    """Base and fine-tuned model on the benchmarks of ``benchmarks.yaml`` (default: the bundled prompts,
    5+ per domain, each with a required length and a held-out reference; add LongBench-Write,
    WritingBench and HelloBench files). Without a judge: the LongBench-Write length score S_l, format
    adherence, and each model's clipped NLL of the held-out references given no thinking and given its
    own thinking. With a judge (``REER_JUDGE_*``): WritingBench rubric scores, LongBench-Write quality
    S_q, HelloBench checklist scores and base-vs-fine-tuned pairwise win rates (both orders), each
    benchmark aggregated its own way; every judge score records the judge model, prompt version,
    sampling and date. Runs out of process (workload ``evaluation``). Unpartitioned; lineage tables
    ``benchmark_results`` and ``judge_scores``. Never auto-materialised.
    """
    base, tuned = pointer("base_model"), pointer("finetuned_checkpoint")
    answering, servers = config.answering(generator)
    settings = {k: v for k, v in config.resolved().items() if k not in ("backend", "max_in_flight", "servers",
                                                                         "judge_batch")}
    models = [
        {"label": "base", "path": base["path"], "model_id": base["model_id"], "checkpoint_id": None},
        {"label": "finetuned", "path": tuned["path"], "model_id": tuned["checkpoint_id"], "checkpoint_id": tuned["checkpoint_id"]},
    ]
    benchmarks = benchmark_specs(app_settings.benchmarks_file())
    judge_id = [judge.model_id(), PROMPT_VERSION] if judge.configured else None
    prompt_set = prompt_sets.from_settings()  # REER_PROMPTS: the benchmarks' inference prompt and the NLL context

    def evaluate(paths):
        return runner.run(context, "evaluation", {
            "models": models, "benchmarks": benchmarks, "config": settings,
            "outputs": {name: str(path) for name, path in paths.items()},
            "work": str(storage.work_dir("benchmark_scores", None,
                                         config_hash([models, benchmarks, settings, prompt_set.identity]))),
            "answering": answering, "servers": servers, **prompt_sets.extras(prompt_set),
        }, env={**generator.workload_env(), **judge.workload_env(),
                **({"REER_JUDGE_BATCH": str(config.judge_batch)} if judge.configured and config.judge_batch is not None
                   else {})})

    # hf answers are the same however they are served; another backend samples differently: recompute
    answered_by = None if answering["backend"] in ("embedded", "hf") else (answering["backend"], sorted(servers.items()))
    run = run_stage(context, "benchmark_scores", (models, settings, benchmarks, judge_id, prompt_set.identity)
                    + ((answered_by,) if answered_by else ()), evaluate, lineage=lineage,
                    tables={"benchmark_results": "results", "judge_scores": "judgments"})
    frame = run.read("results")
    summary = json.loads(run.paths["summary"].read_text())
    table = summary_table(frame)
    overall = {(row["model_label"], row["benchmark"]): row for row in table.filter(pl.col("domain") == "all").iter_rows(named=True)}
    judge_state = summary["judge"]
    return run.result(frame.height, {
        "summary": md_table(table.columns, table.rows()),
        **{f"{label}_{metric}": overall.get((label, "bundled"), {}).get(metric) for label in ("base", "finetuned")
           for metric in ("length_score", "format_rate", "heldout_nll", "heldout_nll_own_thinking")},
        "benchmarks": summary["benchmarks"],
        "judge": (f"{judge_state['model']} (prompts {judge_state['prompt_version']})" if judge_state["configured"]
                  else f"none: {judge_state['why']}"),
        **({"judged": md_table(["benchmark", "model", "items", "scores (95% CI)", "incomplete/failed"],
                               judged_table(summary)),
            "judge_failed": summary.get("judge_failed", 0)} if judge_state["configured"] else {}),
        "tokens": summary["tokens"],
        "answering": summary.get("answering"),
    })
