"""refined_trajectories: the REER search for every (query, reference) of a domain.

A domain may be split into shards (``shards: N`` in domains.yaml): one workload run per shard, all at
once, combined into the partition's outputs. docs/scale.md, "Shards".
"""


import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import dagster as dg
import polars as pl

from reer_assets.core.ids import config_hash
from reer_assets.core.refinement import SearchConfig
from reer_assets.core.trajectories import position_gains
from reer_assets.defs.automation import after_upstream
from reer_assets.defs.partitions import domain_partitions
from reer_assets.defs.resources import LineageResource, ModelBackendResource, WorkloadRunner
from reer_assets.defs.stage import StageRun, run_stage, upstream
from reer_assets.lib import prompt_sets, storage
from reer_assets.lib.domains import domain_shards
from reer_assets.lib.metadata import counts_table, histogram, md_table, mean, preview
from reer_assets.lib.plots import gain_by_position, markdown_image, score_distributions
from reer_assets.lib.profiles import profile_name
from reer_assets.lib.run_config import NucleusSamplingConfig, SeedConfig
from reer_assets.workloads.refinement import SearchExtras
from reer_assets.workloads.refinement_shards import ShardRun, combine_shards, shard_runs

SEARCH_FIELDS = {f for f in SearchConfig.__dataclass_fields__}


class SearchRunConfig(NucleusSamplingConfig, SeedConfig):
    """Search knobs; unset fields come from the profile's ``search`` section (REER_PROFILE or ``profile``)."""

    section = "search"
    stop_thresh: Optional[float] = None
    max_step: Optional[int] = None
    num_expansion: Optional[int] = None
    num_rollouts: Optional[int] = None
    edit_max_tokens: Optional[int] = None
    max_failure_rate: float = 0.25
    # items searched at once; default: the HTTP in-flight limit for openai backends, else 1
    item_concurrency: Optional[int] = None
    # a folder of the official REER code's output files: imported instead of searched (docs/interop.md)
    official_outputs: Optional[str] = None

    def search_config(self) -> SearchConfig:
        """The search settings: the profile's (SearchConfig's defaults overlaid by the profile) with this run's
        overrides."""
        return SearchConfig.from_dict({k: v for k, v in self.resolved().items() if k in SEARCH_FIELDS})


def failure_message(domain: str, frame: pl.DataFrame, bound: float, failed_shards: list[dict] | None = None) -> str:
    """Why a partition failed: the shard runs that failed (which, and their error), the count, the most
    common error class and one example of it."""
    failed = frame.filter(pl.col("status") == "failed")
    reasons = failed["reject_reason"].fill_null("unknown").to_list()
    classes = Counter(r.split(":", 1)[0] for r in reasons)
    top, count = classes.most_common(1)[0]
    example = next(r for r in reasons if r.split(":", 1)[0] == top)
    shards = "".join(f"{shard_failure_line(s)}. " for s in failed_shards or [])
    return (f"[{domain}] {shards}{failed.height} of {frame.height} items failed, above max_failure_rate={bound}. "
            f"Most common error: {top} ({count} of {failed.height}), e.g. {example[:240]!r}. "
            "Finished items are checkpointed; the failed ones are retried on the next run.")


def gain_metadata(domain: str, trajectories: pl.DataFrame, steps: pl.DataFrame) -> dict:
    """``gain_by_position`` (a table) and ``gain_plot`` (a PNG in markdown) for the UI."""
    gains = position_gains(trajectories, steps)
    if gains.is_empty():
        return {"gain_by_position": dg.MetadataValue.md("_no search steps_")}
    labels = [f"{20 * f}-{20 * f + 20}%" for f in gains["position_fifth"]]
    return {
        "gain_by_position": md_table(["segment position", "steps", "accepted", "mean gain"],
                                     zip(labels, gains["steps"], gains["accepted"], gains["mean_gain"])),
        "gain_plot": dg.MetadataValue.md(markdown_image(gain_by_position(
            gains["position_fifth"].to_list(), gains["mean_gain"].fill_null(0.0).to_list(), gains["accepted"].to_list(),
            gains["steps"].to_list(), f"{domain}: gain per segment position"), "gain per segment position")),
    }


# --- shards: one workload run per shard, at once, combined into the partition's outputs -----------------

def shard_failure_line(shard: dict) -> str:
    return f"Shard {shard['shard']} of {shard['of']} failed: {shard['error_class']}: {shard['error'][:300]}"


def run_shards(context: dg.AssetExecutionContext, runner: WorkloadRunner, runs: list[ShardRun],
               env: dict[str, str]) -> None:
    """Start every shard's run (threads, each its own Pipes session; sequentially where the runner
    cannot run several at once) and wait for all; a failed run is kept on its ShardRun, not raised."""

    def one(shard: ShardRun) -> None:
        try:
            shard.summary = runner.run(context, "refinement", shard.extras.to_json(), env)
        except Exception as exc:  # noqa: BLE001 (any failure of one shard; the others go on)
            shard.error = exc
            context.log.error(f"[{context.partition_key}] shard {shard.index + 1} of {shard.count} failed: "
                              f"{shard.error_class}: {str(exc)[:400]}")

    if len(runs) > 1 and runner.concurrent:
        pool = ThreadPoolExecutor(max_workers=len(runs), thread_name_prefix="reer-shard")
        futures = [pool.submit(one, shard) for shard in runs]
        try:
            for future in futures:
                future.result()  # a termination of the Dagster run is raised here, in the step's thread
        except BaseException:
            stopped = runner.cancel(context.log.warning) if runner.mode == "ray" else []
            context.log.warning(f"[{context.partition_key}] interrupted while shards ran"
                                + (f"; stopped Ray jobs {', '.join(stopped)}" if stopped else ""))
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    else:
        for shard in runs:
            one(shard)


