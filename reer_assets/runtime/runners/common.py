"""What every workload runner shares: the command that starts a workload, the error a remote run fails
with, the environment a remote run gets (secrets left out) and a runner's settings from ``REER_<KIND>_*``."""

from __future__ import annotations

import json
import sys
from typing import Any, Optional

from reer_assets import settings


def workload_command(name: str, python: str | None = None) -> list[str]:
    return [python or sys.executable, "-m", f"reer_assets.workloads.{name}"]


class WorkloadRunError(Exception):
    """A workload run that failed on a remote runner (a Ray job, a pod, a Slurm job), with a short class
    (``ray_job_failed``, ``k8s_pod_failed``, ``slurm_job_failed``) that failed rows record."""

    def __init__(self, error_class: str, message: str):
        super().__init__(message)
        self.error_class = error_class


def split_secrets(env: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """``env`` without the variables that hold API keys (named by any ``*_API_KEY_ENV`` value in it),
    and their names. A remote runner never puts a key in a Ray runtime env, a pod spec or a job
    script (each is visible to anyone who can list jobs): the remote side provides the variable
    itself (Ray nodes' environment, ``REER_K8S_SECRET``, the Slurm account's environment)."""
    names = sorted({value for name, value in env.items() if name.endswith("_API_KEY_ENV") and value})
    return {k: v for k, v in env.items() if k not in names}, names


def remote_env(env: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The environment of a remote run: the forwarded engine settings and the stage's variables,
    without secrets (their names are returned, for a warning)."""
    return split_secrets({**settings.forwarded_environment(), "PYTHONUNBUFFERED": "1", **env})


def parse_mapping(text: str | None) -> dict[str, str]:
    """A ``{"k": "v"}`` JSON object or ``k=v,k2=v2`` text (a node selector, labels) as a dict."""
    if not text:
        return {}
    text = text.strip()
    if text.startswith("{"):
        return {str(k): str(v) for k, v in json.loads(text).items()}
    pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
    if any(len(p) != 2 for p in pairs):
        raise ValueError(f"expected k=v,k2=v2 or a JSON object, got {text!r}")
    return {k.strip(): v.strip() for k, v in pairs}


def settings_from_env(cls: type, kind: str, environ: Optional[dict] = None):
    """``cls`` (a runner's settings) from the ``REER_<KIND>_*`` variables that are set; an unknown one is
    an error naming it and the known fields."""
    values: dict[str, Any] = dict(settings.runner_variables(kind, environ))
    known = set(cls.model_fields)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown setting(s) REER_{kind.upper()}_{', '.join(u.upper() for u in unknown)}; "
                         f"known: {', '.join(sorted(known))}")
    if "node_selector" in values:
        values["node_selector"] = parse_mapping(values["node_selector"])
    return cls(**values)
