"""`reer export`: the current SFT dataset for TRL, LLaMA-Factory, DeepWriting-20K (verl) or the official
REER layout, with a dataset card."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_export(args: argparse.Namespace) -> int:
    from reer_assets.lib.export import export

    written = export(args.format, Path(args.out), args.tokenizer, args.domain)
    if args.json:
        print(json.dumps(written, ensure_ascii=False))
    else:
        print(f"{written['rows']} rows of {written['version']} as {args.format} in {written['out']}: "
              f"{', '.join(written['files'])}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``export``."""
    export = subparsers.add_parser("export", help="write the current SFT dataset for TRL, LLaMA-Factory or "
                            "DeepWriting-20K (verl) tools, with a dataset card")
    export.add_argument("--format", required=True, choices=["trl", "sharegpt", "deepwriting", "reer-official"])
    export.add_argument("--domain", action="append", help="reer-official: a domain whose refined_trajectories "
                        "to write (repeatable; default every materialised one)")
    export.add_argument("--out", required=True, help="folder to write")
    export.add_argument("--tokenizer", help="tokenizer folder (or tokenizer.json) for the card's token statistics")
    export.add_argument("--json", action="store_true")
    export.set_defaults(func=cmd_export)
