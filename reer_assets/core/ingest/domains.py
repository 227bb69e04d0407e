"""The domains and their sources, read from ``reer_assets/domains.yaml`` (or REER_DOMAINS_FILE)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import yaml

from reer_assets.settings import domains_file


@lru_cache(maxsize=4)
def _load(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        spec = yaml.safe_load(handle) or {}
    domains = spec.get("domains") or {}
    if not domains:
        raise ValueError(f"{path} lists no domains")
    return domains


def load_domains() -> dict[str, Any]:
    return _load(str(domains_file()))


def domain_names() -> list[str]:
    return list(load_domains())


def domain_spec(name: str) -> dict[str, Any]:
    domains = load_domains()
    if name not in domains:
        raise KeyError(f"unknown domain {name!r}; known: {', '.join(domains)}")
    return domains[name]


def domain_shards(name: str) -> int:
    """How many workload runs ``refined_trajectories`` splits the domain's items into (``shards: N``, default 1).

    Items go to shards by a stable hash of their query id; the count changes how the work is spread,
    never what is computed, so it is in no id or fingerprint (docs/scale.md, "Shards").
    """
    value = domain_spec(name).get("shards", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"domain {name!r}: shards must be a whole number of at least 1, got {value!r}")
    return value
