"""synthesized_queries: the request behind each document, given or back-synthesized."""


from typing import Optional

import dagster as dg

from reer_assets.core.ids import config_hash
from reer_assets.core.synthesis import QueryQC
from reer_assets.defs.automation import after_upstream
from reer_assets.defs.partitions import domain_partitions
from reer_assets.defs.resources import LineageResource, ModelBackendResource, WorkloadRunner
from reer_assets.defs.stage import run_stage, upstream
from reer_assets.lib import prompt_sets, storage
from reer_assets.lib.metadata import counts_table, preview, reason_counts
from reer_assets.lib.profiles import profile_name
from reer_assets.lib.run_config import SamplingConfig, SeedConfig


class SynthesisConfig(SamplingConfig, SeedConfig):
    """Sampling for back-synthesis; unset fields come from the profile's ``synthesis`` section."""

    section = "synthesis"
    max_query_chars: int = 600
    max_copy_chars: int = 60
    # True/False overrides REER_GENERATOR_BATCH for this run: the requests as one batch (docs/scale.md, "Batch mode");
    # how the calls are made, not what they ask, so it is not part of the config hash
    batch: Optional[bool] = None


@dg.asset(
    code_version="1",
    partitions_def=domain_partitions,
    deps=["raw_documents"],
    group_name="synthesis",
    pool="gpu",
    kinds={"python", "duckdb"},
    automation_condition=after_upstream,
)
def synthesized_queries(
    context: dg.AssetExecutionContext,
    config: SynthesisConfig,
    generator: ModelBackendResource,
    lineage: LineageResource,
    runner: WorkloadRunner,
) -> dg.MaterializeResult:
    """One request per accepted document: documents that came with a request keep it, the others
    get one written by the generator from the text (a "reverse" prompt, in the text's language).

    Every request is checked (empty, too long, copies the text, wrong language); rejects keep
    their reasons. Records whether the request was synthesized and by which model, with the raw
    output, and carries the document's ``published_thinking`` (the source's own thinking, when it
    had one) onto its query. Runs out of process (workload ``synthesis``, pool ``gpu``). Partitioned
    by domain; Parquet at ``reer/assets/synthesized_queries/<domain>/queries.parquet``; lineage table ``queries``.
    """
    domain = context.partition_key
    settings = config.resolved()
    batch = settings.pop("batch", None)
    qc = QueryQC(max_chars=settings.pop("max_query_chars"), max_copy_chars=settings.pop("max_copy_chars"))
    run_config = {**settings, "qc": qc.to_dict()}
    prompt_set = prompt_sets.from_settings()  # REER_PROMPTS: its identity keys the hash, its text goes to the workload
    cfg_hash = config_hash({**run_config, "generator": generator.model_id(), "prompts": prompt_set.identity})

    def synthesize(paths):
        return runner.run(context, "synthesis", {
            "documents": str(storage.output_path("raw_documents", "documents", domain)),
            "out": str(paths["queries"]),
            "work": str(storage.work_dir("synthesized_queries", domain, cfg_hash)),
            "config": run_config,
            "config_hash": cfg_hash,
            **prompt_sets.extras(prompt_set),
        }, env={**generator.workload_env(), **({} if batch is None else {"REER_GENERATOR_BATCH": str(batch)})})

    run = run_stage(context, "synthesized_queries", (upstream("raw_documents", domain), cfg_hash), synthesize,
                    lineage=lineage, tables={"queries": "queries"})
    frame = run.read("queries")
    accepted = int((frame["status"] == "accepted").sum())
    context.log.info(f"[{domain}] {frame.height} queries, {accepted} accepted, profile {profile_name(config.profile)}")
    return run.result(frame.height, {
        "accepted": accepted,
        "synthesized": int(frame["synthesized"].sum()),
        "given": int((~frame["synthesized"]).sum()),
        # outputs written before the column existed have none
        "with_published_thinking": int(frame["published_thinking"].is_not_null().sum())
        if "published_thinking" in frame.columns else 0,
        "workload": run.summary,
        "generator": generator.model_id(),
        "reject_reasons": counts_table(reason_counts(frame)),
        "preview": preview(frame, ["document_id", "synthesized", "status", "query"], width=120),
    })
