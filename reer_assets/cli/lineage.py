"""`reer lineage`: read-only SQL over the lineage database, the chain behind a dataset row, named reports."""

from __future__ import annotations

import argparse
import json

from reer_assets.cli.common import err


def _print_table(frame) -> None:
    import polars as pl

    with pl.Config(tbl_rows=200, tbl_cols=30, fmt_str_lengths=60, tbl_width_chars=200):
        print(frame)


def cmd_lineage_sql(args: argparse.Namespace) -> int:
    import duckdb

    from reer_assets.lib.duckdb_store import query

    try:
        frame = query(args.sql)
    except duckdb.Error as exc:
        err(f"reer: SQL error: {exc}")
        return 2
    if args.json:
        print(frame.write_json())
    else:
        _print_table(frame)
    return 0


def cmd_lineage_trace(args: argparse.Namespace) -> int:
    from reer_assets.lib.duckdb_store import named_query, query

    frame = query(named_query("trace_row"), [args.row_id])
    if frame.is_empty():
        err(f"no dataset row {args.row_id!r} in the lineage database")
        return 1
    row = frame.row(0, named=True)
    if args.json:
        print(json.dumps(row, default=str, ensure_ascii=False, indent=2))
        return 0
    chain = [
        ("dataset row", f"{row['dataset_row_id']} [{row['row_status']}] {row['reject_reasons'] or ''}".strip()),
        ("trajectory", f"{row['trajectory_id']} score {row['initial_score']} -> {row['final_score']} "
                       f"({row['num_steps']} steps; generator {row['generator_model']}, scorer {row['scorer_model']})"),
        ("query", f"{row['query_id']} ({'synthesized' if row['synthesized'] else 'given'}): {str(row['query'])[:100]}"),
        ("document", f"{row['document_id']} {row['title']!r} [{row['language']}] domain {row['domain']}"),
        ("source", f"{row['source_uri']}"),
    ]
    for label, text in chain:
        print(f"{label:>12}  {text}")
    return 0


def cmd_lineage_report(args: argparse.Namespace) -> int:
    import polars as pl

    from reer_assets.lib.duckdb_store import report

    sections = report(args.name)
    if args.json:
        print(json.dumps({"report": args.name, "sections": sections}, default=str, ensure_ascii=False))
        return 0
    for section in sections:
        print(f"## {section['name']}\n{section['description']}")
        _print_table(pl.DataFrame(section["rows"]) if section["rows"] else pl.DataFrame({"(no rows)": []}))
        print()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lineage sql``, ``lineage trace`` and ``lineage report``."""
    lineage = subparsers.add_parser("lineage", help="query the lineage database").add_subparsers(dest="action", required=True)
    lsql = lineage.add_parser("sql", help="run a read-only SQL query and print a table")
    lsql.add_argument("sql")
    lsql.add_argument("--json", action="store_true")
    lsql.set_defaults(func=cmd_lineage_sql)
    ltrace = lineage.add_parser("trace", help="print the chain behind a dataset row")
    ltrace.add_argument("row_id")
    ltrace.add_argument("--json", action="store_true")
    ltrace.set_defaults(func=cmd_lineage_trace)
    lreport = lineage.add_parser("report", help="a named report: the SQL files under sql/queries/<name>/")
    lreport.add_argument("name", choices=["search"])
    lreport.add_argument("--json", action="store_true")
    lreport.set_defaults(func=cmd_lineage_report)
