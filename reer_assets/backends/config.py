"""Which backend each model role uses: its :class:`BackendSpec` (declared once, in ``backends/spec.py``)
and the loaders that turn one into a generator or a scorer.

The `reer` CLI, the Dagster resource (``defs/resources.py``, whose fields are derived from that
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
from functools import lru_cache

from reer_assets.backends.spec import (  # noqa: F401 (declared there, re-exported here)
    BACKENDS, ENV_FIELDS, PREFILL_MODES, ROLES, BackendSpec, model_id)

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
