"""Every setting the engine reads from the environment, in one place.

Each function reads the environment when called (so a test or a launcher can set a variable and
see it take effect); nothing else in the package reads ``os.environ``, except the Pipes
workloads, the ``reer`` CLI and ``make demo``, which set up the processes they start.

| variable | meaning | default |
|---|---|---|
| ``DAGSTER_HOME`` | the Dagster instance folder; the engine's state lives under it | ``<repository>/dagster_home`` |
| ``REER_LINEAGE_DB`` | the lineage DuckDB file | ``$DAGSTER_HOME/lineage.duckdb`` |
| ``REER_PROFILE`` | the run profile (``default``, ``demo``, ``test``) | ``default`` |
| ``REER_DOMAINS_FILE`` | the domains and their sources | ``reer_assets/domains.yaml`` |
| ``REER_BENCHMARKS_FILE`` | the benchmark files ``benchmark_scores`` evaluates | ``reer_assets/benchmarks.yaml`` |
| ``REER_CACHE_DIR`` | the per-user cache of embedded model builds | ``~/.cache/reer-assets`` |
| ``REER_<ROLE>_*`` | the model backend of a role (generator, scorer, judge): ``backends/config.py`` | embedded |
| ``REER_WORKLOAD_RUNNER`` | where model work runs: ``subprocess`` (Dagster Pipes) or ``in_process`` | ``subprocess`` |
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Mapping

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
SQL_DIR = REPO_ROOT / "sql"


def _get(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    value = (os.environ if environ is None else environ).get(name)
    return value or None


def dagster_home() -> Path:
    return Path(_get("DAGSTER_HOME") or REPO_ROOT / "dagster_home")


def dagster_home_is_set() -> bool:
    return _get("DAGSTER_HOME") is not None


def lineage_db() -> Path:
    return Path(_get("REER_LINEAGE_DB") or dagster_home() / "lineage.duckdb")


def profile_name() -> str | None:
    """The profile named by REER_PROFILE, if any (``lib/profiles.py`` validates it and applies the default)."""
    return _get("REER_PROFILE")


def domains_file() -> Path:
    return Path(_get("REER_DOMAINS_FILE") or PACKAGE_DIR / "domains.yaml")


def benchmarks_file() -> Path:
    return Path(_get("REER_BENCHMARKS_FILE") or PACKAGE_DIR / "benchmarks.yaml")


def cache_dir() -> Path:
    return Path(_get("REER_CACHE_DIR") or Path.home() / ".cache" / "reer-assets")


def role_variables(role: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``REER_<ROLE>_*`` variables that are set, by their field name (``backend``, ``base_url``, …)."""
    prefix = f"REER_{role.upper()}_"
    env = os.environ if environ is None else environ
    return {name[len(prefix):].lower(): value for name, value in env.items() if name.startswith(prefix) and value}


def secret(variable: str | None) -> str | None:
    """The value of the variable that holds a secret (an API key), read at the moment of use only."""
    return _get(variable) if variable else None


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set variables for the duration of a block (a workload run in this process, as in unit tests)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def workload_runner() -> str:
    """Where model work runs (``REER_WORKLOAD_RUNNER``): ``subprocess`` (Dagster Pipes, default) or ``in_process``."""
    return _get("REER_WORKLOAD_RUNNER") or "subprocess"
