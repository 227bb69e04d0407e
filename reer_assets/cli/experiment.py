"""`reer experiment`: the built-in ablations' results from the lineage database (docs/experiments.md).

    reer experiment report [--experiment ID] [--json | --markdown]

``--json`` prints one JSON document, ``{"experiment_id": ..., "rows": [...]}``, the rows of
``experiment_results`` of that experiment (default: the most recently recorded one); ``--markdown`` (the
default) prints its report, rendered from the same rows by the function ``experiment_report`` uses. Exits 1
when there is no such experiment (the JSON form still prints a document, with no rows).

Registered by :func:`register` (``reer_assets/cli/main.py``); heavy imports stay inside the command so
``reer --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from reer_assets.cli.common import err

ORDER = ("ORDER BY domain = 'all' DESC, domain, kind DESC, variant, metric")


def find_experiment(experiment_id: str | None) -> dict[str, Any] | None:
    """The ``experiments`` row of ``experiment_id``, or the latest recorded one; None when there is none."""
    import duckdb

    from reer_assets.lib.duckdb_store import query

    try:
        if experiment_id:
            frame = query("SELECT * FROM experiments WHERE id = ?", [experiment_id])
        else:
            frame = query("SELECT * FROM experiments ORDER BY recorded_at DESC, id LIMIT 1")
    except duckdb.CatalogException:  # a lineage file from before the experiments tables: nothing recorded
        return None
    return frame.row(0, named=True) if frame.height else None


def experiment_rows(experiment_id: str) -> list[dict[str, Any]]:
    from reer_assets.lib.duckdb_store import query

    return query(f"SELECT * FROM experiment_results WHERE experiment_id = ? {ORDER}", [experiment_id]).to_dicts()


def cmd_experiment_report(args: argparse.Namespace) -> int:
    from reer_assets.core.experiments import render_report

    experiment = find_experiment(args.experiment)
    if experiment is None:
        err(f"reer: no experiment {args.experiment!r} in the lineage database" if args.experiment else
            "reer: no experiment in the lineage database yet: materialise experiment_report (experiment_job)")
        if args.json:
            print(json.dumps({"experiment_id": args.experiment, "rows": []}))
        return 1
    rows = experiment_rows(experiment["id"])
    if args.json:
        print(json.dumps({"experiment_id": experiment["id"], "rows": rows}, default=str, ensure_ascii=False))
    else:
        print(render_report(experiment, rows), end="")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``experiment report``."""
    ex = subparsers.add_parser("experiment", help="the built-in ablations (searched vs initial vs random edits …)"
                               ).add_subparsers(dest="action", required=True)
    report = ex.add_parser("report", help="an experiment's results from lineage: JSON rows or the Markdown report")
    report.add_argument("--experiment", metavar="ID", help="an experiments.id (default: the latest recorded)")
    form = report.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help='one JSON document: {"experiment_id": ..., "rows": [...]}')
    form.add_argument("--markdown", action="store_true", help="the Markdown report (the default)")
    report.set_defaults(func=cmd_experiment_report)
