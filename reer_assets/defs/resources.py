"""Connections: model backends per role, the lineage store, the Pipes client.

Backends come from the same REER_<ROLE>_* variables the CLI reads. An API key is never a
config value: the resource names the variable that holds it, and the workload reads it
from its environment.
"""


import dataclasses
import importlib
import json
import os
import shlex
import shutil
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any, Optional

import dagster as dg
import polars as pl
from pydantic import PrivateAttr

from reer_assets import settings
from reer_assets.backends.spec import ENV_FIELDS, BackendSpec, model_id, role_backend, role_configured
from reer_assets.lib import duckdb_store


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


def _mapping(text: str | None) -> dict[str, str]:
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


class RayRunnerSettings(dg.Config):
    """``REER_WORKLOAD_RUNNER=ray``: each workload run (each shard) is one Ray job (dagster-ray's
    ``PipesRayJobClient``). Variables ``REER_RAY_<FIELD>``."""

    address: Optional[str] = None  # the head's job-submission (dashboard) address, http://HOST:8265
    project_dir: Optional[str] = None  # the project on the Ray nodes (default: this checkout; nothing is uploaded)
    python: Optional[str] = None  # the interpreter on the Ray nodes (default: this one)
    num_cpus: float = 1.0  # CPUs a job reserves (and its torch threads, OMP_NUM_THREADS)
    num_gpus: float = 0.0  # GPUs a job reserves (the workload's local models use them)
    poll_interval_s: float = 1.0


class K8sRunnerSettings(dg.Config):
    """``REER_WORKLOAD_RUNNER=k8s``: each run is one pod (dagster-k8s's ``PipesK8sClient``).
    Variables ``REER_K8S_<FIELD>``; ``node_selector`` as ``k=v,k2=v2`` or a JSON object."""

    image: Optional[str] = None  # an image with this project installed at project_dir
    namespace: Optional[str] = None  # default: the current namespace in the cluster, else "default"
    gpus: int = 1  # nvidia.com/gpu limit per pod
    node_selector: dict[str, str] = {}  # e.g. a GPU node pool: cloud.google.com/gke-accelerator=nvidia-h100-80gb
    cpu: Optional[str] = None  # requests = limits, e.g. "8"
    memory: Optional[str] = None  # e.g. "64Gi"
    project_dir: str = "/app"  # the container's working directory
    python: str = "python"
    service_account: Optional[str] = None
    secret: Optional[str] = None  # a Secret whose keys become the pod's env (API keys): envFrom
    volume_claim: Optional[str] = None  # a ReadWriteMany PVC mounted at DAGSTER_HOME (checkpoints, outputs)
    kubeconfig: Optional[str] = None  # default: in-cluster config when running in a pod, else ~/.kube/config
    poll_interval_s: float = 5.0


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


def _settings_from_env(cls: type, kind: str, environ: Optional[dict] = None):
    values: dict[str, Any] = dict(settings.runner_variables(kind, environ))
    known = set(cls.model_fields)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown setting(s) REER_{kind.upper()}_{', '.join(u.upper() for u in unknown)}; "
                         f"known: {', '.join(sorted(known))}")
    if "node_selector" in values:
        values["node_selector"] = _mapping(values["node_selector"])
    return cls(**values)


