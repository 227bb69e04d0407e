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
