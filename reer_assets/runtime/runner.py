"""The workload runner: the Dagster resource (``runner``) that decides where a stage's model work runs.
Each runner is a module of ``runners/``; this class holds their settings and chooses one per run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import dagster as dg
from pydantic import PrivateAttr

from reer_assets import settings
from reer_assets.runtime.runners import k8s as k8s_runner
from reer_assets.runtime.runners import local
from reer_assets.runtime.runners import ray as ray_runner
from reer_assets.runtime.runners import slurm as slurm_runner
from reer_assets.runtime.runners.common import remote_env, settings_from_env
from reer_assets.runtime.runners.k8s import K8sRunnerSettings
from reer_assets.runtime.runners.ray import RayJobs, RayRunnerSettings
from reer_assets.runtime.runners.slurm import SlurmRunnerSettings


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
    docs/scale.md, "Workload runners"; each runner is a module of ``runtime/runners/``.
    """

    mode: str = "subprocess"
    ray: RayRunnerSettings = RayRunnerSettings()
    k8s: K8sRunnerSettings = K8sRunnerSettings()
    slurm: SlurmRunnerSettings = SlurmRunnerSettings()
    _ray_jobs: RayJobs = PrivateAttr(default_factory=RayJobs)  # submission id -> address, while in flight

    @classmethod
    def from_env(cls, environ: Optional[dict] = None) -> "WorkloadRunner":
        mode = settings.workload_runner() if environ is None else environ.get("REER_WORKLOAD_RUNNER") or "subprocess"
        return cls(mode=mode, ray=settings_from_env(RayRunnerSettings, "ray", environ),
                   k8s=settings_from_env(K8sRunnerSettings, "k8s", environ),
                   slurm=settings_from_env(SlurmRunnerSettings, "slurm", environ))

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
            return local.run_in_process(context, name, extras, env)
        if self.mode == "subprocess":
            invocation = local.run_subprocess(context, name, extras, env)
        else:
            launch = {"ray": self._run_ray, "k8s": self._run_k8s, "slurm": self._run_slurm}[self.mode]
            invocation = launch(context, name, extras, env)
        messages = invocation.get_custom_messages()
        return messages[-1] if messages else {}

    # --- what each remote runner submits (pure: the config tests render these; runners/<kind>.py) -----

    def remote_env(self, env: dict[str, str]) -> tuple[dict[str, str], list[str]]:
        """The environment of a remote run: the forwarded engine settings and the stage's variables,
        without secrets (their names are returned, for a warning)."""
        return remote_env(env)

    def ray_job(self, name: str, env: dict[str, str], extras: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """``JobSubmissionClient.submit_job`` parameters of one run (dagster-ray adds the Pipes variables)."""
        return ray_runner.job_params(self.ray, name, env, extras)

    def _run_ray(self, context, name: str, extras: dict[str, Any], env: dict[str, str]):
        return ray_runner.run(self.ray, self._ray_jobs, context, name, extras, env)

    def cancel(self, log=None) -> list[str]:
        """Stop the remote runs this runner has in flight (called when a step is interrupted while its
        shards run in threads, where Dagster's interrupt never reaches the clients): the Ray jobs. A
        ``subprocess`` child or a pod ends with its own client; returns what was stopped."""
        return ray_runner.cancel(self._ray_jobs, log)

    def k8s_pod_spec(self, name: str, env: dict[str, str]) -> dict[str, Any]:
        """The base pod spec of one run (``runners/k8s.py::pod_spec``)."""
        return k8s_runner.pod_spec(self.k8s, name, env)

    def k8s_pod(self, name: str, env: dict[str, str], pipes_env: Optional[dict[str, str]] = None):
        """The ``V1Pod`` that ``PipesK8sClient`` would create for one run (``pipes_env``: its Pipes variables)."""
        return k8s_runner.pod(self.k8s, name, env, pipes_env)

    def k8s_client(self):
        return k8s_runner.client(self.k8s)

    def _run_k8s(self, context, name: str, extras: dict[str, Any], env: dict[str, str]):
        return k8s_runner.run(self.k8s, self.k8s_client, context, name, extras, env)

    def slurm_compute(self):
        """dagster-slurm's ``ComputeResource`` for this configuration (mode ``slurm``, one sbatch job per run)."""
        return slurm_runner.compute(self.slurm)

    def slurm_poll_timeout(self) -> int:
        """How long the step waits for one Slurm job (``runners/slurm.py::poll_timeout``)."""
        return slurm_runner.poll_timeout(self.slurm)

    @staticmethod
    def slurm_payload_name(name: str) -> str:
        return slurm_runner.payload_name(name)

    def slurm_payload_text(self, name: str) -> str:
        """The three lines that start the workload module from the project folder on the cluster."""
        return slurm_runner.payload_text(self.slurm, name)

    def slurm_payload(self, name: str, folder: Path) -> Path:
        """Write the payload into ``folder`` as a new file (``runners/slurm.py::write_payload``)."""
        return slurm_runner.write_payload(self.slurm, name, folder)

    def slurm_submission(self, name: str, env: dict[str, str], run_dir: str = "$RUN_DIR",
                         pipes_env: Optional[dict[str, str]] = None) -> dict[str, str]:
        """The job script and the sbatch command dagster-slurm would submit for one run."""
        return slurm_runner.submission(self.slurm, name, env, run_dir, pipes_env)

    def _run_slurm(self, context, name: str, extras: dict[str, Any], env: dict[str, str]):
        return slurm_runner.run(self.slurm, context, name, extras, env)
