"""Which backend each model role uses: :class:`BackendSpec`, the one declaration of a backend's fields.

The `reer` CLI, the Dagster resource (``defs/resources.py``, whose fields are derived from this
class) and the out-of-process workloads all build a :class:`BackendSpec` per role
(``generator``, ``scorer``, ``judge``) from ``REER_<ROLE>_*`` (read by ``settings.role_variables``)
and call :func:`load_generator` / :func:`load_scorer`.
Variables: ``REER_<ROLE>_BACKEND`` (embedded | hf | vllm | openai),
``REER_<ROLE>_MODEL`` (a local path or a served model name), ``REER_<ROLE>_BASE_URL``
(openai), ``REER_<ROLE>_API_KEY_ENV`` (the *name* of the variable that holds the key,
never the key itself), ``REER_<ROLE>_TOKENIZER`` (a local tokenizer for openai scoring or
completions-mode generation), ``REER_<ROLE>_MAX_IN_FLIGHT``, ``REER_<ROLE>_TIMEOUT_S``,
``REER_<ROLE>_MAX_ATTEMPTS``, ``REER_<ROLE>_PREFILL_MODE`` (chat | completions),
``REER_<ROLE>_GPU_MEMORY_UTILIZATION`` (vllm) and ``REER_<ROLE>_DEVICE`` (hf).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping

from reer_assets import settings

BACKENDS = ("embedded", "hf", "vllm", "openai")
ROLES = ("generator", "scorer", "judge")
PREFILL_MODES = ("chat", "completions")


@dataclass(frozen=True)
class BackendSpec:
    backend: str = "embedded"
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    device: str | None = None
    tokenizer: str | None = None
    max_in_flight: int = 8
    timeout_s: float = 300.0
    max_attempts: int = 4
    prefill_mode: str = "chat"  # openai: chat (continue_final_message) | completions (template rendered here)
    gpu_memory_utilization: float | None = None  # vllm; on the CPU build the share of host memory
    backoff_s: float = 0.5  # openai: first retry delay, doubled per attempt, with jitter
    backoff_max_s: float = 30.0

    def __post_init__(self) -> None:
        if self.prefill_mode not in PREFILL_MODES:
            raise ValueError(f"prefill_mode must be one of {PREFILL_MODES}, not {self.prefill_mode!r}")
        if self.max_in_flight < 1 or self.max_attempts < 1:
            raise ValueError("max_in_flight and max_attempts must be at least 1")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if self.backend == "hf" and not self.model:
            raise ValueError("backend 'hf' needs a model path or id: set REER_<ROLE>_MODEL")
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend 'openai' needs a server: set REER_<ROLE>_BASE_URL (e.g. http://127.0.0.1:8000/v1)")

    @classmethod
    def from_env(cls, role: str, environ: Mapping[str, str] | None = None) -> "BackendSpec":
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        prefix = f"REER_{role.upper()}_"
        values: dict = {}
        for name, raw in settings.role_variables(role, environ).items():
            if name not in ENV_FIELDS:
                continue  # e.g. REER_JUDGE_STRUCTURED, read by the judge itself
            kind = ENV_FIELDS[name]
            try:
                values[name] = kind(raw)
            except ValueError as exc:
                raise ValueError(f"{prefix + name.upper()}={raw!r} is not a valid {kind.__name__}") from exc
        return cls(**values)

    def env(self, role: str) -> dict[str, str]:
        """The REER_<ROLE>_* variables that reproduce this spec in another process."""
        prefix = f"REER_{role.upper()}_"
        default = BackendSpec()
        out = {prefix + "BACKEND": self.backend}
        for name in ENV_FIELDS:
            value = getattr(self, name)
            if value is not None and value != getattr(default, name):
                out[prefix + name.upper()] = str(value)
        return out

    def describe(self) -> dict[str, object]:
        """Safe to log and record: names the key's variable, never its value."""
        return {name: getattr(self, name) for name in ENV_FIELDS if getattr(self, name) is not None}


