"""REER_WORKLOAD_RUNNER=slurm for real: the one-node Slurm cluster of ``scripts/local-slurm.sh up``
(slurmctld, slurmd and an sshd on 127.0.0.1), reached over SSH by dagster-slurm's ``ComputeResource``,
each workload run one ``sbatch`` job.

A tiny domain is searched (``refined_trajectories``, both roles on the tests' fault server) in two
shards, each a Slurm job; the same partition searched again by the ``subprocess`` runner gives the same
lineage rows. Then a job is cancelled with ``scancel`` while it runs (event-driven: the fault server holds
the first request of the shard's second item open, so the job is surely RUNNING, its first item
checkpointed and its second unfinished): the step fails with the job's id and state, and a rerun
finishes the shard with nothing lost or duplicated. Along the way: dagster-slurm's default poll
timeout is made 1 s for every run in this module (the library's 3,600 s, scaled down), and the jobs,
which run far longer, are not cut off, because the runner passes a poll timeout that follows the
configured time limit (5 minutes here, seen by Slurm); and a symlink planted at the payload path the
runner used to write through (``/tmp/reer-slurm-payloads/...``) is not followed.

Without the cluster these tests skip, naming ``scripts/local-slurm.sh up``; with ``CI`` set (``.ci/run``
starts the cluster) they fail instead.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import polars as pl
import pytest

from reer_assets.runtime.runner import WorkloadRunner
from reer_assets.runtime.runners.slurm import (SLURM_NO_LIMIT_POLL_S, SLURM_POLL_MARGIN_S, SlurmRunnerSettings,
                                               slurm_time_limit_s)
from reer_assets.lib import duckdb_store
from reer_assets.workloads.refinement import shard_of
from tests.reliability.conftest import tiny_pieces
from tests.scale.conftest import Project, refined_metadata
from tests.support.fault_server import FaultServer

pytestmark = [pytest.mark.slurm, pytest.mark.model, pytest.mark.slow, pytest.mark.timeout(900)]

SLURM_DIR = Path(os.environ.get("REER_LOCAL_SLURM_DIR", "/run/reer-local-slurm"))
ITEMS, SHARDS = 4, 2
TIME_LIMIT = "00:05:00"  # the short configured limit: what Slurm enforces, and what the poll timeout follows
SHORT_DEFAULT_POLL_S = 1  # dagster-slurm's default poll timeout (3,600 s), scaled down for every run here
HOLD_DEADLINE_S = 300.0  # a bound on waiting for the held request; the test then fails ("never cancelled")
PAYLOAD_DIR = Path(tempfile.gettempdir()) / "reer-slurm-payloads"  # where the runner used to write, shared


class Cluster:
    """The local cluster as the runner sees it: its REER_SLURM_* settings, and commands over its SSH."""

    def __init__(self, settings: dict[str, str]):
        self.settings = settings

    def ssh(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        s = self.settings
        return subprocess.run(
            ["ssh", "-q", "-p", s["REER_SLURM_PORT"], "-i", s["REER_SLURM_KEY_PATH"], "-o", "BatchMode=yes",
             "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
             "-o", f"UserKnownHostsFile={s['REER_SLURM_KNOWN_HOSTS']}",
             f"{s['REER_SLURM_USER']}@{s['REER_SLURM_HOST']}", command],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def jobs(self, under: Path) -> list[dict[str, str]]:
        """Every job Slurm still knows (running, or ended less than MinJobAge ago) whose run folder is under
        ``under``: id, state, time limit, name (``dagster_<asset>__partition=<key>``), folder."""
        out = self.ssh("squeue -h -t all -o '%i|%T|%l|%j|%Z'")
        assert out.returncode == 0, out.stderr
        rows = [dict(zip(("id", "state", "limit", "name", "dir"), line.split("|")))
                for line in out.stdout.splitlines()]
        return sorted((r for r in rows if r.get("dir", "").startswith(str(under))), key=lambda r: int(r["id"]))


def _unavailable(reason: str):
    message = f"the local Slurm cluster is not reachable ({reason}): run `scripts/local-slurm.sh up` (as root)"
    if os.environ.get("CI"):  # .ci/run starts the cluster: in CI its absence is a failure, never a skip
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    try:
        lines = (SLURM_DIR / "env").read_text().splitlines()
    except OSError as exc:
        _unavailable(f"{SLURM_DIR / 'env'}: {exc.strerror}")
    settings = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    found = Cluster(settings)
    try:
        probe = found.ssh("sinfo -h -o %a")
    except subprocess.TimeoutExpired:
        _unavailable("ssh timed out")
    if probe.returncode != 0 or "up" not in probe.stdout:
        _unavailable(f"ssh/sinfo said {probe.returncode}: {(probe.stderr or probe.stdout).strip()[:300]}")
    return found


def _marker(text: str, others: list[str], length: int = 24) -> str:
    """``length`` plain characters of ``text`` that no other text holds (in every request about its item only)."""
    for run in re.findall(rf"[A-Za-z0-9 ,.;:()-]{{{length},}}", text):
        for start in range(len(run) - length + 1):
            piece = run[start:start + length]
            if not any(piece in other for other in others):
                return piece
    raise AssertionError(f"no plain {length}-character run of {text!r} is unique to it")


def _cancel_when_running(cluster: Cluster, remote: Path, hold, report: dict, stop: threading.Event):
    """Once the held request has arrived (the job runs the shard's second item; its first is checkpointed),
    check that Slurm shows the job RUNNING and ``scancel`` it; then let the request go."""
    try:
        deadline = threading.Event()
        timer = threading.Timer(HOLD_DEADLINE_S, deadline.set)
        timer.start()
        try:
            while not stop.is_set() and not deadline.is_set():
                if not hold.wait(timeout=0.5):  # a bounded wait, to see whether the run ended without it
                    continue
                running = [j for j in cluster.jobs(remote) if j["state"] not in ("COMPLETED",)]
                report["seen"] = running
                if len(running) != 1 or running[0]["state"] != "RUNNING":
                    report["error"] = f"the held request arrived but the jobs are {running}"
                    return
                job = running[0]
                out = cluster.ssh(f"scancel {shlex.quote(job['id'])}")
                report["cancelled"] = job
                report["scancel_rc"] = out.returncode
                return
        finally:
            timer.cancel()
    finally:
        hold.release()


def _failure_message(result) -> str:
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return failure.event_specific_data.error.message


def _run_lineage(db: Path, run_id: str) -> dict[str, pl.DataFrame]:
    """Every lineage table's rows of one run, without the columns that name the run or when it was stored."""
    tables = duckdb_store.query("SELECT table_name FROM duckdb_tables()", path=db)["table_name"].to_list()
    out = {}
    for table in tables:
        frame = duckdb_store.query(f"SELECT * FROM {table}", path=db)
        if "run_id" not in frame.columns:
            continue
        frame = frame.filter(pl.col("run_id") == run_id).drop([c for c in ("run_id", "recorded_at") if c in frame.columns])
        if frame.height:
            out[table] = frame.sort(frame.columns)
    return out


def _forget_partition(project: Project) -> None:
    """Make the next materialisation search the partition again: its fingerprint, checkpoints and call caches go."""
    home = project.root / "home" / "reer"
    (home / "assets/refined_trajectories/education/fingerprint.json").unlink()
    shutil.rmtree(home / "work/refined_trajectories/education")


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory, embedded_path):
    from dagster_slurm import ComputeResource

    root = tmp_path_factory.mktemp("slurm_runner")
    # a pre-deployed environment as REER_SLURM_ENV_PATH names it: this checkout's venv and an activation script
    env_path = root / "envs"
    env_path.mkdir()
    (env_path / "env").symlink_to(sys.prefix, target_is_directory=True)
    (env_path / "activate.sh").write_text("export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1\n")
    remote = root / "remote"
    s = cluster.settings
    runner = WorkloadRunner(mode="slurm", slurm=SlurmRunnerSettings(
        host=s["REER_SLURM_HOST"], port=int(s["REER_SLURM_PORT"]), user=s["REER_SLURM_USER"],
        key_path=s["REER_SLURM_KEY_PATH"], known_hosts=s["REER_SLURM_KNOWN_HOSTS"],
        partition=s["REER_SLURM_PARTITION"], cpus=1, time_limit=TIME_LIMIT, env_path=str(env_path),
        project_dir=str(Path(__file__).resolve().parents[2]), remote_base=str(remote)))

    # every ComputeResource.run of this module gets a 1 s poll timeout unless the runner passes its own
    calls: list[dict] = []
    original = ComputeResource.run

    def run_with_a_short_default(self, context, payload_path, *args, **kwargs):
        kwargs.setdefault("poll_timeout", SHORT_DEFAULT_POLL_S)
        folder = Path(payload_path).parent
        calls.append({"poll_timeout": kwargs["poll_timeout"], "payload": Path(payload_path),
                      "folder_mode": folder.stat().st_mode & 0o777, "folder_owner": folder.stat().st_uid,
                      "text": Path(payload_path).read_text()})
        return original(self, context, payload_path, *args, **kwargs)

    patch = pytest.MonkeyPatch()
    patch.setattr(ComputeResource, "run", run_with_a_short_default)

    # a symlink planted where the runner used to write its payload, pointing at a file it must not touch
    victim = root / "victim.txt"
    victim.write_text("untouched\n")
    planted = PAYLOAD_DIR / "reer_workload_refinement.py"
    made_dir = not PAYLOAD_DIR.exists()
    PAYLOAD_DIR.mkdir(exist_ok=True)
    aside = None
    if planted.is_symlink() or planted.exists():
        aside = planted.with_name(f".{planted.name}.{os.getpid()}.aside")
        planted.rename(aside)
    planted.symlink_to(victim)

    server = FaultServer().start()
    project = Project(root, server, embedded_path, MAX_IN_FLIGHT="1")  # one request in flight: items in order
    pieces = tiny_pieces(ITEMS)
    out: dict = {"project": project, "runner": runner, "calls": calls, "remote": remote, "victim": victim,
                 "server": server, "cluster": cluster}
    try:
        first = project.materialize(pieces, SHARDS, runner)
        out["first"] = first
        out["first_jobs"] = cluster.jobs(remote)
        out["first_lineage"] = _run_lineage(project.lineage_db, first.run_id)
        out["first_frame"] = project.trajectories()
        if first.success:
            # the same partition searched again in a subprocess: the lineage rows must be the same
            _forget_partition(project)
            local = project.materialize(pieces, SHARDS, WorkloadRunner(mode="subprocess"))
            out["local"] = local
            out["local_lineage"] = _run_lineage(project.lineage_db, local.run_id)

            # a Slurm job cancelled with scancel while it runs (one shard: one job for the whole partition)
            _forget_partition(project)
            queries = project.queries()
            order = list(queries["id"])  # one shard: every item, searched in query order
            texts = dict(zip(queries["id"], queries["query"]))
            item = order[1]
            hold = server.hold(marker=_marker(texts[item], [t for q, t in texts.items() if q != item]))
            report: dict = {}
            stop = threading.Event()
            before = {j["id"] for j in cluster.jobs(remote)}
            canceller = threading.Thread(target=_cancel_when_running, args=(cluster, remote, hold, report, stop),
                                         daemon=True)
            canceller.start()
            cancelled = project.materialize(pieces, 1, runner, config={"max_failure_rate": 0.0})
            stop.set()
            canceller.join(timeout=60)
            out.update(cancelled=cancelled, report=report, order=order,
                       cancelled_jobs=[j for j in cluster.jobs(remote) if j["id"] not in before],
                       after_cancel={"frame": project.trajectories(), "lineage": project.lineage(),
                                     "checkpoints": project.finished()})
            out["rerun"] = project.materialize(pieces, 1, runner)
        yield out
    finally:
        project.close()
        server.stop()
        patch.undo()
        planted.unlink(missing_ok=True)
        if aside is not None:
            aside.rename(planted)
        if made_dir:
            shutil.rmtree(PAYLOAD_DIR, ignore_errors=True)


