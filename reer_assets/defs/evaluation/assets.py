"""benchmark_scores: base vs fine-tuned model on the bundled benchmark prompts."""


from typing import Optional

import dagster as dg
import polars as pl

from reer_assets.defs.resources import LineageResource, WorkloadRunner
from reer_assets.defs.stage import run_stage
from reer_assets.defs.training.assets import pointer
from reer_assets.lib.metadata import md_table
from reer_assets.lib.profiles import ProfiledConfig


class BenchmarkConfig(ProfiledConfig):
    """Generation settings for the benchmarks; unset fields come from the profile's ``benchmark`` section."""

    section = "benchmark"
    max_tokens: Optional[int] = None
    prompts_per_domain: Optional[int] = None  # a quick run: the first N bundled prompts of each domain
    seed: int = 0


def summary_table(frame: pl.DataFrame) -> pl.DataFrame:
    """Mean metrics per model and domain, plus an ``all`` row per model."""
    metrics = [pl.col("length_score").mean().round(1).alias("length_score"),
               pl.col("format_ok").mean().round(3).alias("format_rate"),
               pl.col("heldout_nll").mean().round(4).alias("heldout_nll"),
               pl.col("heldout_nll_own_thinking").mean().round(4).alias("heldout_nll_own_thinking"),
               pl.len().alias("prompts")]
    per_domain = frame.group_by("model_label", "domain").agg(metrics)
    overall = frame.group_by("model_label").agg(metrics).with_columns(pl.lit("all").alias("domain"))
    return pl.concat([per_domain, overall.select(per_domain.columns)]).sort("model_label", "domain")


@dg.asset(deps=["base_model", "finetuned_checkpoint"], group_name="evaluation", pool="gpu", kinds={"pytorch", "duckdb"})
def benchmark_scores(
    context: dg.AssetExecutionContext, config: BenchmarkConfig, lineage: LineageResource, runner: WorkloadRunner
) -> dg.MaterializeResult:
    """Base and fine-tuned model on the bundled benchmark prompts (5+ per domain, each with a
    required length): LongBench-Write length score, format adherence (one closed think block free of
    other tags, then an answer), and each model's clipped NLL of the held-out reference answers given
    no thinking and given its own generated thinking, all in the one inference format. Per-domain
    breakdown in the metadata. Runs out of process (workload ``evaluation``). Unpartitioned; lineage
    table ``benchmark_results``. Never auto-materialised.
    """
    base, tuned = pointer("base_model"), pointer("finetuned_checkpoint")
    settings = config.resolved()
    models = [
        {"label": "base", "path": base["path"], "model_id": base["model_id"], "checkpoint_id": None},
        {"label": "finetuned", "path": tuned["path"], "model_id": tuned["checkpoint_id"], "checkpoint_id": tuned["checkpoint_id"]},
    ]

    def evaluate(paths):
        return runner.run(context, "evaluation", {
            "models": models, "prompts": None, "out": str(paths["results"]), "config": settings,
        }, env={})

    run = run_stage(context, "benchmark_scores", (models, settings), evaluate, lineage=lineage,
                    tables={"benchmark_results": "results"})
    frame = run.read("results")
    table = summary_table(frame)
    overall = {row["model_label"]: row for row in table.filter(pl.col("domain") == "all").iter_rows(named=True)}
    return run.result(frame.height, {
        "summary": md_table(table.columns, table.rows()),
        **{f"{label}_{metric}": overall.get(label, {}).get(metric) for label in ("base", "finetuned")
           for metric in ("length_score", "format_rate", "heldout_nll", "heldout_nll_own_thinking")},
    })