@dg.asset(
    code_version="2",  # 2: an item's published thinking is scored beside z0 (published_score)
    partitions_def=domain_partitions,
    deps=["synthesized_queries"],
    group_name="refinement",
    pool="gpu",
    kinds={"python", "duckdb"},
    automation_condition=after_upstream,
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

    Runs out of process (workload ``refinement``, pool ``gpu``; where: REER_WORKLOAD_RUNNER), one run
    per shard of the domain (``shards: N`` in domains.yaml, default 1) at once; each finished item is
    checkpointed, so an interrupted run resumes without redoing it, whatever the shard count.
    Partitioned by domain; Parquet under ``reer/assets/refined_trajectories/<domain>/``; lineage
    tables ``trajectories``, ``search_steps``, ``candidates``. Metadata: status counts, mean initial
    and final score (and, where the source published its own thinking, that thinking's mean score under
    the same scorer and how often the search beat it), a plot of both distributions, the score gain per
    segment position (table and plot), format rates and token counts.
    """
    if config.official_outputs:  # an official run's files instead of a search; no model is called
        from reer_assets.defs.refinement.official import import_partition

        return import_partition(context, config.official_outputs, lineage)
    domain = context.partition_key
    search = config.search_config()
    models = (generator.model_id(), scorer.model_id())
    # concurrency changes how fast, never what: it stays out of the ids
    prompt_set = prompt_sets.from_settings()  # REER_PROMPTS: in the hash (so in ids and the fingerprint), text to the workload
    cfg_hash = config_hash({"search": search.identity(), "seed": config.seed, "models": models, "prompts": prompt_set.identity})

    # the shard count too changes how fast, never what: in no id, config hash or fingerprint
    shards = domain_shards(domain)

    def search_items(paths):
        base = SearchExtras(
            queries=str(storage.output_path("synthesized_queries", "queries", domain)),
            work=str(storage.work_dir("refined_trajectories", domain, cfg_hash)),
            search=search, seed=config.seed, config_hash=cfg_hash, generator_id=models[0], scorer_id=models[1],
            item_concurrency=config.item_concurrency,
            prompt_set=prompt_sets.extras(prompt_set)[prompt_sets.EXTRAS_KEY])
        runner.check()  # a runner that lacks a setting fails here, not as N failed shards
        runs = shard_runs(base, paths, shards)
        if shards > 1:
            context.log.info(f"[{domain}] {shards} shards, {runner.mode} runner"
                             f"{', at once' if runner.concurrent else ', one after another'}")
        started = time.perf_counter()
        run_shards(context, runner, runs, env={**generator.workload_env(), **scorer.workload_env()})
        if shards == 1 and runs[0].error is None:
            return runs[0].summary  # the one run wrote the registered outputs itself
        return combine_shards(runs, paths, base, runner.mode, time.perf_counter() - started)

    def failure_bound(run: StageRun) -> None:
        frame = run.read("trajectories")
        failed = int((frame["status"] == "failed").sum())
        failed_shards = [s for s in (run.summary or {}).get("shard_runs", []) if s.get("status") == "failed"]
        if frame.height and failed / frame.height > config.max_failure_rate:
            raise dg.Failure(failure_message(domain, frame, config.max_failure_rate, failed_shards),
                             metadata={"failed": failed, "max_failure_rate": config.max_failure_rate,
                                       "failed_shards": [s["shard"] for s in failed_shards]})
        if failed_shards and not run.reused:
            context.log.warning(f"[{domain}] " + "; ".join(shard_failure_line(s) for s in failed_shards)
                                + f"; {failed} of {frame.height} items failed, within max_failure_rate="
                                f"{config.max_failure_rate}: the partition passes")

    run = run_stage(context, "refined_trajectories", (upstream("synthesized_queries", domain), cfg_hash),
                    search_items, lineage=lineage,
                    tables={"trajectories": "trajectories", "search_steps": "search_steps", "candidates": "candidates"},
                    check=failure_bound)
    frame, steps, candidates = run.read("trajectories"), run.read("search_steps"), run.read("candidates")
    status_counts = dict(frame.group_by("status").len().iter_rows())
    ok = frame.filter(pl.col("status") == "ok")
    improved = int((ok["final_score"] < ok["initial_score"]).sum()) if ok.height else 0
    published = ok.filter(pl.col("published_score").is_not_null())
    context.log.info(f"[{domain}] {frame.height} trajectories {status_counts}, profile {profile_name(config.profile)}, "
                     f"mean score {mean(ok, 'initial_score')} -> {mean(ok, 'final_score')}")
    return run.result(frame.height, {
        "status": counts_table(status_counts, "status"),
        "failed": status_counts.get("failed", 0),
        "mean_initial_score": mean(ok, "initial_score"),
        "mean_final_score": mean(ok, "final_score"),
        "improved_items": improved,
        # their thinking beside ours: the items whose source published a thinking, scored like z0
        "published_scored": published.height,
        "mean_published_score": mean(published, "published_score"),
        "search_beat_published": int((published["final_score"] < published["published_score"]).sum()),
        # the three means over the same items (those with a published score)
        "published_beside_ours": md_table(
            ["items", "mean initial score (z0)", "mean final score (z*)", "mean published score"],
            [[published.height, mean(published, "initial_score"), mean(published, "final_score"),
              mean(published, "published_score")]]) if published.height
        else dg.MetadataValue.md("_no published thinking_"),
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
        **gain_metadata(domain, frame, steps),
        "final_score_histogram": histogram(ok["final_score"].to_list() if ok.height else [], [0, 0.5, 1.0, 1.5, 2.0]),
        "preview": preview(frame, ["document_id", "status", "initial_score", "final_score", "num_steps", "final_thinking"]),
    })
