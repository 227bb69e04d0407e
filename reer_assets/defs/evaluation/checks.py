"""Warning check: fine-tuning should not make the held-out NLL worse."""


import dagster as dg
import polars as pl

from reer_assets.lib.storage import output_path, read_parquet


@dg.asset_check(asset="benchmark_scores", description="Fine-tuned held-out NLL is not worse than the base model's.")
def finetuned_nll_not_worse(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    path = output_path("benchmark_scores", "results")
    if not path.exists():
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN, metadata={"reason": "no results yet"})
    means = dict(read_parquet(path).group_by("model_label").agg(pl.col("heldout_nll").mean()).iter_rows())
    base, tuned = means.get("base"), means.get("finetuned")
    passed = base is not None and tuned is not None and tuned <= base
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"base_heldout_nll": base, "finetuned_heldout_nll": tuned},
    )
