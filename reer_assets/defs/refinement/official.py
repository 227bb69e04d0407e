"""refined_trajectories from an official REER run instead of a search (config ``official_outputs``).

A domain whose trajectories came from the official code gets them through the same asset and the same
Parquet outputs as a searched domain, so ``filtered_dataset``, ``sft_dataset``, the analytics SQL and
the experiments read them unchanged. No model is called; the fingerprint is the files' content, so an
unchanged folder is reused and a grown one (a resumed official run) is imported again. docs/interop.md.
"""

from __future__ import annotations

import dagster as dg
import polars as pl

from reer_assets.core.ids import config_hash
from reer_assets.core.ingest.official import SOURCE, import_paths
from reer_assets.defs.resources import LineageResource
from reer_assets.defs.stage import run_stage
from reer_assets.lib import storage
from reer_assets.lib.lineage import stamp
from reer_assets.lib.metadata import counts_table, mean, preview


def import_partition(context: dg.AssetExecutionContext, folder: str, lineage: LineageResource) -> dg.MaterializeResult:
    """Import ``folder``'s official files as this domain's refined_trajectories; every file's fate in the metadata."""
    domain = context.partition_key
    if not storage.exists(folder):
        raise dg.Failure(f"[{domain}] official_outputs: no such folder {folder}")
    batch = import_paths([folder], domain)
    if not batch.trajectories:
        reasons = "; ".join(f"{r.file}: {r.reason}" for r in batch.records[:5]) or "no *_meta.jsonl file"
        raise dg.Failure(f"[{domain}] nothing importable in {folder}: {reasons}")
    frames = batch.frames()

    def write(paths):
        for name in ("trajectories", "search_steps", "candidates"):
            storage.write_parquet(frames[name], paths[name])
        # the rows the trajectories point at, so row_provenance reaches the official file
        lineage.write({t: stamp(t, frames[t], context.run.run_id, domain) for t in ("documents", "queries")})
        return {**batch.summary(), "files_report": [r.as_dict() for r in batch.records]}

    cfg_hash = config_hash({"imported": SOURCE, "files": batch.digest})
    run = run_stage(context, "refined_trajectories", (cfg_hash,), write, lineage=lineage,
                    tables={"trajectories": "trajectories", "search_steps": "search_steps", "candidates": "candidates"})
    frame = run.read("trajectories")
    ok = frame.filter(pl.col("status") == "ok")
    status = {r.status: 0 for r in batch.records}
    for record in batch.records:
        status[record.status] += 1
    context.log.info(f"[{domain}] imported {len(batch.trajectories)} trajectories from {folder}: {status}")
    rejected = [r for r in batch.records if r.status != "imported"]
    return run.result(frame.height, {
        "imported_from": dg.MetadataValue.path(folder),
        "files": counts_table(status, "file status"),
        "rejected_files": dg.MetadataValue.md("\n".join(f"- `{r.file}`: {r.reason}" for r in rejected) or "_none_"),
        "rejected_rollouts": int((frame["status"] == "rejected").sum()),
        "mean_initial_score": mean(ok, "initial_score"),
        "mean_final_score": mean(ok, "final_score"),
        "preview": preview(frame, ["document_id", "status", "initial_score", "final_score", "num_steps",
                                   "final_thinking"]),
    })
