"""What the `reer` command's modules share: messages on stderr, reading a file named on the command line, the
configured generator and scorer, and the exit codes (the epilog of ``reer --help`` and ``reer search --help``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def read(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def err(message: str) -> None:
    print(message, file=sys.stderr)


def backends():
    """The configured generator and scorer (``REER_GENERATOR_*``, ``REER_SCORER_*``)."""
    from reer_assets.backends.config import BackendSpec, load_generator, load_scorer

    return load_generator(BackendSpec.from_env("generator")), load_scorer(BackendSpec.from_env("scorer"))


def add_profile_arg(parser: argparse.ArgumentParser, what: str) -> None:
    """``--profile``, the same for every command: the run profile whose ``what`` are the defaults."""
    parser.add_argument("--profile", help=f"the run profile whose {what} are the defaults (default: REER_PROFILE, "
                        "else 'default'); the command's own options override them")


def run_profile(args: argparse.Namespace) -> dict[str, Any]:
    """The run profile a command uses: ``--profile``, else REER_PROFILE, else ``default`` (as the assets resolve it)."""
    from reer_assets.lib.profiles import profile

    return profile(getattr(args, "profile", None))


EPILOG = """exit codes:
  0    done (with --json: one JSON document on stdout; logs and progress on stderr)
  1    the command ran but found nothing or its server died (no such dataset row or experiment;
       reer serve: the vLLM server exited)
  2    usage or configuration error (a bad option, an unknown backend, a missing file, bad SQL,
       DAGSTER_HOME not set)
  3    reer search: the item was rejected (with --items: every item); stderr says why and what to try
  130  interrupted (Ctrl-C)
"""
