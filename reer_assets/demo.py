"""`make demo`: materialise the whole graph on the bundled domains with the embedded model.

Uses the ``demo`` profile (smaller max_tokens and max_step) unless REER_PROFILE says otherwise,
runs every domain through the per-domain job, then the dataset/training/benchmark job, then the
built-in ablations per domain (experiment_job, 1 seed), and prints a summary with the ablation
report's headline table. A second run reuses every up-to-date asset partition instead of recomputing it.
"""

from __future__ import annotations

import os
import sys
import time


def _accepted(read_output, domain: str) -> int | None:
    """Accepted rows of a domain's filtered_dataset; None when it was never written."""
    try:
        return int((read_output("filtered_dataset", "dataset", domain)["status"] == "accepted").sum())
    except FileNotFoundError:
        return None


def main() -> int:
    os.environ.setdefault("REER_PROFILE", "demo")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no weight-loading bars from every workload
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # nor TRL's dataset-preparation bars
    import warnings

    import dagster as dg

    # Dagster's own notices about its preview/beta APIs (Pipes internals) say nothing to a demo user
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    import polars as pl

    from reer_assets.lib.domains import domain_names
    from reer_assets.definitions import defs
    from reer_assets.lib import duckdb_store
    from reer_assets.lib.storage import dagster_home, lineage_db, read_output

    started = time.perf_counter()
    instance = dg.DagsterInstance.get()
    print(f"DAGSTER_HOME={dagster_home()}  profile={os.environ['REER_PROFILE']}", flush=True)
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    timings, empty = {}, []
    for domain in domain_names():
        t0 = time.perf_counter()
        result = defs.resolve_job_def("domain_pipeline_job").execute_in_process(
            partition_key=domain, instance=instance, raise_on_error=False, run_config=quiet)
        timings[domain] = time.perf_counter() - t0
        if not result.success and _accepted(read_output, domain) == 0:
            # the toy model can write nothing the filters accept for a domain: the blocking check
            # filtered_dataset_not_empty says so, and that domain is left out of training and the ablations
            empty.append(domain)
            print(f"  {domain:<22} no accepted rows (check filtered_dataset_not_empty failed; see its reject_reasons)"
                  f" in {timings[domain]:.0f}s", flush=True)
            continue
        print(f"  {domain:<22} {'ok' if result.success else 'FAILED'} in {timings[domain]:.0f}s", flush=True)
        if not result.success:
            return 1
    t0 = time.perf_counter()
    result = defs.resolve_job_def("model_pipeline_job").execute_in_process(instance=instance, raise_on_error=False,
                                                                      run_config=quiet)
    timings["model_pipeline"] = time.perf_counter() - t0
    print(f"  {'dataset+train+bench':<22} {'ok' if result.success else 'FAILED'} in {timings['model_pipeline']:.0f}s", flush=True)
    if not result.success:
        return 1
    print("Ablations (experiment_job per domain: variants, one checkpoint each, held-out evaluation, report):", flush=True)
    for domain in [d for d in domain_names() if d not in empty]:
        t0 = time.perf_counter()
        result = defs.resolve_job_def("experiment_job").execute_in_process(
            partition_key=domain, instance=instance, raise_on_error=False, run_config=quiet)
        timings[f"experiment:{domain}"] = time.perf_counter() - t0
        print(f"  {domain:<22} {'ok' if result.success else 'FAILED'} in {timings[f'experiment:{domain}']:.0f}s",
              flush=True)
        if not result.success:
            return 1

    with pl.Config(tbl_rows=100, tbl_cols=12, tbl_width_chars=160, fmt_str_lengths=40):
        print("\nRows per stage and domain (lineage):")
        counts = duckdb_store.query(duckdb_store.named_query("stage_counts"))
        print(counts.pivot(on="stage", index="domain", values="accepted").sort("domain"))
        print("\nMean score per domain (clipped NLL of the reference, lower is better):")
        print(duckdb_store.query(
            "SELECT d.domain, count(*) AS trajectories, round(avg(t.initial_score), 4) AS mean_initial, "
            "round(avg(t.final_score), 4) AS mean_final, count(*) FILTER (WHERE t.final_score < t.initial_score) AS improved "
            "FROM trajectories t JOIN documents d ON d.id = t.document_id WHERE t.status = 'ok' "
            "GROUP BY d.domain ORDER BY d.domain"))
        bench = read_output("benchmark_scores", "results")
        print("\nBenchmark (bundled prompts):")
        print(bench.group_by("model_label").agg(
            pl.col("length_score").mean().round(1), pl.col("format_ok").mean().round(3).alias("format_rate"),
            pl.col("heldout_nll").mean().round(4), pl.len().alias("prompts")).sort("model_label"))
    print_experiment_headline()
    print(f"\nDone in {time.perf_counter() - started:.0f}s. Lineage: {lineage_db()}")
    print("Open the UI with `make ui` (http://127.0.0.1:3000); query lineage with `.venv/bin/reer lineage sql \"...\"`.")
    return 0


def print_experiment_headline() -> None:
    """The ablation report's headline table (all domains) and its paired differences on the headline metric."""
    from reer_assets.core import experiments as ex
    from reer_assets.lib.storage import read_output

    rows = read_output("experiment_report", "results").to_dicts()
    experiment = read_output("experiment_report", "experiments").row(0, named=True)
    print(f"\nAblation {experiment['id']} (all domains; mean [95% bootstrap CI over items], n = items; "
          f"report: reer experiment report --markdown):")
    print(ex.means_table(rows, experiment["variants"]))
    for row in rows:
        if row["domain"] == ex.ALL and row["kind"] == "difference" and row["metric"] == ex.HEADLINE:
            print(f"  {row['reading']}")


if __name__ == "__main__":
    sys.exit(main())
