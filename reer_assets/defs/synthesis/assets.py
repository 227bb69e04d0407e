"""synthesized_queries: the request behind each document, given or back-synthesized."""


from typing import Optional

import dagster as dg
import polars as pl

from reer_assets.core.ids import config_hash
from reer_assets.core.query_qc import QueryQC
from reer_assets.defs.partitions import domain_partitions
from reer_assets.defs.resources import LineageResource, ModelBackendResource
from reer_assets.defs.workload_runner import run_workload
from reer_assets.lib import fingerprints
from reer_assets.lib.lineage import stamp
from reer_assets.lib.metadata import counts_table, preview, reason_counts
from reer_assets.lib.paths import asset_dir, work_dir
from reer_assets.lib.profiles import profile, profile_name


class SynthesisConfig(dg.Config):
    profile: Optional[str] = None
    temperature: Optional[float] = None
    max_tokens: Optional[int] = None
    seed: int = 0
    max_query_chars: int = 600
    max_copy_chars: int = 60


@dg.asset(
    partitions_def=domain_partitions,
    deps=["raw_documents"],
    group_name="synthesis",
    pool="gpu",
    kinds={"python", "duckdb"},
)
def synthesized_queries(
    context: dg.AssetExecutionContext,
    config: SynthesisConfig,
    generator: ModelBackendResource,
    lineage: LineageResource,
    pipes: dg.PipesSubprocessClient,
) -> dg.MaterializeResult:
    """One request per accepted document: documents that came with a request keep it, the others
    get one written by the generator from the text (a "reverse" prompt, in the text's language).

    Every request is checked (empty, too long, copies the text, wrong language); rejects keep
    their reasons. Records whether the request was synthesized and by which model, with the raw
    output. Runs out of process (workload ``synthesize``, pool ``gpu``). Partitioned by domain;
    Parquet at ``reer/assets/synthesized_queries/<domain>/queries.parquet``; lineage table ``queries``.
    """
    domain = context.partition_key
    settings = {**profile(config.profile)["synthesis"],
                **{k: v for k, v in {"temperature": config.temperature, "max_tokens": config.max_tokens}.items() if v is not None}}
    qc = QueryQC(max_chars=config.max_query_chars, max_copy_chars=config.max_copy_chars)
    run_config = {**settings, "seed": config.seed, "qc": qc.to_dict()}
    cfg_hash = config_hash({**run_config, "generator": generator.model_id()})
    fingerprint = fingerprints.compute("synthesized_queries", fingerprints.upstream("raw_documents", domain), cfg_hash)
    out = asset_dir("synthesized_queries", domain) / "queries.parquet"
    reused = fingerprints.is_current("synthesized_queries", domain, fingerprint, [out])
    summary: dict = {}
    if not reused:
        summary = run_workload(context, pipes, "synthesize", {
            "documents": str(asset_dir("raw_documents", domain) / "documents.parquet"),
            "out": str(out),
            "work": str(work_dir("synthesized_queries", domain, cfg_hash)),
            "config": run_config,
            "config_hash": cfg_hash,
        }, env=generator.workload_env())
    frame = pl.read_parquet(out)
    if not reused:
        lineage.write({"queries": stamp("queries", frame, context.run.run_id, domain)})
    accepted = int((frame["status"] == "accepted").sum())
    fingerprints.save("synthesized_queries", domain, fingerprint, {"rows": frame.height, "accepted": accepted})
    context.log.info(f"[{domain}] {frame.height} queries, {accepted} accepted, profile {profile_name(config.profile)}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": frame.height,
            "accepted": accepted,
            "synthesized": int(frame["synthesized"].sum()),
            "given": int((~frame["synthesized"]).sum()),
            "reused": reused,
            "workload": summary,
            "generator": generator.model_id(),
            "reject_reasons": counts_table(reason_counts(frame)),
            "preview": preview(frame, ["document_id", "synthesized", "status", "query"], width=120),
            "path": dg.MetadataValue.path(str(out)),
        },
        data_version=dg.DataVersion(fingerprint),
    )