def test_time_limits_parse_and_the_poll_timeout_follows_them():
    assert [slurm_time_limit_s(t) for t in ("90", "5:30", "04:00:00", "2-0", "1-02:03", "1-02:03:04")] == \
        [5400, 330, 14400, 172800, 93780, 93784]
    assert slurm_time_limit_s("UNLIMITED") is None and slurm_time_limit_s("infinite") is None
    with pytest.raises(ValueError, match="REER_SLURM_TIME_LIMIT='4h'"):
        slurm_time_limit_s("4h")

    def runner(**fields) -> WorkloadRunner:
        return WorkloadRunner(mode="slurm", slurm=SlurmRunnerSettings(host="h", user="u", **fields))

    default = runner()
    assert default.slurm.time_limit == "04:00:00"
    # the default limit is four hours: the step waits that long and more, never dagster-slurm's 3,600 s
    assert default.slurm_poll_timeout() == 14400 + default.slurm.queue_wait_s + SLURM_POLL_MARGIN_S > 3600
    assert runner(time_limit="2-00:00:00", queue_wait_s=60).slurm_poll_timeout() == 172800 + 60 + SLURM_POLL_MARGIN_S
    assert runner(time_limit="UNLIMITED").slurm_poll_timeout() == SLURM_NO_LIMIT_POLL_S
    with pytest.raises(ValueError, match="REER_SLURM_TIME_LIMIT"):
        runner(time_limit="soon").check()


