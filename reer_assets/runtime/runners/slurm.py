"""``REER_WORKLOAD_RUNNER=slurm``: each workload run is one sbatch job over SSH (dagster-slurm's
``ComputeResource`` with a ``BashLauncher``), started by a three-line payload from the project folder on the
cluster; the step waits as long as the job's time limit allows. docs/scale.md, "Slurm"."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import dagster as dg

from reer_assets import settings
from reer_assets.runtime.runners.common import WorkloadRunError, remote_env


class SlurmRunnerSettings(dg.Config):
    """``REER_WORKLOAD_RUNNER=slurm``: each run is one sbatch job over SSH (dagster-slurm's
    ``ComputeResource`` with a ``BashLauncher``). Variables ``REER_SLURM_<FIELD>``."""

    host: Optional[str] = None  # the login node
    user: Optional[str] = None
    key_path: Optional[str] = None
    port: int = 22
    partition: str = ""
    gpus: int = 0  # GPUs per node (--gres=gpu:N)
    time_limit: str = "04:00:00"
    cpus: int = 8  # cpus per task
    mem: Optional[str] = None  # omitted on GPU partitions unless set
    account: Optional[str] = None
    qos: Optional[str] = None
    env_path: Optional[str] = None  # a pre-deployed environment: <env_path>/env/bin/python, <env_path>/activate.sh
    project_dir: Optional[str] = None  # the project on the cluster (shared file system); the job starts there
    remote_base: Optional[str] = None  # where dagster-slurm keeps run folders (default: the account's home)
    known_hosts: Optional[str] = None  # the login node's host key, checked strictly (default: ~/.ssh/known_hosts)
    queue_wait_s: int = 86400  # how long a job may wait in the queue; the poll timeout is this + time_limit + margin


SLURM_POLL_MARGIN_S = 600  # after the time limit: Slurm's KillWait, the epilog, the last log lines coming back
SLURM_NO_LIMIT_POLL_S = 10 * 365 * 86400  # time_limit UNLIMITED: the step waits as long as the job runs


def slurm_time_limit_s(limit: str) -> Optional[int]:
    """Seconds in a Slurm time limit, as ``sbatch -t`` reads it (``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``,
    ``D-H:M:S``); None for ``UNLIMITED``/``INFINITE``. A malformed value names REER_SLURM_TIME_LIMIT."""
    text = str(limit).strip()
    if text.lower() in ("unlimited", "infinite"):
        return None
    try:
        days, _, rest = text.rpartition("-")
        parts = [int(p) for p in rest.split(":")]
        if any(p < 0 for p in parts) or not 1 <= len(parts) <= 3:
            raise ValueError
        if days:
            hours, minutes, seconds = (parts + [0, 0])[:3]
            return int(days) * 86400 + hours * 3600 + minutes * 60 + seconds
        if len(parts) == 1:
            return parts[0] * 60
        if len(parts) == 2:
            return parts[0] * 60 + parts[1]
        return parts[0] * 3600 + parts[1] * 60 + parts[2]
    except ValueError:
        raise ValueError(f"REER_SLURM_TIME_LIMIT={limit!r} is not a Slurm time limit "
                         "(M, M:S, H:M:S, D-H, D-H:M, D-H:M:S or UNLIMITED)") from None


def compute(cfg: SlurmRunnerSettings):
    """dagster-slurm's ``ComputeResource`` for this configuration (mode ``slurm``, one sbatch job per run)."""
    from dagster_slurm import BashLauncher, ComputeResource, SlurmQueueConfig, SlurmResource, SSHConnectionResource

    ssh = SSHConnectionResource(host=cfg.host, user=cfg.user, port=cfg.port,
                                **({"key_path": cfg.key_path} if cfg.key_path else {}),
                                **({"known_hosts_file": cfg.known_hosts} if cfg.known_hosts else {}))
    queue = SlurmQueueConfig(partition=cfg.partition, time_limit=cfg.time_limit, cpus=cfg.cpus,
                             gpus_per_node=cfg.gpus, mem=cfg.mem, account=cfg.account, qos=cfg.qos)
    slurm = SlurmResource(ssh=ssh, queue=queue, **({"remote_base": cfg.remote_base} if cfg.remote_base else {}))
    return ComputeResource(mode="slurm", slurm=slurm, default_launcher=BashLauncher(),
                           pre_deployed_env_path=cfg.env_path)


