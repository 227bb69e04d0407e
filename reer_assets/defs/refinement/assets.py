"""refined_trajectories: the REER search for every (query, reference) of a domain."""


from collections import Counter
from typing import Optional

import dagster as dg
import polars as pl

from reer_assets.core.ids import config_hash
from reer_assets.core.refinement import SearchConfig
from reer_assets.defs.partitions import domain_partitions
from reer_assets.defs.resources import LineageResource, ModelBackendResource, WorkloadRunner
from reer_assets.defs.stage import StageRun, run_stage, upstream
from reer_assets.lib import storage
from reer_assets.lib.metadata import counts_table, histogram, mean, preview
from reer_assets.lib.plots import markdown_image, score_distributions
from reer_assets.lib.profiles import ProfiledConfig, profile_name

SEARCH_FIELDS = {f for f in SearchConfig.__dataclass_fields__}


class SearchRunConfig(ProfiledConfig):
    """Search knobs; unset fields come from the profile's ``search`` section (REER_PROFILE or ``profile``)."""

    section = "search"
    stop_thresh: Optional[float] = None
    max_step: Optional[int] = None
    num_expansion: Optional[int] = None
    num_rollouts: Optional[int] = None
    max_tokens: Optional[int] = None
    edit_max_tokens: Optional[int] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    seed: int = 0
    max_failure_rate: float = 0.25
    # items searched at once; default: the HTTP in-flight limit for openai backends, else 1
    item_concurrency: Optional[int] = None

    def search_config(self) -> dict:
        """The SearchConfig fields (profile section with this run's overrides)."""
        return {k: v for k, v in self.resolved().items() if k in SEARCH_FIELDS}


def failure_message(domain: str, frame: pl.DataFrame, bound: float) -> str:
    """Why a partition failed: the count, the most common error class and one example of it."""
    failed = frame.filter(pl.col("status") == "failed")
    reasons = failed["reject_reason"].fill_null("unknown").to_list()
    classes = Counter(r.split(":", 1)[0] for r in reasons)
    top, count = classes.most_common(1)[0]
    example = next(r for r in reasons if r.split(":", 1)[0] == top)
    return (f"[{domain}] {failed.height} of {frame.height} items failed, above max_failure_rate={bound}. "
            f"Most common error: {top} ({count} of {failed.height}), e.g. {example[:240]!r}. "
            "Finished items are checkpointed; the failed ones are retried on the next run.")


@dg.asset(
    partitions_def=domain_partitions,
    deps=["synthesized_queries"],
    group_name="refinement",
    pool="gpu",
    kinds={"python", "duckdb"},
)
def refined_trajectories(
    context: dg.AssetExecutionContext,
    config: SearchRunConfig,
    generator: ModelBackendResource,
    scorer: ModelBackendResource,
    lineage: LineageResource,
    runner: WorkloadRunner,
) -> dg.MaterializeResult:
    """Thinking trajectories found by perplexity-guided local search (REER), one per accepted
    query and rollout: the initial thinking z0 and its score, the final thinking and score, and
    the full search trace (every step, every candidate with raw output and score, the choice).

    Runs out of process (workload ``refinement``, pool ``gpu``); each finished item is checkpointed,
    so an interrupted run resumes without redoing it. Partitioned by domain; Parquet under
    ``reer/assets/refined_trajectories/<domain>/``; lineage tables ``trajectories``,
    ``search_steps``, ``candidates``. Metadata: status counts, mean initial and final score, a plot
    of both distributions, format rates and token counts.
    """
    domain = context.partition_key
    search = config.search_config()
    models = (generator.model_id(), scorer.model_id())
    # concurrency changes how fast, never what: it stays out of the ids
    cfg_hash = config_hash({"search": search, "seed": config.seed, "models": models})

    def search_items(paths):
        return runner.run(context, "refinement", {
            "queries": str(storage.output_path("synthesized_queries", "queries", domain)),
            "outputs": {name: str(path) for name, path in paths.items()},
            "work": str(storage.work_dir("refined_trajectories", domain, cfg_hash)),
            "config": {"search": search, "seed": config.seed, "item_concurrency": config.item_concurrency},
            "config_hash": cfg_hash,
            "generator_id": models[0],
            "scorer_id": models[1],
        }, env={**generator.workload_env(), **scorer.workload_env()})

    def failure_bound(run: StageRun) -> None:
        frame = run.read("trajectories")
        failed = int((frame["status"] == "failed").sum())
        if frame.height and failed / frame.height > config.max_failure_rate:
            raise dg.Failure(failure_message(domain, frame, config.max_failure_rate),
                             metadata={"failed": failed, "max_failure_rate": config.max_failure_rate})

    run = run_stage(context, "refined_trajectories", (upstream("synthesized_queries", domain), cfg_hash),
                    search_items, lineage=lineage,
                    tables={"trajectories": "trajectories", "search_steps": "search_steps", "candidates": "candidates"},
                    check=failure_bound)
    frame, steps, candidates = run.read("trajectories"), run.read("search_steps"), run.read("candidates")
    status_counts = dict(frame.group_by("status").len().iter_rows())
    ok = frame.filter(pl.col("status") == "ok")
    improved = int((ok["final_score"] < ok["initial_score"]).sum()) if ok.height else 0
    context.log.info(f"[{domain}] {frame.height} trajectories {status_counts}, profile {profile_name(config.profile)}, "
                     f"mean score {mean(ok, 'initial_score')} -> {mean(ok, 'final_score')}")
    return run.result(frame.height, {
        "status": counts_table(status_counts, "status"),
        "failed": status_counts.get("failed", 0),
        "mean_initial_score": mean(ok, "initial_score"),
        "mean_final_score": mean(ok, "final_score"),
        "improved_items": improved,
        "search_steps": steps.height,
        "accepted_edits": int(steps["choice"].is_not_null().sum()) if steps.height else 0,
        "candidates": candidates.height,
        "candidates_with_refine": candidates.filter(pl.col("text").is_not_null()).height,
        "think_closed_rate": round(float(frame["initial_closed"].fill_null(False).mean() or 0), 3) if frame.height else 0.0,
        "completion_tokens": int(frame["completion_tokens"].fill_null(0).sum()),
        "scored_tokens": int(frame["scored_tokens"].fill_null(0).sum()),
        "workload": run.summary,
        "models": {"generator": models[0], "scorer": models[1]},
        "score_plot": dg.MetadataValue.md(markdown_image(score_distributions(
            ok["initial_score"].to_list(), ok["final_score"].to_list(), f"{domain}: initial vs final score"),
            "initial vs final score")),
        "final_score_histogram": histogram(ok["final_score"].to_list() if ok.height else [], [0, 0.5, 1.0, 1.5, 2.0]),
        "preview": preview(frame, ["document_id", "status", "initial_score", "final_score", "num_steps", "final_thinking"]),
    })
