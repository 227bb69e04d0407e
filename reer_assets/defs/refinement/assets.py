"""refined_trajectories: the REER search for every (query, reference) of a domain."""


from typing import Optional

import dagster as dg
import polars as pl

from reer_assets.core.ids import config_hash
from reer_assets.defs.partitions import domain_partitions
from reer_assets.defs.resources import LineageResource, ModelBackendResource
from reer_assets.defs.workload_runner import run_workload
from reer_assets.lib import fingerprints
from reer_assets.lib.lineage import stamp
from reer_assets.lib.metadata import counts_table, histogram, mean, preview
from reer_assets.lib.paths import asset_dir, work_dir
from reer_assets.lib.plots import markdown_image, score_distributions
from reer_assets.lib.profiles import profile, profile_name

OUTPUTS = ("trajectories.parquet", "search_steps.parquet", "candidates.parquet")


class SearchRunConfig(dg.Config):
    """Search knobs; unset fields come from the profile (REER_PROFILE or ``profile``)."""

    profile: Optional[str] = None
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

    def resolved(self) -> dict:
        base = profile(self.profile)
        search = dict(base["search"])
        for key in ("stop_thresh", "max_step", "num_expansion", "max_tokens", "edit_max_tokens", "temperature", "top_p", "top_k"):
            if getattr(self, key) is not None:
                search[key] = getattr(self, key)
        rollouts = self.num_rollouts if self.num_rollouts is not None else base["num_rollouts"]
        return {"search": search, "num_rollouts": rollouts, "seed": self.seed, "item_concurrency": self.item_concurrency}


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
    pipes: dg.PipesSubprocessClient,
) -> dg.MaterializeResult:
    """Thinking trajectories found by perplexity-guided local search (REER), one per accepted
    query and rollout: the initial thinking z0 and its score, the final thinking and score, and
    the full search trace (every step, every candidate with raw output and score, the choice).

    Runs out of process (workload ``search``, pool ``gpu``); each finished item is checkpointed,
    so an interrupted run resumes without redoing it. Partitioned by domain; Parquet under
    ``reer/assets/refined_trajectories/<domain>/``; lineage tables ``trajectories``,
    ``search_steps``, ``candidates``.
    """
    domain = context.partition_key
    run_config = config.resolved()
    models = (generator.model_id(), scorer.model_id())
    # concurrency changes how fast, never what: it stays out of the ids
    cfg_hash = config_hash({**{k: v for k, v in run_config.items() if k != "item_concurrency"}, "models": models})
    fingerprint = fingerprints.compute("refined_trajectories", fingerprints.upstream("synthesized_queries", domain), cfg_hash)
    out_dir = asset_dir("refined_trajectories", domain)
    reused = fingerprints.is_current("refined_trajectories", domain, fingerprint, [out_dir / o for o in OUTPUTS])
    summary: dict = {}
    if not reused:
        summary = run_workload(context, pipes, "search", {
            "queries": str(asset_dir("synthesized_queries", domain) / "queries.parquet"),
            "out_dir": str(out_dir),
            "work": str(work_dir("refined_trajectories", domain, cfg_hash)),
            "config": run_config,
            "config_hash": cfg_hash,
            "generator_id": models[0],
            "scorer_id": models[1],
        }, env={**generator.workload_env(), **scorer.workload_env()})
    frame = pl.read_parquet(out_dir / "trajectories.parquet")
    steps = pl.read_parquet(out_dir / "search_steps.parquet")
    candidates = pl.read_parquet(out_dir / "candidates.parquet")
    if not reused:
        lineage.write({
            "trajectories": stamp("trajectories", frame, context.run.run_id, domain),
            "search_steps": stamp("search_steps", steps, context.run.run_id, domain),
            "candidates": stamp("candidates", candidates, context.run.run_id, domain),
        })
    status_counts = dict(frame.group_by("status").len().iter_rows())
    failed = status_counts.get("failed", 0)
    if frame.height and failed / frame.height > config.max_failure_rate:
        raise dg.Failure(
            f"[{domain}] {failed} of {frame.height} items failed, above max_failure_rate={config.max_failure_rate}; "
            "finished items are checkpointed and the failed ones will be retried on the next run",
            metadata={"failed": failed, "max_failure_rate": config.max_failure_rate},
        )
    ok = frame.filter(pl.col("status") == "ok")
    if not reused:
        fingerprints.save("refined_trajectories", domain, fingerprint, {"rows": frame.height, **status_counts})
    improved = int((ok["final_score"] < ok["initial_score"]).sum()) if ok.height else 0
    parsed = candidates.filter(pl.col("text").is_not_null()).height
    context.log.info(f"[{domain}] {frame.height} trajectories {status_counts}, profile {profile_name(config.profile)}, "
                     f"mean score {mean(ok, 'initial_score')} -> {mean(ok, 'final_score')}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": frame.height,
            "status": counts_table(status_counts, "status"),
            "failed": failed,
            "reused": reused,
            "mean_initial_score": mean(ok, "initial_score"),
            "mean_final_score": mean(ok, "final_score"),
            "improved_items": improved,
            "search_steps": steps.height,
            "candidates": candidates.height,
            "candidates_with_refine": parsed,
            "think_closed_rate": round(float(frame["initial_closed"].fill_null(False).mean() or 0), 3) if frame.height else 0.0,
            "completion_tokens": int(frame["completion_tokens"].fill_null(0).sum()),
            "scored_tokens": int(frame["scored_tokens"].fill_null(0).sum()),
            "workload": summary,
            "models": {"generator": models[0], "scorer": models[1]},
            "score_plot": dg.MetadataValue.md(markdown_image(score_distributions(
                ok["initial_score"].to_list(), ok["final_score"].to_list(), f"{domain}: initial vs final score"),
                "initial vs final score")),
            "final_score_histogram": histogram(ok["final_score"].to_list() if ok.height else [], [0, 0.5, 1.0, 1.5, 2.0]),
            "preview": preview(frame, ["document_id", "status", "initial_score", "final_score", "num_steps", "final_thinking"]),
            "path": dg.MetadataValue.path(str(out_dir)),
        },
        data_version=dg.DataVersion(fingerprint),
    )
