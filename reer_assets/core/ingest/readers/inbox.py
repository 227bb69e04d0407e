"""A drop folder per domain (``<root>/<domain>/``, the root ``$DAGSTER_HOME/inbox`` as the pipeline places it)
of ``.txt`` and ``.md`` files, one document each; the inbox sensor re-ingests a domain when its folder changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from reer_assets.core.ingest.readers.common import SourceRecord, read_files, resolve_options
from reer_assets.core.ingest.readers.generic import markdown_file

DEFAULTS: dict[str, Any] = {
    "root": None,  # a folder holding one folder per domain (pipeline.domain_sources: $DAGSTER_HOME/inbox)
    "encoding": "utf-8",
    "language": None,
    "license": None,
}
SUFFIXES = (".txt", ".md")


def read_inbox(domain: str, options: dict[str, Any]) -> Iterator[SourceRecord]:
    """The domain's inbox files; a missing default folder is an empty inbox, a missing
    configured ``path`` is a reject that names it."""
    opts = resolve_options("inbox", DEFAULTS, options)
    if options.get("path"):
        location = str(options["path"])
    else:
        if not opts["root"]:
            raise ValueError("reader 'inbox' needs a 'root' (the folder of the domains' inbox folders) or a 'path'")
        folder = Path(opts["root"]) / domain
        if not folder.is_dir():
            return iter(())
        location = str(folder)
    return read_files(location, SUFFIXES, lambda file: markdown_file(file, opts), domain)