def _plain_type(hint: object) -> type:
    """``str`` for ``str | None``: the type a variable's text is parsed into."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint  # type: ignore[return-value]


# every field of BackendSpec, by name, with the type its REER_<ROLE>_<NAME> text is parsed into
ENV_FIELDS: dict[str, type] = {f.name: _plain_type(t) for f, t in zip(
    dataclasses.fields(BackendSpec), typing.get_type_hints(BackendSpec).values())}


def model_id(spec: BackendSpec, role: str = "generator") -> str:
    """The id recorded in lineage for a role's model, known without loading it.

    With no model named, the local backends use the embedded builds: the generator
    (``reer-embedded:<key>``) or, for the scorer role, the embedded scorer
    (``reer-embedded-scorer:<key>``, docs/embedded-model.md).
    """
    if not spec.model and spec.backend in ("embedded", "vllm"):
        if role == "scorer":
            from reer_assets.backends.embedded_scorer import scorer_build_key

            return f"{spec.backend}:reer-embedded-scorer:{scorer_build_key()}".removeprefix("embedded:")
        from reer_assets.backends.embedded import build_key

        return f"{spec.backend}:reer-embedded:{build_key()}".removeprefix("embedded:")
    if spec.backend == "openai":
        return f"openai:{spec.model or 'served-default'}"
    return f"{spec.backend}:{spec.model}"


def resolve_model_path(spec: BackendSpec, role: str = "generator") -> tuple[str, str]:
    """(path to load, model id to record) for the local backends (built on first use when embedded)."""
    if not spec.model:
        if role == "scorer":
            from reer_assets.backends.embedded_scorer import ensure_scorer_model

            return str(ensure_scorer_model()), model_id(spec, role)
        from reer_assets.backends.embedded import ensure_embedded_model

        return str(ensure_embedded_model()), model_id(spec, role)
    assert spec.model
    return spec.model, model_id(spec, role)


@lru_cache(maxsize=4)
def _loaded(path: str, device: str | None):
    from reer_assets.backends.hf import LoadedModel

    return LoadedModel.load(path, device=device)


@lru_cache(maxsize=2)
def _engine(path: str, gpu_memory_utilization: float | None):
    from reer_assets.backends.vllm_engine import EngineSettings, VLLMEngine

    return VLLMEngine(EngineSettings(path, gpu_memory_utilization=gpu_memory_utilization))


@lru_cache(maxsize=4)
def _client(spec: BackendSpec):
    from reer_assets.backends.openai_compat import OpenAIClient

    # a served model's tokenizer is read locally: the named model, else the embedded build
    return OpenAIClient(dataclasses.replace(spec, tokenizer=spec.tokenizer or resolve_model_path(spec)[0]))


def load_generator(spec: BackendSpec):
    if spec.backend in ("embedded", "hf"):
        from reer_assets.backends.hf import HFGenerator

        path, ident = resolve_model_path(spec)
        return HFGenerator(_loaded(path, spec.device), model_id=ident)
    if spec.backend == "vllm":
        from reer_assets.backends.vllm_engine import VLLMGenerator

        path, ident = resolve_model_path(spec)
        return VLLMGenerator(_engine(path, spec.gpu_memory_utilization), ident)
    from reer_assets.backends.openai_compat import OpenAIGenerator

    return OpenAIGenerator(_client(spec), model_id(spec))


def load_scorer(spec: BackendSpec):
    if spec.backend in ("embedded", "hf"):
        from reer_assets.backends.hf import HFScorer

        path, ident = resolve_model_path(spec, "scorer")
        return HFScorer(_loaded(path, spec.device), model_id=ident)
    if spec.backend == "vllm":
        from reer_assets.backends.vllm_engine import VLLMScorer

        path, ident = resolve_model_path(spec, "scorer")
        return VLLMScorer(_engine(path, spec.gpu_memory_utilization), ident)
    from reer_assets.backends.openai_compat import OpenAIScorer

    return OpenAIScorer(_client(spec), model_id(spec, "scorer"))
