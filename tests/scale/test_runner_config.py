"""The workload runners chosen by REER_WORKLOAD_RUNNER, configuration-tested: what a Ray job, a pod and
a Slurm job would be given, rendered by the libraries' own code (no cluster needed), and the shard
assignment. The Ray runner is also tested for real (test_ray_runner.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from reer_assets import settings
from reer_assets.runtime.runner import WorkloadRunner
from reer_assets.runtime.runners.common import split_secrets
from reer_assets.workloads.refinement import shard_of

STAGE_ENV = {"REER_GENERATOR_BACKEND": "openai", "REER_GENERATOR_BASE_URL": "http://gen:8001/v1",
             "REER_GENERATOR_API_KEY_ENV": "GEN_KEY", "GEN_KEY": "sk-secret", "REER_SCORER_BACKEND": "openai"}


def _runner(**variables: str) -> WorkloadRunner:
    return WorkloadRunner.from_env(variables)


def test_runner_is_chosen_by_configuration(monkeypatch):
    for mode in ("subprocess", "ray", "k8s", "slurm", "in_process"):
        monkeypatch.setenv("REER_WORKLOAD_RUNNER", mode)
        assert settings.workload_runner() == mode
        assert WorkloadRunner.from_env().mode == mode
    monkeypatch.setenv("REER_WORKLOAD_RUNNER", "spark")
    with pytest.raises(ValueError, match="REER_WORKLOAD_RUNNER='spark'"):
        settings.workload_runner()
    monkeypatch.delenv("REER_WORKLOAD_RUNNER")
    assert WorkloadRunner.from_env().mode == "subprocess"
    with pytest.raises(ValueError, match="REER_RAY_ADRESS"):
        _runner(REER_WORKLOAD_RUNNER="ray", REER_RAY_ADRESS="http://x:8265")  # a typo is named
    with pytest.raises(ValueError, match="REER_RAY_ADDRESS"):
        _runner(REER_WORKLOAD_RUNNER="ray").check()
    with pytest.raises(ValueError, match="REER_K8S_IMAGE"):
        _runner(REER_WORKLOAD_RUNNER="k8s").check()
    with pytest.raises(ValueError, match="REER_SLURM_HOST"):
        _runner(REER_WORKLOAD_RUNNER="slurm").check()
    assert [(_runner(REER_WORKLOAD_RUNNER=m).concurrent) for m in ("subprocess", "ray", "k8s", "slurm", "in_process")] \
        == [True, True, True, False, False]


def test_secrets_and_runner_settings_are_never_forwarded(monkeypatch):
    monkeypatch.setenv("REER_PROFILE", "test")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("REER_RAY_ADDRESS", "http://x:8265")
    forwarded = settings.forwarded_environment()
    assert forwarded["REER_PROFILE"] == "test" and forwarded["HF_HUB_OFFLINE"] == "1" and "DAGSTER_HOME" in forwarded
    assert "HF_TOKEN" not in forwarded and "REER_RAY_ADDRESS" not in forwarded
    plain, names = split_secrets(STAGE_ENV)
    assert names == ["GEN_KEY"] and "GEN_KEY" not in plain and plain["REER_GENERATOR_API_KEY_ENV"] == "GEN_KEY"


def test_ray_job_runs_from_the_project_folder_with_the_stage_env():
    runner = _runner(REER_WORKLOAD_RUNNER="ray", REER_RAY_ADDRESS="http://127.0.0.1:8265", REER_RAY_NUM_CPUS="2",
                     REER_RAY_NUM_GPUS="1", REER_RAY_PROJECT_DIR="/srv/reer", REER_RAY_PYTHON="/srv/venv/bin/python")
    job = runner.ray_job("refinement", STAGE_ENV, {"shard": {"index": 1, "count": 3}})
    assert job["entrypoint"] == "cd /srv/reer && exec /srv/venv/bin/python -m reer_assets.workloads.refinement"
    assert "working_dir" not in job["runtime_env"]  # nothing uploaded
    env = job["runtime_env"]["env_vars"]
    assert env["REER_GENERATOR_BASE_URL"] == "http://gen:8001/v1" and "GEN_KEY" not in env
    assert env["OMP_NUM_THREADS"] == "2" and env["PYTHONUNBUFFERED"] == "1"
    assert job["entrypoint_num_cpus"] == 2 and job["entrypoint_num_gpus"] == 1
    assert job["submission_id"].startswith("reer-refinement-shard1of3-")


def test_k8s_pod_spec_renders_gpus_node_selector_image_and_env():
    from dagster_k8s import PipesK8sClient

    runner = _runner(REER_WORKLOAD_RUNNER="k8s", REER_K8S_IMAGE="registry.example/reer:1.0", REER_K8S_GPUS="2",
                     REER_K8S_NODE_SELECTOR="cloud.google.com/gke-accelerator=nvidia-h100-80gb,pool=reer",
                     REER_K8S_NAMESPACE="reer", REER_K8S_CPU="8", REER_K8S_MEMORY="64Gi",
                     REER_K8S_SECRET="reer-api-keys", REER_K8S_VOLUME_CLAIM="reer-home")
    runner.check()
    assert isinstance(runner.k8s_client(), PipesK8sClient)  # the client builds without a cluster
    pipes_env = {"DAGSTER_PIPES_CONTEXT": "ctx", "DAGSTER_PIPES_MESSAGES": "m"}
    pod = runner.k8s_pod("refinement", STAGE_ENV, pipes_env=pipes_env)
    container = pod.spec.containers[0]
    assert container.image == "registry.example/reer:1.0"
    assert container.command[1:] == ["-m", "reer_assets.workloads.refinement"] and container.working_dir == "/app"
    assert container.resources.limits == {"nvidia.com/gpu": "2", "cpu": "8", "memory": "64Gi"}
    assert pod.spec.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb", "pool": "reer"}
    assert pod.spec.restart_policy == "Never" and pod.spec.tolerations[0].key == "nvidia.com/gpu"
    env = {e.name: e.value for e in container.env}
    assert env["REER_GENERATOR_BASE_URL"] == "http://gen:8001/v1" and env["DAGSTER_PIPES_CONTEXT"] == "ctx"
    assert "GEN_KEY" not in env and container.env_from[0].secret_ref.name == "reer-api-keys"
    assert pod.spec.volumes[0].persistent_volume_claim.claim_name == "reer-home"
    assert container.volume_mounts[0].mount_path == env["DAGSTER_HOME"]


def test_slurm_job_script_renders_partition_gpus_time_and_command():
    runner = _runner(REER_WORKLOAD_RUNNER="slurm", REER_SLURM_HOST="login.hpc.example", REER_SLURM_USER="reer",
                     REER_SLURM_PARTITION="gpu-h100", REER_SLURM_GPUS="4", REER_SLURM_TIME_LIMIT="02:00:00",
                     REER_SLURM_CPUS="16", REER_SLURM_ACCOUNT="proj42", REER_SLURM_ENV_PATH="/shared/envs/reer",
                     REER_SLURM_PROJECT_DIR="/shared/reer")
    runner.check()
    job = runner.slurm_submission("refinement", STAGE_ENV, run_dir="/scratch/reer/run1",
                                  pipes_env={"DAGSTER_PIPES_CONTEXT": "ctx"})
    sbatch = job["sbatch"]
    for part in ("-p gpu-h100", "-t 02:00:00", "-c 16", "--gres=gpu:4", "--account=proj42",
                 "-D /scratch/reer/run1", "/scratch/reer/run1/job.sh"):
        assert part in sbatch, sbatch
    script = job["script"]
    assert "source /shared/envs/reer/activate.sh" in script
    assert "exec /shared/envs/reer/env/bin/python /scratch/reer/run1/reer_workload_refinement.py" in script
    assert "export REER_GENERATOR_BASE_URL=http://gen:8001/v1" in script
    assert "export DAGSTER_PIPES_CONTEXT=ctx" in script
    assert "sk-secret" not in script and "GEN_KEY=" not in script
    assert "os.chdir('/shared/reer')" in job["payload"] and "reer_assets.workloads.refinement" in job["payload"]


def test_shards_are_stable_and_cover_every_query():
    ids = [f"q_{k:04d}" for k in range(600)]
    # a pure function of the id: another interpreter with another str-hash seed assigns the same shards
    # (Python's hash() would not: it is salted per process)
    other = subprocess.run([sys.executable, "-c", "from reer_assets.workloads.refinement import shard_of; "
                            "print([shard_of(f'q_{k:04d}', 7) for k in range(600)])"],
                           capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip() == str([shard_of(i, 7) for i in ids])
    assert [shard_of(i, 1) for i in ids[:5]] == [0] * 5
    for count in (2, 3, 7):
        groups = [[i for i in ids if shard_of(i, count) == s] for s in range(count)]
        assert sorted(sum(groups, [])) == ids  # every id in exactly one shard
        assert min(map(len, groups)) > 0.7 * len(ids) / count  # roughly even
    # the assignment never changes between releases (a changed hash would move finished items' shards;
    # harmless, as checkpoints are per item, but worth noticing)
    assert [shard_of(i, 3) for i in ids[:8]] == EXPECTED_FIRST_EIGHT


EXPECTED_FIRST_EIGHT = [0, 1, 0, 2, 0, 1, 1, 1]
