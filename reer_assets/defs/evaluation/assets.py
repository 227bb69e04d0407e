"""benchmark_scores: base vs fine-tuned model on the bundled benchmark prompts."""


from typing import Optional

import dagster as dg
import polars as pl

from reer_assets.defs.resources import LineageResource
from reer_assets.defs.training.assets import read_pointer
from reer_assets.defs.workload_runner import run_workload
from reer_assets.lib import fingerprints
from reer_assets.lib.paths import asset_dir
from reer_assets.lib.profiles import profile


class BenchmarkConfig(dg.Config):
    profile: Optional[str] = None
    max_tokens: Optional[int] = None
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


def markdown(frame: pl.DataFrame) -> str:
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join(lines)


@dg.asset(deps=["base_model", "finetuned_checkpoint"], group_name="evaluation", pool="gpu", kinds={"pytorch", "duckdb"})
def benchmark_scores(
    context: dg.AssetExecutionContext, config: BenchmarkConfig, lineage: LineageResource, pipes: dg.PipesSubprocessClient
) -> dg.MaterializeResult:
    """Base and fine-tuned model on the bundled benchmark prompts (5+ per domain, each with a
    required length): LongBench-Write length score, format adherence (one closed think block free of
    other tags, then an answer), and each model's clipped NLL of the held-out reference answers given
    no thinking and given its own generated thinking, all in the one inference format. Per-domain
    breakdown in the metadata. Runs out of process (workload ``benchmark``). Unpartitioned; lineage
    table ``benchmark_results``. Never auto-materialised.
    """
    base, tuned = read_pointer("base_model"), read_pointer("finetuned_checkpoint")
    settings = dict(profile(config.profile)["benchmark"])
    if config.max_tokens is not None:
        settings["max_tokens"] = config.max_tokens
    settings["seed"] = config.seed
    models = [
        {"label": "base", "path": base["path"], "model_id": base["model_id"], "checkpoint_id": None},
        {"label": "finetuned", "path": tuned["path"], "model_id": tuned["checkpoint_id"], "checkpoint_id": tuned["checkpoint_id"]},
    ]
    fingerprint = fingerprints.compute("benchmark_scores", models, settings)
    out = asset_dir("benchmark_scores", None) / "results.parquet"
    reused = fingerprints.is_current("benchmark_scores", None, fingerprint, [out])
    if not reused:
        run_workload(context, pipes, "benchmark", {
            "models": models, "prompts": None, "out": str(out), "config": settings,
        }, env={})
    frame = pl.read_parquet(out)
    if not reused:
        lineage.write({"benchmark_results": frame.with_columns(pl.lit(context.run.run_id).alias("run_id"))})
    table = summary_table(frame)
    overall = {row["model_label"]: row for row in table.filter(pl.col("domain") == "all").iter_rows(named=True)}
    fingerprints.save("benchmark_scores", None, fingerprint, {"rows": frame.height})
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": frame.height,
            "summary": dg.MetadataValue.md(markdown(table)),
            "base_length_score": overall.get("base", {}).get("length_score"),
            "finetuned_length_score": overall.get("finetuned", {}).get("length_score"),
            "base_format_rate": overall.get("base", {}).get("format_rate"),
            "finetuned_format_rate": overall.get("finetuned", {}).get("format_rate"),
            "base_heldout_nll": overall.get("base", {}).get("heldout_nll"),
            "finetuned_heldout_nll": overall.get("finetuned", {}).get("heldout_nll"),
            "reused": reused,
            "path": dg.MetadataValue.path(str(out)),
        },
        data_version=dg.DataVersion(fingerprint),
    )