class WorkloadRunner(dg.ConfigurableResource):
    """Where a stage's model work (``reer_assets.workloads.<stage>``) runs; the workload is the same
    program everywhere (``workloads/common.py::pipes_main``), and so is what comes back: its logs and
    its summary (a Pipes custom message).

    ``subprocess`` (the default): a child process of the Dagster step (``PipesSubprocessClient``).
    ``ray``: a Ray job on the cluster at ``ray.address`` (``PipesRayJobClient``), run from the project
    folder on the Ray nodes (nothing uploaded), with the engine's environment (``settings.forwarded_environment``)
    and the stage's ``REER_<ROLE>_*`` variables in its runtime env. ``k8s``: a pod
    (``PipesK8sClient``) with GPU limits and a node selector. ``slurm``: an sbatch job
    (dagster-slurm). ``in_process``: the workload's ``run(extras, log)`` in this process, with its
    environment set for the call; the unit tests use it so that every asset has a test of seconds.
    docs/scale.md, "Workload runners".
    """

    mode: str = "subprocess"
    ray: RayRunnerSettings = RayRunnerSettings()
    k8s: K8sRunnerSettings = K8sRunnerSettings()
    slurm: SlurmRunnerSettings = SlurmRunnerSettings()
    _ray_jobs: dict = PrivateAttr(default_factory=dict)  # submission id -> address, while in flight
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    @classmethod
    def from_env(cls, environ: Optional[dict] = None) -> "WorkloadRunner":
        mode = settings.workload_runner() if environ is None else environ.get("REER_WORKLOAD_RUNNER") or "subprocess"
        return cls(mode=mode, ray=_settings_from_env(RayRunnerSettings, "ray", environ),
                   k8s=_settings_from_env(K8sRunnerSettings, "k8s", environ),
                   slurm=_settings_from_env(SlurmRunnerSettings, "slurm", environ))

    @property
    def concurrent(self) -> bool:
        """Whether several runs may be in flight from one step (the shards of refined_trajectories):
        not in process (one environment), not on Slurm (its client installs signal handlers, which only
        the main thread may, and keeps one remote folder per step)."""
        return self.mode in ("subprocess", "ray", "k8s")

    def check(self) -> None:
        """Fail early, naming the variable, when the chosen runner lacks a setting it needs."""
        if self.mode not in settings.WORKLOAD_RUNNERS:
            raise ValueError(f"unknown workload runner {self.mode!r}: "
                             f"choose one of {', '.join(settings.WORKLOAD_RUNNERS)}")
        if self.mode == "ray" and not self.ray.address:
            raise ValueError("REER_WORKLOAD_RUNNER=ray needs REER_RAY_ADDRESS, the head's job-submission address "
                             "(http://HOST:8265)")
        if self.mode == "k8s" and not self.k8s.image:
            raise ValueError("REER_WORKLOAD_RUNNER=k8s needs REER_K8S_IMAGE, an image with this project installed")
        if self.mode == "slurm" and not (self.slurm.host and self.slurm.user):
            raise ValueError("REER_WORKLOAD_RUNNER=slurm needs REER_SLURM_HOST and REER_SLURM_USER (the login node)")
        if self.mode == "slurm":
            self.slurm_poll_timeout()  # a malformed REER_SLURM_TIME_LIMIT fails here, before any job

    def run(self, context: dg.AssetExecutionContext, name: str, extras: dict[str, Any],
            env: dict[str, str]) -> dict[str, Any]:
        """Run workload ``name`` with ``extras`` and the stage's ``env``; its summary (last custom message)."""
        self.check()
        if self.mode == "in_process":
            module = importlib.import_module(f"reer_assets.workloads.{name}")
            with settings.environment(env):
                return module.run(extras, context.log.info)
        if self.mode == "subprocess":
            invocation = dg.PipesSubprocessClient().run(context=context, command=workload_command(name),
                                                        extras=extras, env=env)
        else:
            launch = {"ray": self._run_ray, "k8s": self._run_k8s, "slurm": self._run_slurm}[self.mode]
            invocation = launch(context, name, extras, env)
        messages = invocation.get_custom_messages()
        return messages[-1] if messages else {}

    # --- what each remote runner submits (pure: the config tests render these) ---------------------

    def remote_env(self, env: dict[str, str]) -> tuple[dict[str, str], list[str]]:
        """The environment of a remote run: the forwarded engine settings and the stage's variables,
        without secrets (their names are returned, for a warning)."""
        return split_secrets({**settings.forwarded_environment(), "PYTHONUNBUFFERED": "1", **env})

    def ray_job(self, name: str, env: dict[str, str], extras: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """``JobSubmissionClient.submit_job`` parameters of one run (dagster-ray adds the Pipes variables)."""
        cfg = self.ray
        env_vars, _ = self.remote_env(env)
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

    def _run_ray(self, context, name: str, extras: dict[str, Any], env: dict[str, str]):
        from dagster_ray import PipesRayJobClient

        params = self.ray_job(name, env, extras)
        _, secrets = self.remote_env(env)
        if secrets:
            context.log.info(f"not sent to the Ray job (set them on the Ray nodes): {', '.join(secrets)}")
        # one client per run: its message reader follows one job; the token (if any) only as a header
        client = PipesRayJobClient(address=self.ray.address, poll_interval=self.ray.poll_interval_s,
                                   headers=ray_auth_headers())
        with self._lock:
            self._ray_jobs[params["submission_id"]] = self.ray.address
        try:
            return client.run(context=context, submit_job_params=params, extras=extras)
        except RuntimeError as exc:  # dagster-ray: "Ray job <id> failed with status FAILED|STOPPED ..."
            raise WorkloadRunError("ray_job_failed", str(exc)) from exc
        finally:
            with self._lock:
                self._ray_jobs.pop(params["submission_id"], None)

    def cancel(self, log=None) -> list[str]:
        """Stop the remote runs this runner has in flight (called when a step is interrupted while its
        shards run in threads, where Dagster's interrupt never reaches the clients): the Ray jobs. A
        ``subprocess`` child or a pod ends with its own client; returns what was stopped."""
        from ray.job_submission import JobSubmissionClient

        with self._lock:
            jobs = dict(self._ray_jobs)
        stopped = []
        for job_id, address in jobs.items():
            try:
                JobSubmissionClient(address, headers=ray_auth_headers()).stop_job(job_id)
                stopped.append(job_id)
            except Exception as exc:  # noqa: BLE001 (best effort: the job may have ended meanwhile)
                if log:
                    log(f"could not stop Ray job {job_id}: {exc}")
        return stopped

    def k8s_pod_spec(self, name: str, env: dict[str, str]) -> dict[str, Any]:
        """The base pod spec of one run: image, command, working dir, GPU limits, node selector, env,
        secrets as ``envFrom``, the shared volume at DAGSTER_HOME. ``PipesK8sClient`` adds the Pipes
        variables to the first container's env."""
        cfg = self.k8s
        env_vars, _ = self.remote_env(env)
        limits: dict[str, str] = {}
        if cfg.gpus:
            limits["nvidia.com/gpu"] = str(cfg.gpus)
        if cfg.cpu:
            limits["cpu"] = cfg.cpu
        if cfg.memory:
            limits["memory"] = cfg.memory
        container: dict[str, Any] = {
            "name": "reer-workload", "image": cfg.image, "command": workload_command(name, cfg.python),
            "working_dir": cfg.project_dir, "env": [{"name": k, "value": v} for k, v in env_vars.items()],
            "resources": {"limits": limits, "requests": dict(limits)},
        }
        spec: dict[str, Any] = {"containers": [container], "restart_policy": "Never"}
        if cfg.secret:
            container["env_from"] = [{"secret_ref": {"name": cfg.secret}}]
        if cfg.node_selector:
            spec["node_selector"] = dict(cfg.node_selector)
        if cfg.gpus:  # GPU node pools are usually tainted for GPU pods only
            spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        if cfg.service_account:
            spec["service_account_name"] = cfg.service_account
        if cfg.volume_claim:
            home = env_vars["DAGSTER_HOME"]
            spec["volumes"] = [{"name": "reer-home", "persistent_volume_claim": {"claim_name": cfg.volume_claim}}]
            container["volume_mounts"] = [{"name": "reer-home", "mount_path": home}]
        return spec

    def k8s_pod(self, name: str, env: dict[str, str], pipes_env: Optional[dict[str, str]] = None):
        """The ``V1Pod`` that ``PipesK8sClient`` would create for one run (``pipes_env``: its Pipes variables)."""
        from dagster_k8s.pipes import build_pod_body

        return build_pod_body(pod_name=f"reer-{name}-{uuid.uuid4().hex[:8]}", image=self.k8s.image,
                              command=workload_command(name, self.k8s.python), env_vars=dict(pipes_env or {}),
                              base_pod_meta={"labels": {"app.kubernetes.io/name": "reer-workload",
                                                        "reer/workload": name}},
                              base_pod_spec=self.k8s_pod_spec(name, env))

    def k8s_client(self):
        from dagster_k8s import PipesK8sClient

        return PipesK8sClient(kubeconfig_file=self.k8s.kubeconfig, poll_interval=self.k8s.poll_interval_s)

    def _run_k8s(self, context, name: str, extras: dict[str, Any], env: dict[str, str]):
        spec = self.k8s_pod_spec(name, env)
        try:
            return self.k8s_client().run(
                context=context, extras=extras, image=self.k8s.image, command=workload_command(name, self.k8s.python),
                namespace=self.k8s.namespace, base_pod_spec=spec,
                base_pod_meta={"labels": {"app.kubernetes.io/name": "reer-workload", "reer/workload": name}})
        except Exception as exc:  # pod failed, evicted, image pull error, API error
            raise WorkloadRunError("k8s_pod_failed", f"{type(exc).__name__}: {exc}") from exc

    def slurm_compute(self):
        """dagster-slurm's ``ComputeResource`` for this configuration (mode ``slurm``, one sbatch job per run)."""
        from dagster_slurm import BashLauncher, ComputeResource, SlurmQueueConfig, SlurmResource, SSHConnectionResource

        cfg = self.slurm
        ssh = SSHConnectionResource(host=cfg.host, user=cfg.user, port=cfg.port,
                                    **({"key_path": cfg.key_path} if cfg.key_path else {}),
                                    **({"known_hosts_file": cfg.known_hosts} if cfg.known_hosts else {}))
        queue = SlurmQueueConfig(partition=cfg.partition, time_limit=cfg.time_limit, cpus=cfg.cpus,
                                 gpus_per_node=cfg.gpus, mem=cfg.mem, account=cfg.account, qos=cfg.qos)
        slurm = SlurmResource(ssh=ssh, queue=queue, **({"remote_base": cfg.remote_base} if cfg.remote_base else {}))
        return ComputeResource(mode="slurm", slurm=slurm, default_launcher=BashLauncher(),
                               pre_deployed_env_path=cfg.env_path)

    def slurm_poll_timeout(self) -> int:
        """How long the step waits for one Slurm job (dagster-slurm's ``poll_timeout``, counted from the
        submission): the job's time limit plus ``queue_wait_s`` in the queue plus a margin. It follows
        ``REER_SLURM_TIME_LIMIT``, so Slurm's limit is what ends a long job, never the client's default
        of 3,600 s; with ``UNLIMITED`` the step waits as long as the job runs."""
        limit = slurm_time_limit_s(self.slurm.time_limit)
        if limit is None:
            return SLURM_NO_LIMIT_POLL_S
        return limit + max(0, int(self.slurm.queue_wait_s)) + SLURM_POLL_MARGIN_S

    @staticmethod
    def slurm_payload_name(name: str) -> str:
        return f"reer_workload_{name}.py"

    def slurm_payload_text(self, name: str) -> str:
        """The payload dagster-slurm uploads and runs: three lines that start the workload module from
        the project folder on the cluster (the workload itself is the same program as everywhere)."""
        project = self.slurm.project_dir or str(settings.REPO_ROOT)
        return (f"import os, runpy, sys\nos.chdir({project!r})\nsys.path.insert(0, {project!r})\n"
                f"runpy.run_module('reer_assets.workloads.{name}', run_name='__main__', alter_sys=True)\n")

    def slurm_payload(self, name: str, folder: Path) -> Path:
        """Write the payload into ``folder``, a private folder of this run (:meth:`_run_slurm` makes it with
        ``tempfile.mkdtemp``: mode 0700, a new name each time), as a new file: ``O_EXCL|O_NOFOLLOW``, so
        nothing planted there beforehand (a symlink, another user's file) is ever followed or reused."""
        path = Path(folder) / self.slurm_payload_name(name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(self.slurm_payload_text(name))
        return path

    def slurm_submission(self, name: str, env: dict[str, str], run_dir: str = "$RUN_DIR",
                         pipes_env: Optional[dict[str, str]] = None) -> dict[str, str]:
        """The job script and the sbatch command dagster-slurm would submit for one run, rendered with
        its own launcher and command builder (``run_dir``: the remote run folder it creates)."""
        from dagster_slurm import BashLauncher

        env_vars, _ = self.remote_env(env)
        env_path = self.slurm.env_path or "$ENV_PATH"
        payload = f"{run_dir}/{self.slurm_payload_name(name)}"
        plan = BashLauncher().prepare_execution(
            payload_path=payload, python_executable=f"{env_path}/env/bin/python", working_dir=run_dir,
            pipes_context=dict(pipes_env or {}), extra_env=env_vars, activation_script=f"{env_path}/activate.sh")
        client = self.slurm_compute().get_pipes_client(None)
        sbatch = client._build_sbatch_command(job_name=f"reer_{name}", working_dir=run_dir,
                                              output_file=f"{run_dir}/slurm-%j.out",
                                              error_file=f"{run_dir}/slurm-%j.err", script_path=f"{run_dir}/job.sh")
        return {"script": "\n".join(plan.payload), "sbatch": sbatch, "payload": self.slurm_payload_text(name)}

    def _run_slurm(self, context, name: str, extras: dict[str, Any], env: dict[str, str]):
        env_vars, secrets = self.remote_env(env)
        if secrets:
            context.log.info(f"not written to the Slurm job script (set them on the cluster): {', '.join(secrets)}")
        poll_timeout = self.slurm_poll_timeout()
        folder = tempfile.mkdtemp(prefix="reer-slurm-payload-")  # private to this run: 0700, a fresh name
        try:
            payload = self.slurm_payload(name, Path(folder))
            return self.slurm_compute().run(context=context, payload_path=str(payload), extra_env=env_vars,
                                            extras=extras, poll_timeout=poll_timeout)
        except Exception as exc:  # a failed, cancelled, timed-out or lost job; SSH or submission errors
            raise WorkloadRunError("slurm_job_failed", f"Slurm job of workload {name}: {type(exc).__name__}: "
                                                       f"{exc}") from exc
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def default_resources() -> dict:
    return {
        "generator": ModelBackendResource.from_env("generator"),
        "scorer": ModelBackendResource.from_env("scorer"),
        "judge": ModelBackendResource.from_env("judge"),
        "lineage": LineageResource(),
        "runner": WorkloadRunner.from_env(),
    }
