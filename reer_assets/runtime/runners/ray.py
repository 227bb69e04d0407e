"""``REER_WORKLOAD_RUNNER=ray``: each workload run (each shard) is one Ray job (dagster-ray's
``PipesRayJobClient``), run from the project folder on the Ray nodes (nothing uploaded), with the engine's
environment and the stage's ``REER_<ROLE>_*`` variables in its runtime env. docs/scale.md, "Ray"."""

from __future__ import annotations

import os
import shlex
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

import dagster as dg

from reer_assets import settings
from reer_assets.runtime.runners.common import WorkloadRunError, remote_env, workload_command


class RayRunnerSettings(dg.Config):
    """``REER_WORKLOAD_RUNNER=ray``: each workload run (each shard) is one Ray job (dagster-ray's
    ``PipesRayJobClient``). Variables ``REER_RAY_<FIELD>``."""

    address: Optional[str] = None  # the head's job-submission (dashboard) address, http://HOST:8265
    project_dir: Optional[str] = None  # the project on the Ray nodes (default: this checkout; nothing is uploaded)
    python: Optional[str] = None  # the interpreter on the Ray nodes (default: this one)
    num_cpus: float = 1.0  # CPUs a job reserves (and its torch threads, OMP_NUM_THREADS)
    num_gpus: float = 0.0  # GPUs a job reserves (the workload's local models use them)
    poll_interval_s: float = 1.0


def ray_auth_token(environ: Optional[dict] = None) -> Optional[str]:
    """The Ray cluster's token (Ray's token authentication, ``RAY_AUTH_MODE=token`` on the nodes) from
    this process's environment, in Ray's own order: ``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH``
    names; None when neither is set (then Ray's client does what it does by itself). The runner sends it
    only as the job client's ``Authorization`` header: never in a job's entrypoint, runtime env, metadata
    or a log line. A path that cannot be read, or an empty file, is an error naming the variable."""
    env = os.environ if environ is None else environ
    token = (env.get("RAY_AUTH_TOKEN") or "").strip()
    if token:
        return token
    path = env.get("RAY_AUTH_TOKEN_PATH")
    if not path:
        return None
    try:
        token = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"RAY_AUTH_TOKEN_PATH={path}: cannot read the Ray token ({exc.strerror})") from None
    if not token:
        raise ValueError(f"RAY_AUTH_TOKEN_PATH={path} is empty")
    return token


def ray_auth_headers(environ: Optional[dict] = None) -> Optional[dict[str, str]]:
    """HTTP headers for the Ray job client: ``Authorization: Bearer <token>`` when a token is set."""
    token = ray_auth_token(environ)
    return {"Authorization": f"Bearer {token}"} if token else None


class RayJobs:
    """The Ray jobs a runner has in flight (submission id -> address), shared by the threads of a step's shards."""

    def __init__(self) -> None:
        self._jobs: dict[str, str] = {}
        self._lock = threading.Lock()

    def add(self, job_id: str, address: str) -> None:
        with self._lock:
            self._jobs[job_id] = address

    def discard(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)

    def snapshot(self) -> dict[str, str]:
        with self._lock:
            return dict(self._jobs)


def job_params(cfg: RayRunnerSettings, name: str, env: dict[str, str],
               extras: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """``JobSubmissionClient.submit_job`` parameters of one run (dagster-ray adds the Pipes variables)."""
    env_vars, _ = remote_env(env)
    threads = str(max(1, int(cfg.num_cpus)))
    env_vars = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, **env_vars}
    token = ray_auth_token()
    if token:  # the Ray token never rides in a runtime env, whatever variable would carry it
        env_vars = {k: v for k, v in env_vars.items() if token not in v}
    project = cfg.project_dir or str(settings.REPO_ROOT)
    command = " ".join(shlex.quote(part) for part in workload_command(name, cfg.python))
    shard = (extras or {}).get("shard")
    suffix = f"-shard{shard['index']}of{shard['count']}" if shard else ""
    params: dict[str, Any] = {
        # run from the project folder instead of uploading it (an uploaded working_dir must stay under
        # 100 MB, and a folder holding .venv is refused with HTTP 413)
        "entrypoint": f"cd {shlex.quote(project)} && exec {command}",
        "runtime_env": {"env_vars": env_vars},
        "entrypoint_num_cpus": cfg.num_cpus,
        "submission_id": f"reer-{name}{suffix}-{uuid.uuid4().hex[:10]}",
    }
    if cfg.num_gpus:
        params["entrypoint_num_gpus"] = cfg.num_gpus
    return params


def run(cfg: RayRunnerSettings, jobs: RayJobs, context, name: str, extras: dict[str, Any], env: dict[str, str]):
    """One run as a Ray job, tracked in ``jobs`` while in flight; the client's invocation."""
    from dagster_ray import PipesRayJobClient

    params = job_params(cfg, name, env, extras)
    _, secrets = remote_env(env)
    if secrets:
        context.log.info(f"not sent to the Ray job (set them on the Ray nodes): {', '.join(secrets)}")
    # one client per run: its message reader follows one job; the token (if any) only as a header
    client = PipesRayJobClient(address=cfg.address, poll_interval=cfg.poll_interval_s, headers=ray_auth_headers())
    jobs.add(params["submission_id"], cfg.address)
    try:
        return client.run(context=context, submit_job_params=params, extras=extras)
    except RuntimeError as exc:  # dagster-ray: "Ray job <id> failed with status FAILED|STOPPED ..."
        raise WorkloadRunError("ray_job_failed", str(exc)) from exc
    finally:
        jobs.discard(params["submission_id"])


def cancel(jobs: RayJobs, log: Optional[Callable[[str], None]] = None) -> list[str]:
    """Stop the Ray jobs in ``jobs``; the ids stopped (a job that ended meanwhile is logged, not raised)."""
    from ray.job_submission import JobSubmissionClient

    stopped = []
    for job_id, address in jobs.snapshot().items():
        try:
            JobSubmissionClient(address, headers=ray_auth_headers()).stop_job(job_id)
            stopped.append(job_id)
        except Exception as exc:  # noqa: BLE001 (best effort: the job may have ended meanwhile)
            if log:
                log(f"could not stop Ray job {job_id}: {exc}")
    return stopped
