"""REER_WORKLOAD_RUNNER=k8s through ``WorkloadRunner._run_k8s`` (``runtime/runners/k8s.py``) and dagster-k8s's ``PipesK8sClient``, against
``tests/support/fake_k8s_api.py``: a loopback server that answers the Kubernetes API calls the client makes
(create a pod, list it by name for its status, follow its log, delete it) and runs each pod's container
command as a local process. No API server can run on this machine, so the API is a stand-in; everything
else is real: the kubernetes client library with a kubeconfig (namespace from its context, a bearer
token), dagster-k8s's pod body, status polling and log reader, the Pipes messages in the pod's log, and
the workload itself (both roles on the tests' fault server).

One test, two runs of a tiny domain in two shards (two pods at once):

* the first run has one pod's container OOM-killed (SIGKILL, exit 137, reason ``OOMKilled``) on an
  event: once the fault server holds the first request about that shard's second item (its first item
  is then checkpointed). The shard fails as ``k8s_pod_failed``, the step fails naming it, every item is
  once in Parquet and lineage (the killed shard's unfinished items as failed rows);
* the second run completes: the checkpointed items reused, the others searched, every item once.

Along the way: the pods went to the kubeconfig context's namespace, with the runner's labels, image,
command, working directory, limits, ``restartPolicy: Never``, the stage's environment and the Pipes
variables; the API key reached the container only through the Secret named by ``REER_K8S_SECRET``
(``envFrom``), never in a pod body; every request carried the kubeconfig's token, which is in no pod
body either; every pod's log was followed and every pod deleted, and no container process is left.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from dagster_pipes import decode_param

from reer_assets.runtime.runner import WorkloadRunner
from reer_assets.runtime.runners.k8s import K8sRunnerSettings
from reer_assets.workloads.refinement import shard_of
from tests.reliability.conftest import tiny_pieces
from tests.scale.conftest import Project, refined_metadata
from tests.scale.test_ray_runner import _marker
from tests.support.fake_k8s_api import FakeKubernetesAPI
from tests.support.fault_server import FaultServer

pytestmark = [pytest.mark.model, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ITEMS, SHARDS = 4, 2
NAMESPACE, SECRET, IMAGE = "reer-jobs", "reer-model-keys", "registry.invalid/reer:test"
EVENT_BOUND_S = 300.0  # a bound on waiting for the held request; the test then fails


def _shard_of_pod(body: dict) -> int | None:
    env = {e["name"]: e.get("value") for e in body["spec"]["containers"][0].get("env") or []}
    extras = (decode_param(env["DAGSTER_PIPES_CONTEXT"]).get("data") or {}).get("extras") or {}
    return (extras.get("shard") or {}).get("index")


@pytest.mark.timeout(600)
def test_run_k8s_against_the_kubernetes_api_pods_logs_a_killed_container_and_the_rerun(
        tmp_path, embedded_path, monkeypatch):
    api_key = "sk-" + secrets.token_hex(12)
    api_token = secrets.token_urlsafe(24)
    monkeypatch.setenv("GEN_KEY", api_key)  # the step has the key; the pods must get it from the Secret only
    server = FaultServer().start()
    api = FakeKubernetesAPI(token=api_token, secrets={SECRET: {"GEN_KEY": api_key}},
                            image_env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
                                       "LANG": "C.UTF-8"}).start()
    kubeconfig = api.kubeconfig(tmp_path / "kubeconfig", namespace=NAMESPACE)
    (tmp_path / "p").mkdir()
    project = Project(tmp_path / "p", server, embedded_path, MAX_IN_FLIGHT="1", API_KEY_ENV="GEN_KEY")
    runner = WorkloadRunner(mode="k8s", k8s=K8sRunnerSettings(
        image=IMAGE, gpus=0, cpu="1", memory="2Gi", project_dir=str(REPO), python=sys.executable,
        secret=SECRET, kubeconfig=str(kubeconfig), poll_interval_s=0.2))
    pieces = tiny_pieces(ITEMS)
    try:
        assert project.materialize(pieces, SHARDS, runner, names=("raw_documents", "synthesized_queries")).success
        queries = project.queries()
        by_shard = {s: [q for q in queries["id"] if shard_of(q, SHARDS) == s] for s in range(SHARDS)}
        target = max(by_shard, key=lambda s: len(by_shard[s]))
        assert len(by_shard[target]) >= 2, by_shard
        texts = dict(zip(queries["id"], queries["query"]))
        item = by_shard[target][1]
        hold = server.hold(marker=_marker(texts[item], [t for q, t in texts.items() if q != item]))
        report: dict = {}
        stop = threading.Event()

        def oom_kill():
            deadline = time.monotonic() + EVENT_BOUND_S
            try:
                while not stop.is_set() and time.monotonic() < deadline:
                    if not hold.wait(timeout=0.5):  # bounded waits, to see whether the run ended without it
                        continue
                    report["finished_at_kill"] = project.finished()
                    pod = next((p for p in api.running() if _shard_of_pod(p.manifest) == target), None)
                    if pod is None:
                        report["error"] = f"no running pod of shard {target}"
                        return
                    api.kill_container(pod.name, "OOMKilled")
                    report["killed"] = pod.name
                    return
            finally:
                hold.release()

        killer = threading.Thread(target=oom_kill, daemon=True)
        killer.start()
        first = project.materialize(pieces, SHARDS, runner, config={"max_failure_rate": 0.0})
        stop.set()
        killer.join(timeout=10)
        assert report.get("killed") and "error" not in report, report
        done_at_kill = set(report["finished_at_kill"].values()) & set(by_shard[target])
        assert done_at_kill == {by_shard[target][0]}, report
        lost = set(by_shard[target]) - done_at_kill
        assert not first.success
        failure = next(e for e in first.all_events if e.event_type_value == "STEP_FAILURE")
        message = failure.event_specific_data.error.message
        assert f"Shard {target + 1} of {SHARDS} failed: k8s_pod_failed" in message, message
        assert report["killed"] in message or "exited with errors" in message, message
        after_first = project.trajectories()
        for table in (after_first, project.lineage()):
            assert table.height == ITEMS and table["id"].n_unique() == ITEMS
            status = dict(zip(table["query_id"], table["status"]))
            assert {q for q, s in status.items() if s == "failed"} == lost, status
            reasons = table.filter(pl.col("status") == "failed")["reject_reason"]
            assert reasons.str.starts_with(f"k8s_pod_failed: shard {target + 1} of {SHARDS} (k8s runner)").all()

        checkpointed = len(project.finished())
        second = project.materialize(pieces, SHARDS, runner)
        assert second.success
        frame, rows = project.trajectories(), project.lineage()
        for table in (frame, rows):
            assert table.height == ITEMS and table["id"].n_unique() == ITEMS and (table["status"] == "ok").all()
        assert set(frame["id"]) == set(rows["id"]) == set(after_first["id"])
        workload = refined_metadata(second)["workload"]
        assert (workload["reused"], workload["made"], workload["failed"]) == (checkpointed, ITEMS - checkpointed, 0)
        assert workload["runner"] == "k8s" and [s["status"] for s in workload["shard_runs"]] == ["ok"] * SHARDS
        logs = project.logs(second.run_id)
        for s in range(SHARDS):  # the workload's log lines came back through the pod's log
            assert f"shard {s + 1} of {SHARDS}: {len(by_shard[s])} items" in logs

        # what reached the API
        shard_pods = [b for b in api.created if b["metadata"]["labels"].get("reer/workload") == "refinement"]
        assert len(shard_pods) == 2 * SHARDS and sorted(_shard_of_pod(b) for b in shard_pods) == [0, 0, 1, 1]
        for body in api.created:
            container = body["spec"]["containers"][0]
            env = {e["name"]: e.get("value") for e in container["env"]}
            stage = body["metadata"]["labels"]["reer/workload"]
            assert body["metadata"]["labels"]["app.kubernetes.io/name"] == "reer-workload"
            assert container["image"] == IMAGE and container["workingDir"] == str(REPO)
            assert container["command"] == [sys.executable, "-m", f"reer_assets.workloads.{stage}"]
            assert container["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}
            assert body["spec"]["restartPolicy"] == "Never" and "tolerations" not in body["spec"]
            assert container["envFrom"] == [{"secretRef": {"name": SECRET}}]
            assert env["REER_GENERATOR_BACKEND"] == "openai" and env["DAGSTER_HOME"] == str(project.root / "home")
            assert env["REER_GENERATOR_API_KEY_ENV"] == "GEN_KEY" and "GEN_KEY" not in env
            assert "DAGSTER_PIPES_CONTEXT" in env and "DAGSTER_PIPES_MESSAGES" in env
            assert api_key not in json.dumps(body) and api_token not in json.dumps(body)
        names = {b["metadata"]["name"] for b in api.created}
        assert {n for _, n in api.deleted} == names and not api.pods  # every pod deleted
        assert not api.running()
        calls = api.calls
        assert all(c.path.startswith(f"/api/v1/namespaces/{NAMESPACE}/") for c in calls), {c.path for c in calls}
        assert all(c.authorization == f"Bearer {api_token}" for c in calls)
        followed = {c.path.split("/")[-2] for c in calls if c.path.endswith("/log")
                    and c.query.get("follow", "").lower() == c.query.get("timestamps", "").lower() == "true"}
        assert followed == names
        listed = {c.query.get("fieldSelector") for c in calls if c.method == "GET" and c.path.endswith("/pods")}
        assert {f"metadata.name={n}" for n in names} <= listed
        # the key reached the model requests through the Secret (envFrom), from every pod
        assert server.requests and all(r.headers.get("authorization") == f"Bearer {api_key}" for r in server.requests)
        print(f"\nk8s: {len(names)} pods; OOM-killed {report['killed']} (shard {target + 1}); "
              f"rerun reused {workload['reused']}, made {workload['made']}")
    finally:
        project.close()
        api.stop()
        server.stop()
