"""lineage_compaction: merge fragments-mode lineage into one Parquet file per table."""

import dagster as dg

from reer_assets.lib import duckdb_store
from reer_assets.lib.metadata import counts_table


@dg.asset(code_version="1", group_name="lineage", pool="duckdb", kinds={"duckdb", "parquet"})
def lineage_compaction(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """With ``REER_LINEAGE_MODE=fragments``, every lineage write appends Parquet fragments under
    ``<storage root>/lineage/<table>/``; this merges each table's fragments into one file, de-duplicated
    by id (the newest row of an id wins, as in the DuckDB file), and deletes the merged fragments.
    Fragments written while it runs are kept for the next compaction; running it twice changes nothing.
    In ``single`` mode (the DuckDB file) there is nothing to compact and it records that.
    Unpartitioned; in the pool ``duckdb`` so that one compaction runs at a time.
    """
    mode = duckdb_store.lineage_mode()
    if mode != "fragments":
        context.log.info("lineage mode is single (one DuckDB file): nothing to compact")
        return dg.MaterializeResult(metadata={"mode": mode, "tables": 0})
    root = duckdb_store.fragments_root()
    report = duckdb_store.compact(root)
    merged = sum(t["files_merged"] for t in report.values())
    context.log.info(f"lineage compaction under {root}: {merged} files merged into {len(report)} tables")
    return dg.MaterializeResult(metadata={
        "mode": mode,
        "root": str(root),
        "tables": len(report),
        "files_merged": merged,
        "rows": counts_table({t: r["rows"] for t, r in sorted(report.items())}, "table", "rows"),
        "files_before": counts_table({t: r["files_before"] for t, r in sorted(report.items())}, "table", "files"),
    })
