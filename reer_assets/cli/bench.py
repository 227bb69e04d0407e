"""`reer bench`: the throughput benchmarks of ``reer_assets/perf/``, measured side by side in one process."""

from __future__ import annotations

import argparse


def cmd_bench(args: argparse.Namespace) -> int:
    if args.which == "scoring":
        from reer_assets.perf.scoring import main as bench_main
    else:
        from reer_assets.perf.search import main as bench_main
    return bench_main(args.options)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench``."""
    bench = subparsers.add_parser("bench", help="throughput benchmarks, measured side by side in one process")
    bench.add_argument("which", choices=["scoring", "search"])
    bench.add_argument("options", nargs=argparse.REMAINDER, help="options of the benchmark (see `reer bench X -h`)")
    bench.set_defaults(func=cmd_bench)
