"""The domains and their sources, read from a domains file (the caller names it: ``lib/domains.py`` passes
``REER_DOMAINS_FILE``, else ``reer_assets/domains.yaml``), and where a domain's sources are
(:class:`SourcePlaces`, given by the caller too: core reads no settings)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class SourcePlaces:
    """Where a domain's sources are, as the engine's settings say (``lib/domains.py::source_places``)."""

    domains_dir: Path  # a relative ``path`` in the domains file is relative to this folder (the file's own)
    inbox_root: Path  # the inbox folders, one per domain (``$DAGSTER_HOME/inbox``)
    bundled_dir: Path  # the bundled corpus, one JSONL file per domain (``reer_assets/data/corpus``)


@lru_cache(maxsize=4)
def _load(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        spec = yaml.safe_load(handle) or {}
    domains = spec.get("domains") or {}
    if not domains:
        raise ValueError(f"{path} lists no domains")
    return domains


def load_domains(path: str | Path) -> dict[str, Any]:
    """The ``domains:`` mapping of the domains file at ``path`` (read once per path)."""
    return _load(str(path))


def domain_names(path: str | Path) -> list[str]:
    return list(load_domains(path))


def domain_spec(name: str, path: str | Path) -> dict[str, Any]:
    domains = load_domains(path)
    if name not in domains:
        raise KeyError(f"unknown domain {name!r}; known: {', '.join(domains)}")
    return domains[name]


def domain_shards(name: str, path: str | Path) -> int:
    """How many workload runs ``refined_trajectories`` splits the domain's items into (``shards: N``, default 1).

    Items go to shards by a stable hash of their query id; the count changes how the work is spread,
    never what is computed, so it is in no id or fingerprint (docs/scale.md, "Shards").
    """
    value = domain_spec(name, path).get("shards", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"domain {name!r}: shards must be a whole number of at least 1, got {value!r}")
    return value
