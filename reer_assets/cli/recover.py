"""`reer recover`: list the runs whose worker died (run id, pid, the pool slots they hold), mark them failed and
free their slots (:func:`reer_assets.runtime.recovery.recover_report`); README, "Troubleshooting"."""

from __future__ import annotations

import argparse
import json

from reer_assets import settings
from reer_assets.cli.common import err


def cmd_recover(args: argparse.Namespace) -> int:
    """``reer recover [--json] [--dry-run] [--run RUN_ID]``."""
    import dagster as dg

    from reer_assets.runtime.recovery import recover_report

    if not settings.dagster_home_is_set():
        err("reer: error: set DAGSTER_HOME to the instance folder (e.g. DAGSTER_HOME=$PWD/dagster_home)")
        return 2
    with dg.DagsterInstance.get() as instance:
        report = recover_report(instance, dry_run=args.dry_run, force=tuple(args.run or ()))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    runs = report["dead_runs"]
    if not runs:
        print(f"no dead runs in {report['dagster_home']}")
    for entry in runs:
        slots = ", ".join(f"{s['pool']} {s['state']} by {s['step_key']}" for s in entry["slots"]) or "no pool slots"
        did = ("would mark failed and free" if report["dry_run"] else
               ("marked failed; freed" if entry["marked_failed"] else "freed"))
        print(f"{entry['run_id']}  {entry['status'] or '-'}  pid {entry['pid'] or '-'}: {entry['reason']}\n"
              f"    holds: {slots}\n    {did}: {slots if entry['slots'] or report['dry_run'] else 'nothing held'}")
    if report["pools"]:
        print("pool slots now held: " + "; ".join(f"{p['pool']} {p['state']} by run {p['run_id']}"
                                                  for p in report["pools"]))
    if not report["hook"]:
        err("note: this instance's dagster.yaml does not name ReerInstance, so blocked steps do not reclaim "
            "dead runs on their own")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``recover``."""
    recover = subparsers.add_parser("recover", help="mark runs whose worker died as failed and free their pool slots")
    recover.add_argument("--json", action="store_true", help="print one JSON document")
    recover.add_argument("--dry-run", action="store_true", help="only list the dead runs and what they hold")
    recover.add_argument("--run", action="append", metavar="RUN_ID",
                         help="reclaim this run too, even if its worker cannot be seen as dead (repeatable)")
    recover.set_defaults(func=cmd_recover)
