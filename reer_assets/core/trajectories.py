"""A search trace as table rows: its ``trajectories`` row, and the ``search_steps`` and ``candidates`` rows of
the traces inside trajectory rows. The search workload and the official import write the same rows."""

from __future__ import annotations

import polars as pl

from reer_assets.core.ids import stable_id
from reer_assets.core.schemas import CANDIDATES, SEARCH_STEPS
from reer_assets.core.trace import SearchTrace


def trajectory_row(query_row: dict, traj_id: str, trace: SearchTrace, config_hash: str, seconds: float) -> dict:
    return {
        "id": traj_id, "query_id": query_row["id"], "document_id": query_row["document_id"],
        "domain": query_row["domain"], "rollout": trace.rollout, "status": trace.status,
        "reject_reason": trace.reject_reason, "query": query_row["query"], "reference": query_row["reference"],
        "initial_score": trace.initial_score, "final_score": trace.final_score,
        "initial_thinking": trace.initial_thinking, "final_thinking": trace.final_thinking,
        "initial_closed": trace.initial_closed, "num_steps": len(trace.steps),
        "generator_model": trace.generator_model, "scorer_model": trace.scorer_model,
        "prompt_set_version": trace.prompt_set_version, "seed": trace.seed,
        "prompt_tokens": trace.tokens["prompt"], "completion_tokens": trace.tokens["completion"],
        "scored_tokens": trace.tokens["scored"], "generator_calls": trace.tokens["generator_calls"],
        "scorer_calls": trace.tokens["scorer_calls"], "config_hash": config_hash, "seconds": round(seconds, 3),
        "trace_json": trace.to_json(),
        # the source's own thinking (the query's, NULL without one) and its score beside z0 and z*
        "published_thinking": query_row.get("published_thinking"), "published_score": trace.published_score,
    }


def explode(rows: list[dict]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """search_steps and candidates frames from the traces inside trajectory rows."""
    steps, candidates = [], []
    for row in rows:
        if not row.get("trace_json"):
            continue
        trace = SearchTrace.from_json(row["trace_json"])
        for step in trace.steps:
            step_id = stable_id("step", row["id"], step.index)
            steps.append({"id": step_id, "trajectory_id": row["id"], "step_index": step.index,
                          "segment": step.segment, "choice": step.choice, "best_score": step.best_score})
            for k, cand in enumerate(step.candidates):
                candidates.append({"id": stable_id("cand", step_id, k), "step_id": step_id, "trajectory_id": row["id"],
                                   "candidate_index": k, "text": cand.text, "raw": cand.raw, "score": cand.score,
                                   "completion_tokens": cand.completion_tokens, "skipped_reason": cand.skipped_reason,
                                   "accepted": step.choice == k})
    return SEARCH_STEPS.frame(steps), CANDIDATES.frame(candidates)


def position_gains(trajectories: pl.DataFrame, steps: pl.DataFrame) -> pl.DataFrame:
    """Score gain per segment position, from a partition's search steps (the same numbers as
    ``sql/queries/search/1_gain_by_position.sql``): each step's gain is the best score before it
    (the previous step's, else the initial score) minus the best score after it; steps are grouped
    by where the rewritten segment sits in the initial thinking, in fifths (0 = the first 20%)."""
    columns = {"position_fifth": pl.Int32, "steps": pl.UInt32, "accepted": pl.UInt32, "mean_gain": pl.Float64}
    if steps.is_empty() or trajectories.is_empty():
        return pl.DataFrame(schema=columns)
    segments = trajectories.select(
        pl.col("id").alias("trajectory_id"), "initial_score",
        pl.col("trace_json").str.json_path_match("$.initial_segments").str.json_decode(pl.List(pl.String))
        .list.len().alias("segments"))
    joined = steps.join(segments, on="trajectory_id", how="inner").sort(["trajectory_id", "step_index"])
    joined = joined.with_columns(
        before=pl.col("best_score").shift(1).over("trajectory_id").fill_null(pl.col("initial_score")),
        position_fifth=pl.min_horizontal(pl.lit(4), (5 * pl.col("step_index") / pl.max_horizontal(
            pl.col("segments").fill_null(1), pl.lit(1))).floor()).cast(pl.Int32))
    return (joined.group_by("position_fifth")
            .agg(steps=pl.len(), accepted=pl.col("choice").is_not_null().sum().cast(pl.UInt32),
                 mean_gain=(pl.col("before") - pl.col("best_score")).mean().round(5))
            .sort("position_fifth").select(list(columns)))
