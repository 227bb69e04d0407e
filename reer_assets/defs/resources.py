"""Connections: model backends per role, the lineage store, the Pipes client.

Backends come from the same REER_<ROLE>_* variables the CLI reads. An API key is never a
config value: the resource names the variable that holds it, and the workload reads it
from its environment.
"""


import os
import sys
from typing import Optional

import dagster as dg
import polars as pl

from reer_assets.backends.config import ENV_FIELDS, BackendSpec, model_id
from reer_assets.lib import duckdb_store


class ModelBackendResource(dg.ConfigurableResource):
    """Which model a role (generator or scorer) uses; passed to workloads as REER_<ROLE>_* env.

    Built by :func:`backend_resource` from the environment with ``dg.EnvVar`` for every
    variable that is set, so the UI shows where a value came from and an API key is read
    from its variable at run time only, never stored in config, logs or lineage.
    """

    role: str
    backend: str = "embedded"
    model: Optional[str] = None
    base_url: Optional[str] = None
    api_key_env: Optional[str] = None
    api_key: Optional[str] = None
    tokenizer: Optional[str] = None
    prefill_mode: str = "chat"
    max_in_flight: int = 8
    timeout_s: float = 300.0
    max_attempts: int = 4
    gpu_memory_utilization: Optional[float] = None
    device: Optional[str] = None

    @classmethod
    def from_env(cls, role: str) -> "ModelBackendResource":
        return backend_resource(role)

    def spec(self) -> BackendSpec:
        fields = {name: getattr(self, name) for name in ENV_FIELDS}
        return BackendSpec(**{k: v for k, v in fields.items() if v is not None})

    def model_id(self) -> str:
        return model_id(self.spec(), self.role)

    def workload_env(self) -> dict[str, str]:
        env = self.spec().env(self.role)
        if self.api_key_env and self.api_key:
            env[self.api_key_env] = self.api_key
        return env


def backend_resource(role: str, environ: Optional[dict] = None) -> ModelBackendResource:
    """The resource for ``role`` from REER_<ROLE>_* variables (validated now, read through EnvVar)."""
    env = dict(os.environ if environ is None else environ)
    spec = BackendSpec.from_env(role, env)  # fails early, with the variable's name, on a bad value
    prefix = f"REER_{role.upper()}_"
    values: dict = {"role": role}
    for name in ENV_FIELDS:
        if env.get(prefix + name.upper()):
            kind = ENV_FIELDS[name]
            values[name] = dg.EnvVar(prefix + name.upper()) if kind is str else getattr(spec, name)
    if spec.api_key_env and env.get(spec.api_key_env):
        values["api_key"] = dg.EnvVar(spec.api_key_env)
    return ModelBackendResource(**values)


class LineageResource(dg.ConfigurableResource):
    """The DuckDB lineage file; writes are short bulk transactions retried on lock conflicts."""

    db_path: Optional[str] = None

    def write(self, frames: dict[str, pl.DataFrame]) -> dict[str, int]:
        return duckdb_store.write_many(frames, self.db_path)


def workload_command(name: str) -> list[str]:
    return [sys.executable, "-m", f"reer_assets.workloads.{name}"]


def default_resources() -> dict:
    return {
        "generator": ModelBackendResource.from_env("generator"),
        "scorer": ModelBackendResource.from_env("scorer"),
        "lineage": LineageResource(),
        "pipes": dg.PipesSubprocessClient(),
    }
