"""What the `reer` command's modules share: messages on stderr, reading a file named on the command line, the
configured generator and scorer, and the exit codes (the epilog of ``reer --help`` and ``reer search --help``)."""

from __future__ import annotations

import sys
from pathlib import Path


def read(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def err(message: str) -> None:
    print(message, file=sys.stderr)


def backends():
    """The configured generator and scorer (``REER_GENERATOR_*``, ``REER_SCORER_*``)."""
    from reer_assets.backends.config import BackendSpec, load_generator, load_scorer

    return load_generator(BackendSpec.from_env("generator")), load_scorer(BackendSpec.from_env("scorer"))


EPILOG = """exit codes:
  0    done (with --json: one JSON document on stdout; logs and progress on stderr)
  1    the command ran but found nothing or its server died (no such dataset row or experiment;
       reer serve: the vLLM server exited)
  2    usage or configuration error (a bad option, an unknown backend, a missing file, bad SQL,
       DAGSTER_HOME not set)
  3    reer search: the item was rejected (with --items: every item); stderr says why and what to try
  130  interrupted (Ctrl-C)
"""
