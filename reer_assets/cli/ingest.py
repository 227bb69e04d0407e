"""`reer ingest`: read a file or folder with one source reader, clean it, print the records (no Dagster)."""

from __future__ import annotations

import argparse
import json

from reer_assets.cli.common import err


def _key_values(items: list[str]) -> dict:
    """``key=value`` pairs with YAML values (``min_score=10``, ``strip=true``, ``languages=[en, zh]``)."""
    import yaml

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--option expects key=value, got {item!r}")
        try:
            options[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            options[key.strip()] = value
    return options


def cmd_ingest(args: argparse.Namespace) -> int:
    from reer_assets import progress
    from reer_assets.core.ingest.pipeline import ingest_path, ingest_summary, public_record
    from reer_assets.lib.domains import load_domains

    try:  # a domain of domains.yaml brings its languages and cleaning; any other name (adhoc) none
        spec = load_domains().get(args.domain) or {}
    except (OSError, ValueError):
        spec = {}

    def printed(rows):
        with progress.bar(f"ingesting {args.path}") as advance:
            for row in rows:
                if args.jsonl:
                    print(json.dumps(public_record(row), ensure_ascii=False), flush=True)
                advance(1, f"ingesting {args.path}: {row.get('status', 'read')} {row.get('id', '')}"[:100])
                yield row

    summary = ingest_summary(printed(ingest_path(args.reader, args.path, args.domain, _key_values(args.option), spec)))
    if args.jsonl:
        err(json.dumps(summary))
    else:
        print(json.dumps(summary, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ingest``."""
    ingest = subparsers.add_parser("ingest", help="read a file or folder with one source reader, clean it, print the records")
    ingest.add_argument("--reader", required=True, choices=["pairs", "book", "reer", "deepwriting", "generic", "inbox"])
    ingest.add_argument("path", help="a file, a folder, a glob or an fsspec URL")
    ingest.add_argument("--domain", default="adhoc", help="a domain of domains.yaml brings its languages and cleaning")
    ingest.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a reader option or cleaning setting (repeatable), e.g. prompt_field=title min_units=20")
    ingest.add_argument("--jsonl", action="store_true", help="one JSON object per record (summary on stderr)")
    ingest.set_defaults(func=cmd_ingest)
