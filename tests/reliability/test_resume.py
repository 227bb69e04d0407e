"""Resume: SIGKILL a real materialisation of refined_trajectories part-way, re-run it, and compare
with an uninterrupted run of the same seed in another instance folder.

Both runs use the openai backend against a fault server that answers well-formed, *seed-dependent*
text (the same request seed gets the same answer, any other seed does not), so the comparison
checks that a resumed item replays the seeds of an uninterrupted run, and the server's request
log counts model calls from outside the engine: an item finished before the kill must not be
sent again.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import polars as pl
import pytest

from tests.reliability.conftest import (
    DOMAIN,
    TINY_ITEMS,
    assert_ok,
    asset_path,
    fault_server_env,
    finish,
    group_alive,
    instance_for,
    kill_group,
    lineage,
    materializations,
    materialize_command,
    start,
)
from tests.support.fault_server import FaultServer

pytestmark = [pytest.mark.model, pytest.mark.slow]  # the openai scorer tokenizes with the embedded tokenizer

ITEMS = TINY_ITEMS
SLOW_S = 0.3  # every model request takes this long, so the run is killable between items


@pytest.fixture(scope="module")
def project(tiny_project):
    return tiny_project


def _server() -> FaultServer:
    server = FaultServer(slow_s=SLOW_S, seeded=True).start()
    server.on('"model"', "slow")  # every request (all bodies name the model)
    return server


def _env(project, home: Path, server: FaultServer, tokenizer: Path) -> dict[str, str]:
    # one request in flight, so items are searched one after another and the kill lands between them
    return project.env(home, fault_server_env(server, tokenizer, MAX_IN_FLIGHT="1"))


def _items_dir(home: Path) -> list[Path]:
    return sorted((home / "reer/work/refined_trajectories" / DOMAIN).glob("*/items"))


def _finished(home: Path) -> set[str]:
    return {p.stem for folder in _items_dir(home) for p in folder.glob("*.json")}


def _item_of(request, markers: dict[str, str], tokenizer) -> str | None:
    """Which item (query id) a logged request belongs to: its query text is in the prompt."""
    body = json.loads(request.body)
    if "messages" in body:
        text = "\n".join(str(m.get("content")) for m in body["messages"])
    else:
        prompts = body["prompt"]
        prompts = prompts if prompts and isinstance(prompts[0], list) else [prompts]
        text = "\n".join(tokenizer.decode(ids) if isinstance(ids, list) else str(ids) for ids in prompts)
    hits = [item for item, marker in markers.items() if marker in text]
    return hits[0] if len(hits) == 1 else None


def _trajectories(home: Path) -> pl.DataFrame:
    return pl.read_parquet(asset_path(home, "refined_trajectories") / "trajectories.parquet")


def _outcome(frame: pl.DataFrame) -> dict[str, tuple]:
    return {r["id"]: (r["status"], r["initial_thinking"], r["initial_score"], r["final_thinking"], r["final_score"],
                      r["num_steps"]) for r in frame.iter_rows(named=True)}


@pytest.fixture(scope="module")
def runs(project, embedded_path):
    """The clean run and the killed-then-resumed run, started side by side (one fault server each)."""
    import dagster as dg
    from tokenizers import Tokenizer

    from reer_assets.defs.sensors import dead_run_sensor

    clean_server, killed_server = _server(), _server()
    clean_home, killed_home = project.home("clean"), project.home("killed")
    processes = []
    try:
        t0 = time.monotonic()
        clean = start(materialize_command("refined_trajectories"),
                      _env(project, clean_home, clean_server, embedded_path), project.root / "clean.log")
        killed = start(materialize_command("refined_trajectories"),
                       _env(project, killed_home, killed_server, embedded_path), project.root / "killed.log")
        processes += [clean, killed]
        while not _finished(killed_home):
            assert killed.poll() is None, (project.root / "killed.log").read_text()[-6000:]
            assert time.monotonic() - t0 < 240, "no item finished within 240 s"
            time.sleep(0.02)  # wait: a polling interval until an item is checkpointed
        # then kill in the middle of the next item: a few of its model calls made, not all
        mid_item = len(killed_server.requests) + 3
        while len(killed_server.requests) < mid_item and killed.poll() is None:
            time.sleep(0.01)  # wait: a polling interval over the request count (an event)
        kill_group(killed)
        killed_at = time.monotonic() - t0
        finished_at_kill = _finished(killed_home)
        requests_at_kill = len(killed_server.requests)
        assert not group_alive(killed.pid), "the run's process group (Pipes workload included) survived SIGKILL"
        stray_tmp = [p.name for folder in _items_dir(killed_home) for p in folder.glob(".*.tmp")]

        # the killed run never reported its end: Dagster keeps it STARTED and its `gpu` pool slot claimed
        instance = instance_for(killed_home)
        killed_run = next(r for r in instance.get_runs() if r.status.value == "STARTED")
        holders = {s.run_id for s in instance.event_log_storage.get_concurrency_info("gpu").claimed_slots}
        instance.dispose()

        # re-run, with no recovery step in between: its own slot claim finds the dead holder and frees it
        resume_log = project.root / "resume.log"
        t1 = time.monotonic()
        resume = start(materialize_command("refined_trajectories"),
                       _env(project, killed_home, killed_server, embedded_path), resume_log)
        processes.append(resume)
        resumed = finish(resume, resume_log, 240, t1)
        instance = instance_for(killed_home)
        killed_status = instance.get_run_by_id(killed_run.run_id).status.value
        # the dead_run_sensor under `dagster dev` then finds nothing left to do
        tick = dead_run_sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
        instance.dispose()
        clean_run = finish(clean, project.root / "clean.log", 240, t0)
        yield {
            "clean_home": clean_home, "killed_home": killed_home, "clean": clean_run, "resume": resumed,
            "clean_server": clean_server, "killed_server": killed_server, "killed_run": killed_run.run_id,
            "holders": holders, "killed_status": killed_status, "tick": tick.skip_message,
            "finished_at_kill": finished_at_kill, "requests_at_kill": requests_at_kill, "killed_at": killed_at,
            "resume_log": resume_log.read_text(errors="replace"), "stray_tmp": stray_tmp,
            "tokenizer": Tokenizer.from_file(str(embedded_path / "tokenizer.json")),
        }
    finally:
        for process in processes:
            if process.poll() is None:
                kill_group(process)
        clean_server.stop()
        killed_server.stop()


def test_kill_landed_part_way(runs):
    finished = runs["finished_at_kill"]
    assert 1 <= len(finished) < ITEMS, f"{len(finished)} of {ITEMS} items finished at the kill: not part-way"
    print(f"\nkilled after {runs['killed_at']:.1f}s with {len(finished)}/{ITEMS} items checkpointed, "
          f"{runs['requests_at_kill']} model requests made; stray temp files: {runs['stray_tmp']}")


def test_the_rerun_frees_the_dead_runs_slot_by_itself(runs):
    assert runs["holders"] == {runs["killed_run"]}, "the killed run should still hold the gpu pool slot"
    assert runs["killed_status"] == "FAILURE"  # marked failed by the re-run's own slot claim
    assert f"{runs['killed_run']}" in runs["resume_log"] and "freed its slots" in runs["resume_log"]
    assert "Step blocked by limit for pool" not in runs["resume_log"]
    assert_ok(runs["resume"])
    print(f"\nre-run freed the dead run's pool slot itself and finished in {runs['resume'].seconds:.1f}s; "
          f"sensor afterwards: {runs['tick']}")


def test_items_finished_before_the_kill_are_not_recomputed(runs, project):
    assert_ok(runs["resume"])
    home, server = runs["killed_home"], runs["killed_server"]
    frame = _trajectories(home)
    markers = {r["query_id"]: r["query"][:40] for r in frame.iter_rows(named=True)}
    by_traj = {r["id"]: r["query_id"] for r in frame.iter_rows(named=True)}
    resume_requests = server.requests[runs["requests_at_kill"]:]
    per_item: dict[str | None, int] = {}
    for request in resume_requests:
        item = _item_of(request, markers, runs["tokenizer"])
        per_item[item] = per_item.get(item, 0) + 1
    done = {by_traj[t] for t in runs["finished_at_kill"]}
    assert per_item.get(None, 0) == 1, f"only the scorer's start-up check may be unattributed: {per_item}"
    assert all(per_item.get(q, 0) == 0 for q in done), f"finished items were sent again: {per_item}"
    # items not started before the kill are searched by the resume (the one in flight may replay from its cache)
    started = {_item_of(r, markers, runs["tokenizer"]) for r in server.requests[:runs["requests_at_kill"]]}
    assert all(per_item.get(q, 0) > 0 for q in set(markers) - done - started), per_item  # > 0: every unfinished item was asked for at least once; how often depends on the model

    summary = materializations(home, "refined_trajectories")[-1]["workload"]
    assert (summary["reused"], summary["made"], summary["failed"]) == (len(done), ITEMS - len(done), 0), summary

    clean_requests = len(runs["clean_server"].requests)
    total = len(server.requests)
    per_item_cost = clean_requests / ITEMS
    wasted = total - clean_requests
    print(f"\nrequests: clean run {clean_requests}; killed run {runs['requests_at_kill']} + resume "
          f"{len(resume_requests)} = {total} (extra {wasted}); resume per item {per_item}; summary {summary}")
    # at most the item in flight at the kill is redone, plus the resumed process's scorer check
    assert wasted <= per_item_cost + 1


def test_no_row_twice_in_parquet_or_lineage(runs):
    home = runs["killed_home"]
    folder = asset_path(home, "refined_trajectories")
    run_id = materializations(home, "refined_trajectories")[-1]["run_id"]
    for table, file in (("trajectories", "trajectories"), ("search_steps", "search_steps"),
                        ("candidates", "candidates")):
        frame = pl.read_parquet(folder / f"{file}.parquet")
        assert frame["id"].n_unique() == frame.height, f"duplicate ids in {file}.parquet"
        counts = lineage(home, f"SELECT count(*) AS n, count(DISTINCT id) AS ids, "
                               f"count(*) FILTER (WHERE run_id = ?) AS resumed FROM {table} WHERE partition = ?",
                         [run_id, DOMAIN])
        assert counts.row(0) == (frame.height, frame.height, frame.height), (table, counts.row(0), frame.height)
    assert _trajectories(home).height == ITEMS


def test_resumed_output_equals_an_uninterrupted_run(runs):
    assert_ok(runs["clean"])
    clean, resumed = _trajectories(runs["clean_home"]), _trajectories(runs["killed_home"])
    assert _outcome(resumed) == _outcome(clean)
    assert (clean["status"] == "ok").sum() == ITEMS  # the comparison is about real searches
    # the seeds matter: the answers the clean run got differ between items (seed-dependent text)
    assert clean["final_thinking"].n_unique() == ITEMS
    for table in ("search_steps", "candidates"):
        a = pl.read_parquet(asset_path(runs["clean_home"], "refined_trajectories") / f"{table}.parquet")
        b = pl.read_parquet(asset_path(runs["killed_home"], "refined_trajectories") / f"{table}.parquet")
        assert a.sort("id").equals(b.sort("id")), table


def test_checkpoint_rename_is_the_completion_marker_and_durable(tmp_path, monkeypatch):
    """Unit level: fsync the file, rename it into place, fsync the folder; a torn write is invisible."""
    from reer_assets.workloads import common

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", "dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file"))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", Path(src).name.startswith(".") and Path(dst).suffix == ".json"))
        return real_replace(src, dst)

    monkeypatch.setattr(common.os, "fsync", fsync)
    monkeypatch.setattr(common.os, "replace", replace)
    checkpoints = common.ItemCheckpoints(tmp_path / "items")
    checkpoints.save("traj_a", {"id": "traj_a"})
    assert events == [("fsync", "file"), ("rename", True), ("fsync", "dir")]

    # a run killed mid-write leaves only a hidden temp file: not an item, not listed
    (tmp_path / "items" / ".traj_b.json.x1y2.tmp").write_text('{"id": "tr')
    assert checkpoints.has("traj_a") and not checkpoints.has("traj_b")
    assert [row["id"] for row in checkpoints] == ["traj_a"]

    # a failure before the rename leaves no checkpoint at all
    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(common.os, "replace", broken_replace)
    with pytest.raises(OSError):
        checkpoints.save("traj_c", {"id": "traj_c"})
    assert not checkpoints.has("traj_c")
    assert sorted(p.name for p in (tmp_path / "items").iterdir()) == [".traj_b.json.x1y2.tmp", "traj_a.json"]
