"""Every table the engine writes, declared once: its Parquet columns and the ones lineage keeps.

A stage's workload writes ``table.columns`` to Parquet (the ``schema`` Polars checks); the asset
loads ``table.lineage`` (plus the run id and the partition) into the DuckDB table of the same
name. ``sql/schema/001_lineage.sql`` holds the DuckDB DDL, and a test checks that every table
here has its lineage columns there, with matching types.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

S, I32, I64, F64, B = pl.String, pl.Int32, pl.Int64, pl.Float64, pl.Boolean
LS = pl.List(pl.String)


@dataclass(frozen=True)
class Table:
    name: str
    columns: dict[str, pl.DataType]  # the Parquet columns, in order
    lineage: tuple[str, ...] = ()  # the columns loaded into the lineage table ``name`` (none: not in lineage)

    @property
    def schema(self) -> dict[str, pl.DataType]:
        return dict(self.columns)

    def empty_row(self) -> dict[str, None]:
        return {name: None for name in self.columns}

    def frame(self, rows: list[dict]) -> pl.DataFrame:
        return pl.DataFrame(rows, schema=self.schema)


DOCUMENTS = Table("documents", {
    "id": S, "domain": S, "reader": S, "source_uri": S, "source_id": S, "language": S, "title": S, "text": S,
    "text_hash": S, "given_request": S, "license": S, "attribution": S, "source_meta": S, "status": S,
    "reject_reasons": LS, "duplicate_of": S, "config_hash": S, "published_thinking": S,
}, lineage=("id", "domain", "source_uri", "language", "title", "text_hash", "given_request", "license", "status",
            "reject_reasons", "config_hash", "reader", "source_id", "attribution", "source_meta", "duplicate_of",
            "published_thinking"))

QUERIES = Table("queries", {
    "id": S, "document_id": S, "domain": S, "language": S, "query": S, "reference": S, "synthesized": B,
    "model": S, "raw_output": S, "status": S, "reject_reasons": LS, "prompt_tokens": I64, "completion_tokens": I64,
    "config_hash": S, "published_thinking": S,
}, lineage=("id", "document_id", "query", "synthesized", "model", "raw_output", "status", "reject_reasons",
            "prompt_tokens", "completion_tokens", "config_hash", "published_thinking"))

TRAJECTORIES = Table("trajectories", {
    "id": S, "query_id": S, "document_id": S, "domain": S, "rollout": I32, "status": S, "reject_reason": S,
    "query": S, "reference": S, "initial_score": F64, "final_score": F64, "initial_thinking": S,
    "final_thinking": S, "initial_closed": B, "num_steps": I32, "generator_model": S, "scorer_model": S,
    "prompt_set_version": S, "seed": I64, "prompt_tokens": I64, "completion_tokens": I64, "scored_tokens": I64,
    "generator_calls": I64, "scorer_calls": I64, "config_hash": S, "seconds": F64, "trace_json": S,
    # the query's published thinking (Parquet only, like query and reference; lineage has it on queries) and
    # its score under our scorer beside z0 and z* (sql/schema/012_published_score.sql)
    "published_thinking": S, "published_score": F64,
}, lineage=("id", "query_id", "document_id", "rollout", "status", "reject_reason", "initial_score", "final_score",
            "initial_thinking", "final_thinking", "num_steps", "generator_model", "scorer_model",
            "prompt_set_version", "seed", "prompt_tokens", "completion_tokens", "scored_tokens", "generator_calls",
            "scorer_calls", "config_hash", "trace_json", "published_score"))

SEARCH_STEPS = Table("search_steps", {
    "id": S, "trajectory_id": S, "step_index": I32, "segment": S, "choice": I32, "best_score": F64,
}, lineage=("id", "trajectory_id", "step_index", "segment", "choice", "best_score"))

CANDIDATES = Table("candidates", {
    "id": S, "step_id": S, "trajectory_id": S, "candidate_index": I32, "text": S, "raw": S, "score": F64,
    "completion_tokens": I64, "skipped_reason": S, "accepted": B,
}, lineage=("id", "step_id", "trajectory_id", "candidate_index", "text", "raw", "score", "completion_tokens",
            "skipped_reason", "accepted"))

DATASET_ROWS = Table("dataset_rows", {
    "id": S, "trajectory_id": S, "query_id": S, "document_id": S, "domain": S, "query": S, "thinking": S,
    "reference": S, "initial_score": F64, "final_score": F64, "status": S, "reject_reasons": LS, "config_hash": S,
}, lineage=("id", "trajectory_id", "query_id", "document_id", "domain", "status", "reject_reasons", "config_hash"))

BENCHMARK_RESULTS = Table("benchmark_results", {
    "id": S, "checkpoint_id": S, "model_label": S, "model": S, "benchmark": S, "prompt_id": S, "domain": S,
    "language": S, "required_length": I32, "output_length": I32, "length_score": F64, "format_ok": B,
    "heldout_nll": F64, "heldout_nll_own_thinking": F64, "output": S,
}, lineage=("id", "checkpoint_id", "model_label", "model", "benchmark", "prompt_id", "domain", "language",
            "required_length", "output_length", "length_score", "format_ok", "heldout_nll",
            "heldout_nll_own_thinking", "output"))

# one row per judge score (a quality judgment gives six, a failed judgment one row without a score)
JUDGE_SCORES = Table("judge_scores", {
    "id": S, "model_label": S, "benchmark": S, "item_id": S, "mode": S, "criterion": S, "score": F64,
    "reason": S, "verdict": S, "pair_winner": S, "status": S, "failure": S, "judged_text": S, "judge_model": S,
    "prompt_version": S, "sampling": S, "judged_at": S, "attempts": I64, "cached": B, "judgment_key": S,
}, lineage=("id", "model_label", "benchmark", "item_id", "mode", "criterion", "score", "reason", "verdict",
            "pair_winner", "status", "failure", "judged_text", "judge_model", "prompt_version", "sampling",
            "judged_at", "attempts", "judgment_key"))

# --- the built-in ablations (docs/experiments.md; DDL in sql/schema/002_experiments.sql) -------------
MESSAGES = pl.List(pl.Struct({"role": S, "content": S}))
LI32 = pl.List(pl.Int32)
LI64 = pl.List(pl.Int64)

# Parquet only (ablation_datasets): one row per accepted item and variant, in the one inference format
ABLATION_ROWS = Table("ablation_rows", {
    "id": S, "item_id": S, "variant": S, "domain": S, "trajectory_id": S, "query": S, "thinking": S, "answer": S,
    "edits": I32, "edited_segments": LI32, "messages": MESSAGES,
})

# Parquet only (ablation_checkpoints): one row per variant and seed; the checkpoint itself is in lineage ``checkpoints``
ABLATION_CHECKPOINTS = Table("ablation_checkpoints", {
    "id": S, "domain": S, "variant": S, "seed": I64, "status": S, "path": S, "base_model": S, "rows": I64,
    "steps": I64, "trained_tokens": I64, "assistant_tokens_per_row": F64, "train_loss": F64, "seconds": F64,
})

# Parquet only (ablation_results): one row per checkpoint and held-out prompt
ABLATION_RESULTS = Table("ablation_results", {
    "id": S, "domain": S, "variant": S, "seed": I64, "checkpoint_id": S, "prompt_id": S, "language": S,
    "required_length": I32, "output_length": I32, "length_score": F64, "format_ok": B, "heldout_nll": F64,
    "heldout_nll_own_thinking": F64, "judge_score": F64, "output": S,
})

EXPERIMENTS = Table("experiments", {
    "id": S, "domains": LS, "variants": LS, "seeds": LI64, "base_model": S, "budget_json": S, "models_json": S,
    "config_json": S,
}, lineage=("id", "domains", "variants", "seeds", "base_model", "budget_json", "models_json", "config_json"))

# kind: mean (a variant) | difference (variant ``a-b``, the paired difference a − b); domain ``all`` is overall
EXPERIMENT_RESULTS = Table("experiment_results", {
    "id": S, "experiment_id": S, "variant": S, "domain": S, "metric": S, "kind": S, "value": F64, "ci_low": F64,
    "ci_high": F64, "n": I64, "seeds": I32, "reading": S, "mde": F64, "n_needed": I64,
}, lineage=("id", "experiment_id", "variant", "domain", "metric", "kind", "value", "ci_low", "ci_high", "n", "seeds",
            "reading", "mde", "n_needed"))

TABLES: dict[str, Table] = {t.name: t for t in (DOCUMENTS, QUERIES, TRAJECTORIES, SEARCH_STEPS, CANDIDATES,
                                                DATASET_ROWS, BENCHMARK_RESULTS, JUDGE_SCORES, EXPERIMENTS,
                                                EXPERIMENT_RESULTS)}
# the tables that live in Parquet only (no lineage table of their own)
PARQUET_TABLES: dict[str, Table] = {t.name: t for t in (ABLATION_ROWS, ABLATION_CHECKPOINTS, ABLATION_RESULTS)}