def test_shards_ran_as_slurm_jobs_and_their_lineage_equals_a_subprocess_run(runs):
    first, project = runs["first"], runs["project"]
    assert first.success, _failure_message(first)
    jobs = runs["first_jobs"]
    # synthesized_queries' workload was a job too; then one sbatch job per shard, one after another, each
    # ended COMPLETED with the configured limit
    names = [j["name"].split("__")[0] for j in jobs]
    assert names == ["dagster_synthesized_queries"] + ["dagster_refined_trajectories"] * SHARDS, jobs
    assert [j["state"] for j in jobs] == ["COMPLETED"] * (SHARDS + 1), jobs
    assert {j["limit"] for j in jobs} == {"5:00"}, jobs
    workload = refined_metadata(first)["workload"]
    assert workload["runner"] == "slurm"
    queries = set(project.queries()["id"])
    assert [(s["status"], s["items"]) for s in workload["shard_runs"]] == \
        [("ok", sum(1 for q in queries if shard_of(q, SHARDS) == k)) for k in range(SHARDS)]
    frame = runs["first_frame"]
    assert frame.height == ITEMS and frame["id"].n_unique() == ITEMS and set(frame["query_id"]) == queries
    # the workload's log lines came back to Dagster through dagster-slurm's Pipes message reader
    logs = project.logs(first.run_id)
    for k in range(SHARDS):
        assert f"shard {k + 1} of {SHARDS}: {workload['shard_runs'][k]['items']} items" in logs, logs[-20:]
    assert runs["server"].requests  # the model requests reached the fault server from the jobs

    local = runs["local"]
    assert local.success, _failure_message(local)
    slurm_rows, local_rows = runs["first_lineage"], runs["local_lineage"]
    assert "trajectories" in slurm_rows and slurm_rows["trajectories"].height == ITEMS
    searched = set(local_rows)  # the tables the search writes (the upstream assets were reused the second time)
    assert searched, "the subprocess run wrote no lineage"
    for table in sorted(searched):
        assert slurm_rows[table].equals(local_rows[table]), table
    print(f"\nlineage of the Slurm run equals the subprocess run's in {sorted(searched)} "
          f"({sum(f.height for f in local_rows.values())} rows); jobs {[j['id'] for j in jobs]}")


