"""Every setting the engine reads from the environment, in one place.

Each function reads the environment when called (so a test or a launcher can set a variable and
see it take effect); nothing else in the package reads ``os.environ``, except the Pipes
workloads, the ``reer`` CLI and ``make demo``, which set up the processes they start.

| variable | meaning | default |
|---|---|---|
| ``DAGSTER_HOME`` | the Dagster instance folder; the engine's state lives under it | ``<repository>/dagster_home`` |
| ``REER_LINEAGE_DB`` | the lineage DuckDB file | ``$DAGSTER_HOME/lineage.duckdb`` |
| ``REER_LINEAGE_MODE`` | ``single`` (one DuckDB file, one writer at a time) or ``fragments`` (Parquet fragments under the storage root, any number of writers; docs/scale.md) | ``single`` |
| ``REER_STORAGE_ROOT`` | where asset files live: a local folder or an fsspec URL (``s3://bucket/prefix``) | ``$DAGSTER_HOME/reer`` |
| ``REER_STORAGE_OPTIONS`` | JSON object of fsspec options for a remote root (``{"endpoint_url": ...}``; credentials come from the usual variables, never from here: names with ``key``, ``secret``, ``token`` or ``password`` are refused) | none |
| ``REER_PROFILE`` | the run profile (``default``, ``demo``, ``test``) | ``default`` |
| ``REER_DOMAINS_FILE`` | the domains and their sources | ``reer_assets/domains.yaml`` |
| ``REER_BENCHMARKS_FILE`` | the benchmark files ``benchmark_scores`` evaluates | ``reer_assets/benchmarks.yaml`` |
| ``REER_PROMPTS`` | the prompt set: a file in the engine's schema (YAML/JSON), or ``official:PATH`` (the official ``synthesize.py``, parsed, never run); ``lib/prompt_sets.py`` | the bundled set |
| ``REER_CACHE_DIR`` | the per-user cache of embedded model builds | ``~/.cache/reer-assets`` |
| ``REER_<ROLE>_*`` | the model backend of a role (generator, scorer, judge): ``backends/config.py`` | embedded |
| ``REER_WORKLOAD_RUNNER`` | where model work runs: ``subprocess`` (Dagster Pipes), ``ray`` (a Ray job per run), ``k8s`` (a pod), ``slurm`` (an sbatch job), ``in_process`` (tests) | ``subprocess`` |
| ``REER_RAY_*``, ``REER_K8S_*``, ``REER_SLURM_*`` | that runner's settings (``ADDRESS``, ``IMAGE``, ``PARTITION``...): ``runtime/runners/``, docs/scale.md | none |
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


LINEAGE_MODES = ("single", "fragments")


def lineage_mode() -> str:
    """``single`` (the DuckDB file, the default) or ``fragments`` (REER_LINEAGE_MODE)."""
    mode = (_get("REER_LINEAGE_MODE") or "single").strip().lower()
    if mode not in LINEAGE_MODES:
        raise ValueError(f"REER_LINEAGE_MODE={mode!r}: choose one of {', '.join(LINEAGE_MODES)}")
    return mode


def storage_root() -> str | None:
    """The storage root named by REER_STORAGE_ROOT (a folder or an fsspec URL); None for the default."""
    return _get("REER_STORAGE_ROOT")


SECRET_OPTION_WORDS = ("key", "secret", "token", "password")  # in an option's name: a credential


def _secret_option_names(value, path: str = "") -> list[str]:
    """The option names (dotted paths into nested objects) that contain a secret's word, case-insensitive:
    ``key``, ``aws_secret_access_key``, ``client_kwargs.aws_session_token``, ``sasToken``, ``password``."""
    found: list[str] = []
    if isinstance(value, dict):
        for name, inner in value.items():
            where = f"{path}.{name}" if path else str(name)
            if any(word in str(name).lower() for word in SECRET_OPTION_WORDS):
                found.append(where)
            found += _secret_option_names(inner, where)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += _secret_option_names(inner, f"{path}[{index}]")
    return found


def storage_options() -> dict:
    """fsspec options for a remote storage root (REER_STORAGE_OPTIONS, a JSON object).

    Options whose names hold a secret's word (``key``, ``secret``, ``token``, ``password``, anywhere in the
    name and at any depth, case-insensitive) are refused: this variable is forwarded to every remote
    workload (Ray runtime envs, pod specs, Slurm job scripts, all readable by whoever can list jobs), so
    credentials come from the environment on each worker instead (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
    a profile, an instance role). The error names the options, never their values."""
    import json

    raw = _get("REER_STORAGE_OPTIONS")
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"REER_STORAGE_OPTIONS is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(value, dict):
        raise ValueError("REER_STORAGE_OPTIONS must be a JSON object")
    secrets = _secret_option_names(value)
    if secrets:
        raise ValueError(
            f"REER_STORAGE_OPTIONS names secret option(s) {', '.join(secrets)}: credentials never go in this "
            "variable, which is forwarded to every remote workload (Ray runtime envs, pod specs, Slurm job "
            "scripts). Give them through the environment on each worker instead (AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance role, or your store's own variables).")
    return value


def profile_name() -> str | None:
    """The profile named by REER_PROFILE, if any (``lib/profiles.py`` validates it and applies the default)."""
    return _get("REER_PROFILE")


def domains_file() -> Path:
    return Path(_get("REER_DOMAINS_FILE") or PACKAGE_DIR / "domains.yaml")


def benchmarks_file() -> Path:
    return Path(_get("REER_BENCHMARKS_FILE") or PACKAGE_DIR / "benchmarks.yaml")


def prompts_spec() -> str | None:
    """The prompt set named by REER_PROMPTS (``PATH`` or ``official:PATH``); None for the bundled one."""
    value = _get("REER_PROMPTS")
    return value.strip() if value and value.strip() else None


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


WORKLOAD_RUNNERS = ("subprocess", "ray", "k8s", "slurm", "in_process")


def workload_runner() -> str:
    """Where model work runs (``REER_WORKLOAD_RUNNER``): ``subprocess`` (Dagster Pipes, default), ``ray``,
    ``k8s``, ``slurm`` or ``in_process`` (unit tests)."""
    mode = (_get("REER_WORKLOAD_RUNNER") or "subprocess").strip().lower()
    if mode not in WORKLOAD_RUNNERS:
        raise ValueError(f"REER_WORKLOAD_RUNNER={mode!r}: choose one of {', '.join(WORKLOAD_RUNNERS)}")
    return mode


def runner_variables(kind: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``REER_<KIND>_*`` settings of a workload runner (``ray``, ``k8s``, ``slurm``) that are set, by
    field name: ``REER_RAY_ADDRESS`` -> ``address``."""
    return role_variables(kind, environ)


