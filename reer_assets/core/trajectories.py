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
