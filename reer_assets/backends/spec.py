"""A role's backend, declared once: :class:`BackendSpec`, its ``REER_<ROLE>_*`` fields, the model id it
records, and the role rule (which roles must be set up, and what a base URL alone means).

Everything that reads a role's settings builds on this module: the loaders (``backends/config.py``),
the OpenAI-compatible client (``backends/openai_compat.py``), the judge (``backends/judge.py``), the
Dagster resource (``defs/resources.py``, whose fields are derived from :class:`BackendSpec`) and the
workloads. It imports no other backend at module level, so none of them imports it back in a cycle.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
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
    # REER_<ROLE>_BATCH=1: the calls that can wait go out as one OpenAI batch file (backends/batch.py):
    # to the server's Batches API with a base_url, else through vLLM's run-batch on the local model
    batch: bool = False

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
                values[name] = parse_bool(raw) if kind is bool else kind(raw)
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


def parse_bool(raw: str) -> bool:
    """A boolean variable's text: 1/true/yes/on or 0/false/no/off (any case); anything else is refused."""
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{raw!r} is not a boolean")


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


# --- the role rule ------------------------------------------------------------------------------------

OPTIONAL_ROLES = ("judge",)  # a role nobody has to set up: without a backend or a base URL it is absent


def role_configured(role: str, variables: Mapping[str, str]) -> bool:
    """Whether ``role`` is set up by its ``REER_<ROLE>_*`` ``variables`` (by field name, as
    ``settings.role_variables`` gives them): the generator and the scorer always are (the embedded
    default); the judge is optional, set up by a backend or a base URL."""
    return role not in OPTIONAL_ROLES or bool(variables.get("backend") or variables.get("base_url"))


def role_backend(role: str, variables: Mapping[str, str]) -> str | None:
    """The backend ``role``'s variables choose: ``REER_<ROLE>_BACKEND``, or for the optional judge a base URL
    alone means ``openai`` (a judge named by its server alone is an OpenAI-compatible one); None when the
    variables name none (the spec's default then applies)."""
    if variables.get("backend"):
        return variables["backend"]
    if role in OPTIONAL_ROLES and variables.get("base_url"):
        return "openai"
    return None
