"""The configured domains: ``core/ingest/domains.py`` over the file the settings name (``REER_DOMAINS_FILE``,
else ``reer_assets/domains.yaml``), and where their sources are (:func:`source_places`). Everything above
core reads the domains through here; core itself is given the file and the places."""

from __future__ import annotations

from typing import Any

from reer_assets import data, settings
from reer_assets.core.ingest import domains as _domains
from reer_assets.core.ingest.domains import SourcePlaces


def load_domains() -> dict[str, Any]:
    return _domains.load_domains(settings.domains_file())


def domain_names() -> list[str]:
    return _domains.domain_names(settings.domains_file())


def domain_spec(name: str) -> dict[str, Any]:
    return _domains.domain_spec(name, settings.domains_file())


def domain_shards(name: str) -> int:
    """How many workload runs ``refined_trajectories`` splits the domain's items into (``shards: N``)."""
    return _domains.domain_shards(name, settings.domains_file())


def source_places() -> SourcePlaces:
    """The domains file's folder (relative source paths), ``$DAGSTER_HOME/inbox`` and the bundled corpus."""
    return SourcePlaces(domains_dir=settings.domains_file().resolve().parent,
                        inbox_root=settings.dagster_home() / "inbox", bundled_dir=data.DATA_DIR / "corpus")
