"""Connections: model backends per role, the lineage store, the Pipes client.

Backends come from the same REER_<ROLE>_* variables the CLI reads. An API key is never a
config value: the resource names the variable that holds it, and the workload reads it
from its environment.
"""


import sys
from typing import Optional

import dagster as dg
import polars as pl

from reer_assets.backends.config import BackendSpec, model_id
from reer_assets.lib import duckdb_store


class ModelBackendResource(dg.ConfigurableResource):
    """Which model a role (generator or scorer) uses; passed to workloads as REER_<ROLE>_* env."""

    role: str
    backend: str = "embedded"
    model: Optional[str] = None
    base_url: Optional[str] = None
    api_key_env: Optional[str] = None

    @classmethod
    def from_env(cls, role: str) -> "ModelBackendResource":
        spec = BackendSpec.from_env(role)
        return cls(role=role, backend=spec.backend, model=spec.model, base_url=spec.base_url, api_key_env=spec.api_key_env)

    def spec(self) -> BackendSpec:
        return BackendSpec(self.backend, self.model, self.base_url, self.api_key_env)

    def model_id(self) -> str:
        return model_id(self.spec())

    def workload_env(self) -> dict[str, str]:
        prefix = f"REER_{self.role.upper()}_"
        values = {"BACKEND": self.backend, "MODEL": self.model, "BASE_URL": self.base_url, "API_KEY_ENV": self.api_key_env}
        return {prefix + k: v for k, v in values.items() if v}


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