def test_the_poll_timeout_follows_the_time_limit_not_the_clients_default(runs):
    calls, runner = runs["calls"], runs["runner"]
    slurm_runs = 1 + SHARDS + 2  # the first run's synthesis and shards, the cancelled run, the rerun
    assert [c["payload"].name for c in calls] == \
        ["reer_workload_synthesis.py"] + ["reer_workload_refinement.py"] * (SHARDS + 2)
    # with dagster-slurm's default (made 1 s here) every job would have been cut off after its first poll;
    # the runner passed the poll timeout of its time limit, and every job ran to its end
    expected = slurm_time_limit_s(TIME_LIMIT) + runner.slurm.queue_wait_s + SLURM_POLL_MARGIN_S
    assert [c["poll_timeout"] for c in calls] == [expected] * slurm_runs
    assert runs["first"].success and runs["rerun"].success
    for result in (runs["first"], runs["rerun"]):
        assert not any("Timed out after" in line for line in runs["project"].logs(result.run_id))


def test_scancel_fails_the_step_with_the_job_id_and_state(runs):
    report, cancelled = runs["report"], runs["cancelled"]
    assert "cancelled" in report, f"the job was never cancelled: {report}"
    job = report["cancelled"]
    assert job["state"] == "RUNNING" and job["limit"] == "5:00" and report["scancel_rc"] == 0
    assert [(j["id"], j["state"]) for j in runs["cancelled_jobs"]] == [(job["id"], "CANCELLED")]
    assert not cancelled.success
    message = _failure_message(cancelled)
    assert "Shard 1 of 1 failed: slurm_job_failed" in message, message
    # dagster-slurm words it from squeue or from sacct, whichever saw the end first: the id and state are in both
    assert re.search(rf"Job {job['id']}\b.*\bCANCELLED\b", message), message
    order, after = runs["order"], runs["after_cancel"]
    # cancelled while its second item waited on its first request: the first item is checkpointed
    assert set(after["checkpoints"].values()) == {order[0]}, after["checkpoints"]
    for table in (after["frame"], after["lineage"]):
        assert table.height == ITEMS and table["id"].n_unique() == ITEMS
        status = dict(zip(table["query_id"], table["status"]))
        assert status[order[0]] == "ok" and all(status[q] == "failed" for q in order[1:]), status
        reasons = table.filter(pl.col("status") == "failed")["reject_reason"]
        assert reasons.str.starts_with("slurm_job_failed: shard 1 of 1 (slurm runner)").all(), reasons.to_list()