# what a workload started on another machine needs from this process's environment (a local
# subprocess inherits all of it): the engine's settings, and the offline/threading switches of the
# model libraries. The runners' own settings stay here; so do secrets (see runtime/runners/common.py).
FORWARDED_PREFIXES = ("REER_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "VLLM_")
RUNNER_PREFIXES = ("REER_WORKLOAD_RUNNER", "REER_RAY_", "REER_K8S_", "REER_SLURM_")
SECRET_SUFFIXES = ("_TOKEN", "_KEY", "_SECRET", "_PASSWORD")  # HF_TOKEN and the like are never forwarded


def forwarded_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables a remote workload (Ray job, pod, Slurm job) is given: ``DAGSTER_HOME`` (always,
    so both sides name the same instance folder) and every set ``REER_*``, ``HF_*``, ``TRANSFORMERS_*``,
    ``TOKENIZERS_*``, ``VLLM_*`` variable except the runners' own settings and anything named like a
    secret (``*_TOKEN``, ``*_KEY``, ``*_SECRET``, ``*_PASSWORD``)."""
    env = os.environ if environ is None else environ
    out = {name: value for name, value in env.items()
           if value and name.startswith(FORWARDED_PREFIXES) and not name.startswith(RUNNER_PREFIXES)
           and not name.endswith(SECRET_SUFFIXES)}
    out["DAGSTER_HOME"] = str(env.get("DAGSTER_HOME") or REPO_ROOT / "dagster_home")
    return out
