"""``REER_WORKLOAD_RUNNER=k8s``: each workload run is one pod (dagster-k8s's ``PipesK8sClient``), with GPU
limits, a node selector, API keys from a Secret and the shared volume at ``DAGSTER_HOME``. docs/scale.md."""

from __future__ import annotations

import uuid
from typing import Any, Callable, Optional

import dagster as dg

from reer_assets.runtime.runners.common import WorkloadRunError, remote_env, workload_command

POD_LABELS = {"app.kubernetes.io/name": "reer-workload"}


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


def pod_meta(name: str) -> dict[str, Any]:
    return {"labels": {**POD_LABELS, "reer/workload": name}}


def pod_spec(cfg: K8sRunnerSettings, name: str, env: dict[str, str]) -> dict[str, Any]:
    """The base pod spec of one run: image, command, working dir, GPU limits, node selector, env,
    secrets as ``envFrom``, the shared volume at DAGSTER_HOME. ``PipesK8sClient`` adds the Pipes
    variables to the first container's env."""
    env_vars, _ = remote_env(env)
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


def pod(cfg: K8sRunnerSettings, name: str, env: dict[str, str], pipes_env: Optional[dict[str, str]] = None):
    """The ``V1Pod`` that ``PipesK8sClient`` would create for one run (``pipes_env``: its Pipes variables)."""
    from dagster_k8s.pipes import build_pod_body

    return build_pod_body(pod_name=f"reer-{name}-{uuid.uuid4().hex[:8]}", image=cfg.image,
                          command=workload_command(name, cfg.python), env_vars=dict(pipes_env or {}),
                          base_pod_meta=pod_meta(name), base_pod_spec=pod_spec(cfg, name, env))


def client(cfg: K8sRunnerSettings):
    from dagster_k8s import PipesK8sClient

    return PipesK8sClient(kubeconfig_file=cfg.kubeconfig, poll_interval=cfg.poll_interval_s)


def run(cfg: K8sRunnerSettings, make_client: Callable[[], Any], context, name: str, extras: dict[str, Any],
        env: dict[str, str]):
    """One run as a pod through the client ``make_client`` builds (:func:`client`); the client's invocation."""
    spec = pod_spec(cfg, name, env)
    try:
        return make_client().run(context=context, extras=extras, image=cfg.image,
                                 command=workload_command(name, cfg.python), namespace=cfg.namespace,
                                 base_pod_spec=spec, base_pod_meta=pod_meta(name))
    except Exception as exc:  # pod failed, evicted, image pull error, API error
        raise WorkloadRunError("k8s_pod_failed", f"{type(exc).__name__}: {exc}") from exc
