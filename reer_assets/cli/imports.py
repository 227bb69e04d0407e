"""`reer import official`: an official REER run's output files into lineage (docs/interop.md).

Every file is accounted for on stdout: imported (with its counts) or rejected (with its reason); with
``--input`` the run's input list names the items that have no file at all.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

LINEAGE_TABLES = ("documents", "queries", "trajectories", "search_steps", "candidates")


def import_official(paths: list[str], domain: str, input_path: str | None = None,
                    db_path: Path | None = None) -> dict[str, Any]:
    """Read the files, write their rows into lineage (one transaction) and return what became of each."""
    from reer_assets.core.ingest.official import expected_uids, import_paths
    from reer_assets.lib import duckdb_store
    from reer_assets.lib.lineage import stamp

    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"no such file or folder: {', '.join(missing)}")
    expected = expected_uids(Path(input_path)) if input_path else None
    batch = import_paths(paths, domain, expected)
    frames = batch.frames()
    run_id = f"import-{batch.digest}"  # the same files give the same run id: importing twice changes nothing
    written = duckdb_store.write_many({t: stamp(t, frames[t], run_id, domain) for t in LINEAGE_TABLES}, db_path) \
        if batch.trajectories else {t: 0 for t in LINEAGE_TABLES}
    return {"domain": domain, "run_id": run_id, "summary": batch.summary(), "lineage": written,
            "files": [r.as_dict() for r in batch.records]}


def cmd_import_official(args: argparse.Namespace) -> int:
    report = import_official(args.paths, args.domain, args.input)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        for record in report["files"]:
            where = record["file"] or f"uid {record['uid']}"
            if record["status"] == "imported":
                print(f"imported  {where}: uid {record['uid']}, {record['rollouts']} rollouts "
                      f"({record['rejected_rollouts']} rejected, {record['early_stops']} early stops), "
                      f"{record['steps']} steps, {record['candidates']} candidates")
            else:
                print(f"{record['status']:<9} {where}: {record['reason']}")
            for note in record["notes"]:
                print(f"          note: {note}")
        s = report["summary"]
        print(f"{s['imported']} imported, {s['rejected']} rejected, {s['absent']} absent; "
              f"{s['trajectories']} trajectories into lineage (domain {args.domain}, run {report['run_id']})",
              file=sys.stderr)
    return 0 if report["summary"]["imported"] else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``import official``."""
    imp = subparsers.add_parser("import", help="bring another tool's outputs into lineage").add_subparsers(
        dest="action", required=True)
    official = imp.add_parser("official", help="the official REER code's output files ({prefix}_{uid}_rk{rank}"
                              "_meta.jsonl): every file imported or rejected with its reason")
    official.add_argument("paths", nargs="+", metavar="PATH", help="files, or folders of *_meta.jsonl files")
    official.add_argument("--domain", required=True, help="the domain the rows belong to (lineage partition)")
    official.add_argument("--input", help="the run's input list (JSON with index, or Parquet with extra_info.index): "
                          "items without a file are reported as absent")
    official.add_argument("--json", action="store_true", help="one JSON document on stdout")
    official.set_defaults(func=cmd_import_official)
