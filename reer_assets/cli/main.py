"""The `reer` command: build the embedded model, ingest sources, synthesize a request, segment, score and
search without Dagster, and the engine's other commands. One module of ``reer_assets/cli/`` per command
group, each registering its own subcommands (``register``); this module parses and runs them."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from reer_assets.cli import bench, evaluation, experiment, export, imports, ingest, lineage, model, plan, recover
from reer_assets.cli import search, serve, synthesis
from reer_assets.cli.common import EPILOG, err

# in the order `reer --help` lists them
COMMAND_GROUPS = (model, ingest, synthesis, search, lineage, serve, export, recover, bench, evaluation, experiment,
                  plan, imports)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reer", description="REverse-Engineered Reasoning data engine",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


@contextlib.contextmanager
def _output_only_on_stdout():
    """With --json the document is all that reaches stdout: file descriptor 1 (where C libraries,
    engine processes and their children write) is pointed at stderr for the command's duration, and
    ``sys.stdout`` writes to the real stdout."""
    sys.stdout.flush()
    real = os.dup(1)
    os.dup2(2, 1)
    saved, sys.stdout = sys.stdout, open(real, "w", encoding="utf-8", closefd=False)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stdout.close()
        sys.stdout = saved
        os.dup2(real, 1)
        os.close(real)


def _close_engines() -> None:
    """Shut down in-process vLLM engines before the interpreter does (which can abort the process)."""
    engines = sys.modules.get("reer_assets.backends.vllm_engine")
    if engines is not None:
        engines.close_all()


def main(argv: list[str] | None = None) -> int:
    from reer_assets import progress

    args = build_parser().parse_args(argv)
    machine = bool(getattr(args, "json", False))
    # vLLM logs to stdout by default; the CLI's stdout is for results only
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    progress.enable(not machine)
    try:
        with _output_only_on_stdout() if machine else contextlib.nullcontext():
            try:
                return args.func(args)
            finally:
                _close_engines()
    except (FileNotFoundError, ValueError, NotImplementedError) as exc:
        err(f"reer: error: {exc}")
        return 2
    except KeyboardInterrupt:
        err("reer: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
