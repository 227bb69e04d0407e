"""The resources every stage is given, wired from the environment: the model backend of each role, the
lineage store and the workload runner (``runtime/runner.py``: where model work runs).

Backends come from the same REER_<ROLE>_* variables the CLI reads. An API key is never a
config value: the resource names the variable that holds it, and the workload reads it
from its environment.
"""


import dataclasses
from typing import Optional

import dagster as dg
import polars as pl

from reer_assets import settings
from reer_assets.backends.spec import ENV_FIELDS, BackendSpec, model_id, role_backend, role_configured
from reer_assets.lib import duckdb_store
from reer_assets.runtime.runner import WorkloadRunner

__all__ = ["LineageResource", "ModelBackendResource", "WorkloadRunner", "backend_resource", "default_resources"]


class _ModelBackend(dg.ConfigurableResource):
    """Which model a role (generator, scorer or judge) uses; passed to workloads as REER_<ROLE>_* env.

    Its fields are :class:`~reer_assets.backends.config.BackendSpec`'s, derived below (declared once),
    plus the role and the API key read through ``dg.EnvVar``. Built by :func:`backend_resource`
    from the environment with ``dg.EnvVar`` for every variable that is set, so the UI shows where
    a value came from and an API key is read from its variable at run time only, never stored in
    config, logs or lineage.
    """

    @classmethod
    def from_env(cls, role: str) -> "ModelBackendResource":
        return backend_resource(role)

    def spec(self) -> BackendSpec:
        fields = {name: getattr(self, name) for name in ENV_FIELDS}
        return BackendSpec(**{k: v for k, v in fields.items() if v is not None})

    def model_id(self) -> str:
        return model_id(self.spec(), self.role)

    def workload_env(self) -> dict[str, str]:
        if not self.configured:
            return {}  # a role nobody set up (the judge): the workload sees no REER_<ROLE>_* at all
        env = self.spec().env(self.role)
        if self.api_key_env and self.api_key:
            env[self.api_key_env] = self.api_key
        return env


def _resource_class() -> type:
    """The resource class with one config field per BackendSpec field (same name, type and default)."""
    annotations: dict = {"role": str}
    defaults: dict = {}
    for f in dataclasses.fields(BackendSpec):
        annotations[f.name] = Optional[ENV_FIELDS[f.name]]
        defaults[f.name] = None if f.default is dataclasses.MISSING else f.default
    annotations["api_key"] = Optional[str]
    defaults["api_key"] = None
    annotations["configured"] = bool  # False for an optional role (the judge) that no variable sets up
    defaults["configured"] = True
    return type("ModelBackendResource", (_ModelBackend,), {"__annotations__": annotations, "__module__": __name__,
                                                          "__doc__": _ModelBackend.__doc__, **defaults})


ModelBackendResource = _resource_class()


def backend_resource(role: str, environ: Optional[dict] = None) -> ModelBackendResource:
    """The resource for ``role`` from REER_<ROLE>_* variables (validated now, read through EnvVar)."""
    spec = BackendSpec.from_env(role, environ)  # fails early, with the variable's name, on a bad value
    prefix = f"REER_{role.upper()}_"
    variables = settings.role_variables(role, environ)
    values: dict = {"role": role, "configured": role_configured(role, variables)}
    for name in variables:
        if name in ENV_FIELDS:
            values[name] = dg.EnvVar(prefix + name.upper()) if ENV_FIELDS[name] is str else getattr(spec, name)
    if not variables.get("backend") and role_backend(role, variables):
        values["backend"] = role_backend(role, variables)  # the judge named by its server alone (spec.py)
    if spec.api_key_env and (settings.secret(spec.api_key_env) if environ is None else environ.get(spec.api_key_env)):
        values["api_key"] = dg.EnvVar(spec.api_key_env)
    return ModelBackendResource(**values)


class LineageResource(dg.ConfigurableResource):
    """The lineage store. ``single`` (default): the DuckDB file, short bulk transactions retried on lock
    conflicts. ``fragments``: Parquet fragments under the storage root, no shared writer (docs/scale.md).
    ``mode`` unset: REER_LINEAGE_MODE."""

    db_path: Optional[str] = None
    mode: Optional[str] = None

    def write(self, frames: dict[str, pl.DataFrame]) -> dict[str, int]:
        return duckdb_store.write_many(frames, self.db_path, mode=self.mode)


def default_resources() -> dict:
    return {
        "generator": ModelBackendResource.from_env("generator"),
        "scorer": ModelBackendResource.from_env("scorer"),
        "judge": ModelBackendResource.from_env("judge"),
        "lineage": LineageResource(),
        "runner": WorkloadRunner.from_env(),
    }
