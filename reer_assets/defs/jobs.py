"""A job per stage, the per-domain pipeline and the end-to-end model job."""

import dagster as dg

ingest_job = dg.define_asset_job("ingest_job", selection=["raw_documents"])
synthesis_job = dg.define_asset_job("synthesis_job", selection=["synthesized_queries"])
refinement_job = dg.define_asset_job("refinement_job", selection=["refined_trajectories"])
curation_job = dg.define_asset_job("curation_job", selection=["filtered_dataset"])
dataset_job = dg.define_asset_job("dataset_job", selection=["sft_dataset"])
training_job = dg.define_asset_job("training_job", selection=["base_model", "finetuned_checkpoint"])
evaluation_job = dg.define_asset_job("evaluation_job", selection=["benchmark_scores"])

# One domain from raw text to filtered rows (what a backfill runs per partition), starting with its plan
# (run_plan: calls and tokens per stage, docs/cost.md; it calls no model).
domain_pipeline_job = dg.define_asset_job(
    "domain_pipeline_job",
    selection=["run_plan", "raw_documents", "synthesized_queries", "refined_trajectories", "filtered_dataset"],
)
# Everything after the per-domain stages: dataset, fine-tuning, benchmarks.
model_pipeline_job = dg.define_asset_job(
    "model_pipeline_job", selection=["sft_dataset", "base_model", "finetuned_checkpoint", "benchmark_scores"]
)
# The built-in ablations of one domain (a partition; backfill it for every domain), and the report over every
# materialised domain, which each run refreshes (docs/experiments.md).
experiment_job = dg.define_asset_job(
    "experiment_job", selection=["ablation_datasets", "ablation_checkpoints", "ablation_results", "experiment_report"]
)

ALL_JOBS = [ingest_job, synthesis_job, refinement_job, curation_job, dataset_job, training_job, evaluation_job,
            domain_pipeline_job, model_pipeline_job, experiment_job]
