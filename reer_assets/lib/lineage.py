"""Shaping stage outputs into lineage rows: the columns of each table plus run id and partition."""

from __future__ import annotations

import polars as pl

TABLE_COLUMNS = {
    "documents": ["id", "domain", "source_uri", "language", "title", "text_hash", "given_request", "license",
                  "status", "reject_reasons", "config_hash", "reader", "source_id", "attribution", "source_meta",
                  "duplicate_of"],
    "queries": ["id", "document_id", "query", "synthesized", "model", "raw_output", "status", "reject_reasons",
                "prompt_tokens", "completion_tokens", "config_hash"],
    "trajectories": ["id", "query_id", "document_id", "rollout", "status", "reject_reason", "initial_score",
                     "final_score", "initial_thinking", "final_thinking", "num_steps", "generator_model",
                     "scorer_model", "prompt_set_version", "seed", "prompt_tokens", "completion_tokens",
                     "scored_tokens", "generator_calls", "scorer_calls", "config_hash", "trace_json"],
    "search_steps": ["id", "trajectory_id", "step_index", "segment", "choice", "best_score"],
    "candidates": ["id", "step_id", "trajectory_id", "candidate_index", "text", "raw", "score",
                   "completion_tokens", "skipped_reason", "accepted"],
    "dataset_rows": ["id", "trajectory_id", "query_id", "document_id", "domain", "status", "reject_reasons",
                     "config_hash"],
}


def stamp(table: str, frame: pl.DataFrame, run_id: str, partition: str | None) -> pl.DataFrame:
    """The frame's columns for ``table`` plus the Dagster run id and partition."""
    columns = TABLE_COLUMNS[table]
    return frame.select(columns).with_columns(
        pl.lit(run_id, dtype=pl.String).alias("run_id"),
        pl.lit(partition, dtype=pl.String).alias("partition"),
    )