def test_a_rerun_after_scancel_finishes_the_shard_without_loss_or_duplicates(runs):
    rerun, project = runs["rerun"], runs["project"]
    assert rerun.success, _failure_message(rerun)
    frame, rows = project.trajectories(), project.lineage()
    queries = set(project.queries()["id"])
    for table in (frame, rows):
        assert table.height == ITEMS and table["id"].n_unique() == ITEMS and set(table["query_id"]) == queries
        assert (table["status"] == "ok").all()
    assert set(rows["run_id"]) == {rerun.run_id}
    workload = refined_metadata(rerun)["workload"]
    assert (workload["reused"], workload["made"], workload["failed"]) == (1, ITEMS - 1, 0)
    # the same items and results as the first (uncancelled) Slurm run
    columns = ["id", "query_id", "initial_thinking", "final_thinking", "final_score", "num_steps"]
    assert frame.sort("id").select(columns).equals(runs["first_frame"].sort("id").select(columns))


def test_the_payload_goes_to_a_private_folder_and_a_planted_symlink_is_not_followed(runs):
    calls = runs["calls"]
    assert runs["victim"].read_text() == "untouched\n"
    folders = [c["payload"].parent for c in calls]
    assert len(set(folders)) == len(calls)  # a new folder per run
    for call in calls:
        assert not str(call["payload"]).startswith(str(PAYLOAD_DIR))
        assert call["folder_mode"] == 0o700 and call["folder_owner"] == os.getuid()
        assert call["text"] == runs["runner"].slurm_payload_text(call["payload"].stem.removeprefix("reer_workload_"))
        assert not call["payload"].parent.exists()  # removed after the run
