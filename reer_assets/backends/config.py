"""Which backend each model role uses, read from the environment in one place.

The `reer` CLI and the Dagster resources both build a :class:`BackendSpec` per role
(``generator``, ``scorer``) and call :func:`load_generator` / :func:`load_scorer`.
Variables: ``REER_<ROLE>_BACKEND`` (embedded | hf | vllm | openai),
``REER_<ROLE>_MODEL``, ``REER_<ROLE>_BASE_URL``, ``REER_<ROLE>_API_KEY_ENV`` (the
*name* of the variable that holds the key, never the key itself).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping

BACKENDS = ("embedded", "hf", "vllm", "openai")
ROLES = ("generator", "scorer")


@dataclass(frozen=True)
class BackendSpec:
    backend: str = "embedded"
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if self.backend == "hf" and not self.model:
            raise ValueError("backend 'hf' needs a model path or id: set REER_<ROLE>_MODEL")

    @classmethod
    def from_env(cls, role: str, environ: Mapping[str, str] | None = None) -> "BackendSpec":
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        env = os.environ if environ is None else environ
        prefix = f"REER_{role.upper()}_"
        return cls(
            backend=env.get(prefix + "BACKEND") or "embedded",
            model=env.get(prefix + "MODEL") or None,
            base_url=env.get(prefix + "BASE_URL") or None,
            api_key_env=env.get(prefix + "API_KEY_ENV") or None,
            device=env.get(prefix + "DEVICE") or None,
        )

    def describe(self) -> dict[str, str | None]:
        """Safe to log and record: names the key's variable, never its value."""
        return {"backend": self.backend, "model": self.model, "base_url": self.base_url, "api_key_env": self.api_key_env}


def model_id(spec: BackendSpec) -> str:
    """The id recorded in lineage for a role's model, known without loading it."""
    if spec.backend == "embedded" and not spec.model:
        from reer_assets.backends.embedded import build_key

        return f"reer-embedded:{build_key()}"
    return f"{spec.backend}:{spec.model}"


def resolve_model_path(spec: BackendSpec) -> tuple[str, str]:
    """(path to load, model id to record) for the local backends."""
    if spec.backend == "embedded" and not spec.model:
        from reer_assets.backends.embedded import ensure_embedded_model

        return str(ensure_embedded_model()), model_id(spec)
    assert spec.model
    return spec.model, model_id(spec)


@lru_cache(maxsize=4)
def _loaded(path: str, device: str | None):
    from reer_assets.backends.hf import LoadedModel

    return LoadedModel.load(path, device=device)


def load_generator(spec: BackendSpec):
    if spec.backend in ("embedded", "hf"):
        from reer_assets.backends.hf import HFGenerator

        path, model_id = resolve_model_path(spec)
        return HFGenerator(_loaded(path, spec.device), model_id=model_id)
    raise NotImplementedError(f"generator backend {spec.backend!r} is not available yet")


def load_scorer(spec: BackendSpec):
    if spec.backend in ("embedded", "hf"):
        from reer_assets.backends.hf import HFScorer

        path, model_id = resolve_model_path(spec)
        return HFScorer(_loaded(path, spec.device), model_id=model_id)
    raise NotImplementedError(f"scorer backend {spec.backend!r} is not available yet")
