"""raw_documents: the domain's sources, normalised and de-duplicated, rejects kept."""


from typing import Optional

import dagster as dg

from reer_assets.core.ids import config_hash
from reer_assets.defs.partitions import domain_partitions
from reer_assets.defs.resources import LineageResource
from reer_assets.lib import fingerprints
from reer_assets.lib.domains import domain_spec
from reer_assets.lib.lineage import stamp
from reer_assets.lib.ingest import CleaningConfig, domain_cleaning, ingest_domain
from reer_assets.lib.metadata import counts_table, preview, reason_counts
from reer_assets.lib.paths import asset_dir


class IngestConfig(dg.Config):
    """Cleaning defaults for every domain; a domain's ``cleaning:`` block in domains.yaml overrides them."""

    min_units: int = 50
    max_units: int = 20000
    min_chars: int = 0
    max_chars: Optional[int] = None
    near_duplicate_threshold: Optional[float] = 0.85
    minhash_num_perm: int = 64


@dg.asset(
    partitions_def=domain_partitions,
    group_name="ingest",
    pool="duckdb",
    kinds={"polars", "duckdb"},
)
def raw_documents(context: dg.AssetExecutionContext, config: IngestConfig, lineage: LineageResource) -> dg.MaterializeResult:
    """Documents of one domain read from its configured sources (domains.yaml: bundled corpus,
    prompt/story pairs, Gutenberg books, REER JSON, generic JSONL/Parquet/Markdown) and its inbox folder.

    Text is NFC-normalised with control characters removed and whitespace collapsed; the language
    is identified (lingua). Unreadable records, empty, too short/long, disallowed-language, exact
    and near (MinHash) duplicate records are kept with ``status='rejected'`` and their
    ``reject_reasons`` (duplicates name the kept document in ``duplicate_of``). Partitioned by
    domain; Parquet at ``reer/assets/raw_documents/<domain>/documents.parquet``; rows in lineage
    table ``documents``.
    """
    domain = context.partition_key
    spec = domain_spec(domain)
    base = CleaningConfig(config.min_units, config.max_units, config.min_chars, config.max_chars,
                          config.near_duplicate_threshold, config.minhash_num_perm)
    cleaning, allowed = domain_cleaning(spec, base)
    cfg_hash = config_hash({**cleaning.to_dict(), "languages": allowed})
    frame = ingest_domain(domain, spec, cleaning, cfg_hash)
    out = asset_dir("raw_documents", domain) / "documents.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    fingerprint = fingerprints.compute("raw_documents", cfg_hash, frame["id"].to_list(), frame["status"].to_list())
    reused = fingerprints.is_current("raw_documents", domain, fingerprint, [out])
    if not reused:
        frame.write_parquet(out)
        lineage.write({"documents": stamp("documents", frame, context.run.run_id, domain)})
    accepted = int((frame["status"] == "accepted").sum())
    summary = {"rows": frame.height, "accepted": accepted, "rejected": frame.height - accepted}
    fingerprints.save("raw_documents", domain, fingerprint, summary)
    context.log.info(f"[{domain}] {summary} ({'reused' if reused else 'written'})")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": frame.height,
            "accepted": accepted,
            "rejected": frame.height - accepted,
            "reused": reused,
            "languages": counts_table(dict(frame.group_by("language").len().iter_rows()), "language"),
            "reject_reasons": counts_table(reason_counts(frame)),
            "readers": counts_table(dict(frame.group_by("reader").len().iter_rows()), "reader"),
            "preview": preview(frame, ["id", "language", "title", "status", "reject_reasons", "source_uri"]),
            "path": dg.MetadataValue.path(str(out)),
        },
        data_version=dg.DataVersion(fingerprint),
    )
