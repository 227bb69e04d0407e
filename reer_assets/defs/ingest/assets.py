"""raw_documents: the domain's sources, normalised and de-duplicated, rejects kept."""


from typing import Optional

import dagster as dg

from reer_assets.core.ids import config_hash
from reer_assets.core.ingest.pipeline import CleaningConfig, domain_cleaning, ingest_domain
from reer_assets.defs.automation import ingest_freshness, ingest_refresh
from reer_assets.defs.partitions import domain_partitions
from reer_assets.defs.resources import LineageResource
from reer_assets.defs.stage import run_stage
from reer_assets.lib import storage
from reer_assets.lib.domains import domain_spec, source_places
from reer_assets.lib.metadata import counts_table, preview, reason_counts
from reer_assets.lib.run_config import RunConfig


class IngestConfig(RunConfig):
    """Cleaning defaults for every domain; a domain's ``cleaning:`` block in domains.yaml overrides them."""

    min_units: int = 50
    max_units: int = 20000
    min_chars: int = 0
    max_chars: Optional[int] = None
    near_duplicate_threshold: Optional[float] = 0.85
    minhash_num_perm: int = 64


@dg.asset(
    code_version="1",
    partitions_def=domain_partitions,
    group_name="ingest",
    pool="duckdb",
    kinds={"polars", "duckdb"},
    automation_condition=ingest_refresh,
    freshness_policy=ingest_freshness,
)
def raw_documents(context: dg.AssetExecutionContext, config: IngestConfig, lineage: LineageResource) -> dg.MaterializeResult:
    """Documents of one domain read from its configured sources (domains.yaml: bundled corpus,
    prompt/story pairs, Gutenberg books, REER JSON, generic JSONL/Parquet/Markdown) and its inbox folder.

    Text is NFC-normalised with control characters removed and whitespace collapsed; the language
    is identified (lingua). Unreadable records, unsupported files, empty, too short/long,
    disallowed-language, exact and near (MinHash) duplicate records are kept with
    ``status='rejected'`` and their ``reject_reasons`` (duplicates name the kept document in
    ``duplicate_of``). Partitioned by domain; Parquet at
    ``reer/assets/raw_documents/<domain>/documents.parquet``; rows in lineage table ``documents``.
    """
    domain = context.partition_key
    spec = domain_spec(domain)
    cleaning, allowed = domain_cleaning(spec, CleaningConfig(**config.model_dump()))
    cfg_hash = config_hash({**cleaning.to_dict(), "languages": allowed})
    # reading the sources is cheap and tells whether they changed: the fingerprint covers what was read
    frame = ingest_domain(domain, spec, cleaning, cfg_hash, source_places())

    def write(paths):
        storage.write_parquet(frame, paths["documents"])
        return _summary(frame)

    run = run_stage(context, "raw_documents", (cfg_hash, frame["id"].to_list(), frame["status"].to_list()),
                    produce=write, lineage=lineage, tables={"documents": "documents"})
    summary = _summary(frame)
    context.log.info(f"[{domain}] {summary} ({'reused' if run.reused else 'written'})")
    return run.result(frame.height, {
        "accepted": summary["accepted"],
        "rejected": summary["rejected"],
        "languages": counts_table(dict(frame.group_by("language").len().iter_rows()), "language"),
        "reject_reasons": counts_table(reason_counts(frame)),
        "readers": counts_table(dict(frame.group_by("reader").len().iter_rows()), "reader"),
        "preview": preview(frame, ["id", "language", "title", "status", "reject_reasons", "source_uri"]),
    })


def _summary(frame) -> dict:
    accepted = int((frame["status"] == "accepted").sum())
    return {"rows": frame.height, "accepted": accepted, "rejected": frame.height - accepted}
