"""filtered_dataset (per domain) and sft_dataset (all domains): the data a model is trained on."""


from typing import Optional

import dagster as dg
import polars as pl

from reer_assets.core.chat_format import to_chat
from reer_assets.core.curation import FilterConfig, filter_trajectories
from reer_assets.core.ids import config_hash, stable_id
from reer_assets.lib.domains import domain_names
from reer_assets.defs.automation import after_upstream
from reer_assets.defs.partitions import domain_partitions
from reer_assets.defs.resources import LineageResource
from reer_assets.defs.stage import run_stage, upstream
from reer_assets.lib import fingerprints, prompt_sets, storage
from reer_assets.lib.dataset_card import render_card
from reer_assets.lib.metadata import counts_table, mean, preview, reason_counts
from reer_assets.lib.run_config import ProfiledConfig

class FilterRunConfig(ProfiledConfig):
    """Filter thresholds; unset fields come from the profile's ``filters`` section (then FilterConfig defaults)."""

    section = "filters"
    max_tail_cues: Optional[int] = None
    max_top3_trigram_share: Optional[float] = None
    min_thinking_units: Optional[int] = None
    max_thinking_units: Optional[int] = None
    max_copy_chars: Optional[int] = None
    minhash_threshold: Optional[float] = None
    reject_malformed_tags: Optional[bool] = None
    max_final_score: Optional[float] = None
    require_improvement: Optional[bool] = None

    def filter_config(self) -> FilterConfig:
        return FilterConfig(**self.resolved())


@dg.asset(
    code_version="1",
    partitions_def=domain_partitions,
    deps=["refined_trajectories"],
    group_name="curation",
    pool="duckdb",
    kinds={"polars", "duckdb"},
    automation_condition=after_upstream,
)
def filtered_dataset(context: dg.AssetExecutionContext, config: FilterRunConfig, lineage: LineageResource) -> dg.MaterializeResult:
    """Refined trajectories after the quality filters of docs/algorithm.md: unconcluded thinking,
    trigram repetition, length bounds, copying the reference, malformed tags, language mismatch,
    near-duplicate query or reference (MinHash), and optionally a score bound or no improvement.

    Every trajectory keeps a row; rejected rows carry all their ``reject_reasons``. Partitioned by
    domain; Parquet at ``reer/assets/filtered_dataset/<domain>/dataset.parquet``; lineage table
    ``dataset_rows`` (view ``row_provenance`` traces each row back to its document).
    """
    domain = context.partition_key
    filters = config.filter_config()
    cfg_hash = config_hash(filters.to_dict())

    def curate(paths):
        frame = filter_trajectories(storage.read_output("refined_trajectories", "trajectories", domain), filters, cfg_hash)
        storage.write_parquet(frame, paths["dataset"])
        accepted = int((frame["status"] == "accepted").sum())
        return {"trajectories": frame.height, "accepted": accepted, "rejected": frame.height - accepted,
                "filters": filters.to_dict()}

    run = run_stage(context, "filtered_dataset", (upstream("refined_trajectories", domain), cfg_hash), curate,
                    lineage=lineage, tables={"dataset_rows": "dataset"})
    frame = run.read("dataset")
    accepted = frame.filter(pl.col("status") == "accepted")
    context.log.info(f"[{domain}] filter funnel: {frame.height} trajectories, {accepted.height} accepted")
    return run.result(frame.height, {
        "accepted": accepted.height,
        "rejected": frame.height - accepted.height,
        "reject_reasons": counts_table(reason_counts(frame)),
        "mean_final_score_accepted": mean(accepted, "final_score"),
        "filter_config": filters.to_dict(),
        "preview": preview(frame, ["document_id", "status", "reject_reasons", "final_score", "thinking"]),
    })


@dg.asset(
    code_version="1",
    deps=[dg.AssetDep("filtered_dataset", partition_mapping=dg.AllPartitionMapping())],
    group_name="curation",
    pool="duckdb",
    kinds={"polars", "duckdb"},
)
def sft_dataset(context: dg.AssetExecutionContext, lineage: LineageResource) -> dg.MaterializeResult:
    """The accepted rows of every materialised domain in chat format (``messages``: system, the
    standard inference prompt for the query, assistant = ``<think>…</think><answer>…</answer>``,
    the one format the scorer read), as Parquet and JSONL with a dataset
    card (counts per domain, score statistics, filter funnel). Unpartitioned; versioned by the
    hash of its rows under ``reer/datasets/sft/<version>/``; lineage tables ``datasets`` and
    ``dataset_members``.
    """
    domains = [d for d in domain_names() if storage.output_path("filtered_dataset", "dataset", d).exists()]
    if not domains:
        raise dg.Failure("no filtered_dataset partition has been materialised yet")
    full = pl.concat([storage.read_output("filtered_dataset", "dataset", d) for d in domains])
    accepted = full.filter(pl.col("status") == "accepted").sort("id")
    prompt_set = prompt_sets.from_settings()  # REER_PROMPTS renders the rows' system and user turns
    version = stable_id("sft", accepted["id"].to_list(), prompt_set.identity)
    folder = storage.dataset_dir("sft", version)
    with prompt_sets.in_force(prompt_set):
        chat = to_chat(accepted)
    filter_settings = {d: (fingerprints.stored("filtered_dataset", d) or {}).get("summary", {}).get("filters")
                       for d in domains}
    card = render_card(version, full, accepted, filter_settings)

    def publish(paths):
        folder.mkdir(parents=True, exist_ok=True)
        chat.write_parquet(folder / "train.parquet")
        chat.write_ndjson(folder / "train.jsonl")
        (folder / "README.md").write_text(card, encoding="utf-8")
        storage.write_pointer("sft_dataset", {"version": version, "path": str(folder), "rows": chat.height})
        lineage.write({
            "datasets": pl.DataFrame([{
                "id": version, "name": "sft", "row_count": chat.height, "parquet_path": str(folder / "train.parquet"),
                "jsonl_path": str(folder / "train.jsonl"), "card_path": str(folder / "README.md"),
                "run_id": context.run.run_id,
            }]),
            "dataset_members": pl.DataFrame({"dataset_id": [version] * chat.height, "dataset_row_id": chat["id"].to_list()},
                                            schema={"dataset_id": pl.String, "dataset_row_id": pl.String}),
        })
        return {"version": version, "rows": chat.height}

    run = run_stage(context, "sft_dataset", ([upstream("filtered_dataset", d) for d in domains], prompt_set.identity),
                    publish)
    per_domain = dict(accepted.group_by("domain").len().sort("domain").iter_rows())
    context.log.info(f"sft_dataset {version}: {chat.height} rows from {len(domains)} domains")
    return run.result(chat.height, {
        "version": version,
        "domains": counts_table(per_domain, "domain", "rows"),
        "mean_final_score": mean(accepted, "final_score"),
        "card": dg.MetadataValue.md(card),
        "dataset_path": dg.MetadataValue.path(str(folder)),
    })