def poll_timeout(cfg: SlurmRunnerSettings) -> int:
    """How long the step waits for one Slurm job (dagster-slurm's ``poll_timeout``, counted from the
    submission): the job's time limit plus ``queue_wait_s`` in the queue plus a margin. It follows
    ``REER_SLURM_TIME_LIMIT``, so Slurm's limit is what ends a long job, never the client's default
    of 3,600 s; with ``UNLIMITED`` the step waits as long as the job runs."""
    limit = slurm_time_limit_s(cfg.time_limit)
    if limit is None:
        return SLURM_NO_LIMIT_POLL_S
    return limit + max(0, int(cfg.queue_wait_s)) + SLURM_POLL_MARGIN_S


def payload_name(name: str) -> str:
    return f"reer_workload_{name}.py"


def payload_text(cfg: SlurmRunnerSettings, name: str) -> str:
    """The payload dagster-slurm uploads and runs: three lines that start the workload module from
    the project folder on the cluster (the workload itself is the same program as everywhere)."""
    project = cfg.project_dir or str(settings.REPO_ROOT)
    return (f"import os, runpy, sys\nos.chdir({project!r})\nsys.path.insert(0, {project!r})\n"
            f"runpy.run_module('reer_assets.workloads.{name}', run_name='__main__', alter_sys=True)\n")


def write_payload(cfg: SlurmRunnerSettings, name: str, folder: Path) -> Path:
    """Write the payload into ``folder``, a private folder of this run (:func:`run` makes it with
    ``tempfile.mkdtemp``: mode 0700, a new name each time), as a new file: ``O_EXCL|O_NOFOLLOW``, so
    nothing planted there beforehand (a symlink, another user's file) is ever followed or reused."""
    path = Path(folder) / payload_name(name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(payload_text(cfg, name))
    return path


def submission(cfg: SlurmRunnerSettings, name: str, env: dict[str, str], run_dir: str = "$RUN_DIR",
               pipes_env: Optional[dict[str, str]] = None) -> dict[str, str]:
    """The job script and the sbatch command dagster-slurm would submit for one run, rendered with
    its own launcher and command builder (``run_dir``: the remote run folder it creates)."""
    from dagster_slurm import BashLauncher

    env_vars, _ = remote_env(env)
    env_path = cfg.env_path or "$ENV_PATH"
    payload = f"{run_dir}/{payload_name(name)}"
    plan = BashLauncher().prepare_execution(
        payload_path=payload, python_executable=f"{env_path}/env/bin/python", working_dir=run_dir,
        pipes_context=dict(pipes_env or {}), extra_env=env_vars, activation_script=f"{env_path}/activate.sh")
    client = compute(cfg).get_pipes_client(None)
    sbatch = client._build_sbatch_command(job_name=f"reer_{name}", working_dir=run_dir,
                                          output_file=f"{run_dir}/slurm-%j.out",
                                          error_file=f"{run_dir}/slurm-%j.err", script_path=f"{run_dir}/job.sh")
    return {"script": "\n".join(plan.payload), "sbatch": sbatch, "payload": payload_text(cfg, name)}


def run(cfg: SlurmRunnerSettings, context, name: str, extras: dict[str, Any], env: dict[str, str]):
    """One run as an sbatch job; the client's invocation. Its payload is written to a private folder,
    removed afterwards."""
    env_vars, secrets = remote_env(env)
    if secrets:
        context.log.info(f"not written to the Slurm job script (set them on the cluster): {', '.join(secrets)}")
    timeout = poll_timeout(cfg)
    folder = tempfile.mkdtemp(prefix="reer-slurm-payload-")  # private to this run: 0700, a fresh name
    try:
        payload = write_payload(cfg, name, Path(folder))
        return compute(cfg).run(context=context, payload_path=str(payload), extra_env=env_vars,
                                extras=extras, poll_timeout=timeout)
    except Exception as exc:  # a failed, cancelled, timed-out or lost job; SSH or submission errors
        raise WorkloadRunError("slurm_job_failed", f"Slurm job of workload {name}: {type(exc).__name__}: "
                                                   f"{exc}") from exc
    finally:
        shutil.rmtree(folder, ignore_errors=True)
