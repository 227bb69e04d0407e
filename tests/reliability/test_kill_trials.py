"""Twenty kill-resume trials: SIGKILL a real ``dagster asset materialize`` of ``refined_trajectories``
at random moments of its life, twenty times in a row, with no recovery step in between, then let it
finish; the result must equal an uninterrupted run of the same seed, and no run may wait on the pool
slot of a run killed before it.

One small domain (3 given-request pieces, profile ``test``) is materialised up to
``synthesized_queries`` once; the uninterrupted run and the trials then run in copies of that
instance folder. Both talk to a seeded fault server (``tests/support/fault_server.py``: answers
depend on each request's seed, prompt log-probs on the whole prompt; every request takes
``SLOW_S``), which also counts the model calls of each process from outside.

Each trial is one CLI run in its own process group, killed (``os.killpg(SIGKILL)``) at a moment drawn
from a seeded RNG in one of four parts of the run's life, measured on the uninterrupted run:

``startup``  before the run starts (the CLI loading definitions, the run being created);
``run_start`` just after ``RUN_START``, before the step claims its pool slot;
``step``     after ``STEP_START`` (the ``gpu`` slot claimed) while the Pipes workload starts up;
``model``    during model work: once the workload has sent 2-4 requests, mid-request;
``late``     after the workload wrote its Parquet output: reading it back, the lineage write, the
             fingerprint, the materialisation event.

The late ones come last (they let the workload finish its items). No recovery command runs
between trials: every run that finds the slot held by a killed run must reclaim it on its own
(``ReerInstance``'s claim hook), which the checks read back from the runs' event logs.
"""

from __future__ import annotations

import json
import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl
import pytest

from tests.reliability.conftest import (
    DOMAIN,
    assert_ok,
    asset_path,
    fault_server_env,
    finish,
    group_alive,
    instance_for,
    kill_group,
    lineage,
    materialize_command,
    prepare_tiny_project,
    start,
)
from tests.support.fault_server import FaultServer
from tests.support.traces import SCORE_TOLERANCE, assert_same

pytestmark = [pytest.mark.model, pytest.mark.slow]  # the openai scorer tokenizes with the embedded tokenizer

ITEMS = 3
TRIALS = 20
SEED = 18
SLOW_S = 0.15  # each model request takes this long
KINDS = ["startup"] * 3 + ["run_start"] + ["step"] * 4 + ["model"] * 7  # shuffled; then LATE
LATE = ["late"] * 5
RUN_ID = re.compile(r" - ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}) - ")
BLOCKED = "Step blocked by limit for pool"
HELD_PHASES = ("workload starting", "model work", "after the workload")  # the gpu slot is surely held
TABLES = ("trajectories", "search_steps", "candidates")
NONDETERMINISTIC = ("seconds", "trace_json")  # wall time of an item (and the trace that records it)


def _server() -> FaultServer:
    server = FaultServer(slow_s=SLOW_S, seeded=True).start()
    server.on('"model"', "slow")
    return server


class Watch:
    """What a running CLI materialisation has got to, read from outside: its console log, the
    requests it sent, the Parquet output it wrote."""

    def __init__(self, process, log_path: Path, server: FaultServer, home: Path):
        self.process, self.log_path, self.server = process, log_path, server
        self.output = asset_path(home, "refined_trajectories") / "trajectories.parquet"
        self.base_requests = len(server.requests)
        self.t0, self.wall0 = time.monotonic(), time.time()
        self.run_at: float | None = None
        self.step_at: float | None = None
        self.output_at: float | None = None
        self.text = ""

    def poll(self) -> None:
        self.text = self.log_path.read_text(errors="replace")
        now = time.monotonic() - self.t0
        if self.run_at is None and "RUN_START" in self.text:
            self.run_at = now
        if self.step_at is None and "STEP_START" in self.text:
            self.step_at = now
        if self.output_at is None and self.output.exists() and self.output.stat().st_mtime > self.wall0:
            self.output_at = now

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    @property
    def requests(self) -> int:
        return len(self.server.requests) - self.base_requests

    @property
    def body_done(self) -> bool:
        return "STEP_OUTPUT" in self.text or "STEP_FAILURE" in self.text

    def phase(self) -> str:
        if "RUN_START" not in self.text:
            return "before run start"
        if self.step_at is None:
            return "before step start"
        if self.body_done:
            return "after the asset body"
        if self.output_at is not None:
            return "after the workload"
        return "model work" if self.requests else "workload starting"

    def run_id(self) -> str | None:
        match = RUN_ID.search(self.text)
        return match.group(1) if match else None


@dataclass
class Trial:
    index: int
    kind: str
    plan: str
    killed: bool = False
    phase: str = ""
    at_s: float = 0.0
    requests: int = 0
    run_id: str | None = None
    lineage_rows: int | None = None  # late trials: trajectories the killed run had written to lineage


def _timeline(watch: Watch) -> dict[str, float]:
    """The uninterrupted run's life: when its step started, its first request, its output, its end."""
    first_request = None
    while watch.process.poll() is None:
        watch.poll()
        if first_request is None and watch.requests:
            first_request = watch.elapsed
        time.sleep(0.02)
    watch.poll()
    return {"run_start": watch.run_at, "step_start": watch.step_at, "first_request": first_request,
            "output": watch.output_at, "end": watch.elapsed}


def _plan(rng: random.Random) -> list[tuple[str, float]]:
    """(kind, a number drawn for it) for every trial, drawn before any runs."""
    kinds = list(KINDS)
    rng.shuffle(kinds)
    kinds += LATE
    assert len(kinds) == TRIALS
    plan = [(kind, rng.randint(2, 4) + rng.random() if kind == "model" else rng.random()) for kind in kinds]
    # the late kills in increasing delay: each one that lands before the fingerprint is saved leaves
    # the next run the same window (reading the output back, the lineage write) to be killed in
    late = sorted(draw for kind, draw in plan if kind == "late")
    return [(kind, late.pop(0) if kind == "late" else draw) for kind, draw in plan]


def _trial(index: int, kind: str, draw: float, timeline: dict, command, env, home: Path, server: FaultServer,
           log_path: Path) -> Trial:
    process = start(command, env, log_path)
    watch = Watch(process, log_path, server, home)
    state: dict[str, float] = {}
    if kind == "startup":  # before the run starts
        at = 0.3 + draw * (0.95 * timeline["run_start"] - 0.3)
        plan = f"at {at:.2f}s"

        def fire():
            return watch.elapsed >= at or watch.run_at is not None
    elif kind == "run_start":  # the run started, its step not yet
        plan = "at RUN_START"

        def fire():
            return watch.run_at is not None
    elif kind == "step":  # the slot claimed, the workload starting up
        after = draw * 0.9 * (timeline["first_request"] - timeline["step_start"])
        plan = f"{after:.2f}s after STEP_START"

        def fire():
            return watch.step_at is not None and (watch.elapsed - watch.step_at >= after or watch.requests > 0)
    elif kind == "model":  # mid-request, after this process sent `requests` of them
        requests, within = int(draw), (draw % 1) * SLOW_S
        plan = f"{within:.2f}s into request {requests}"

        def fire():
            if watch.requests >= requests and "since" not in state:
                state["since"] = time.monotonic()
            return "since" in state and time.monotonic() - state["since"] >= within
    else:  # late: after the workload wrote its output
        after = draw * 0.5
        plan = f"{after:.2f}s after the Parquet output"

        def fire():
            return watch.output_at is not None and watch.elapsed - watch.output_at >= after
    trial = Trial(index, kind, plan)
    while process.poll() is None:
        watch.poll()
        # whatever the plan, never let a trial run to its end: kill once the asset body has returned
        if fire() or watch.body_done:
            trial.phase, trial.at_s, trial.requests = watch.phase(), round(watch.elapsed, 2), watch.requests
            kill_group(process)
            trial.killed = process.returncode is not None and process.returncode < 0
            break
        time.sleep(0.02)
    else:
        trial.phase, trial.at_s = "exited by itself", round(watch.elapsed, 2)
    assert not group_alive(process.pid), f"trial {index}: the process group survived SIGKILL"
    watch.poll()
    trial.run_id = watch.run_id()
    if kind == "late" and trial.run_id:  # a read, not a recovery step: did the kill land before the lineage write?
        trial.lineage_rows = int(lineage(home, "SELECT count(*) AS n FROM trajectories WHERE run_id = ?",
                                         [trial.run_id])["n"][0])
    return trial


@pytest.fixture(scope="module")
def trials(embedded_path, tmp_path_factory):
    began = time.monotonic()
    root = tmp_path_factory.mktemp("kill_trials")
    project = prepare_tiny_project(root, ITEMS)
    prepared = time.monotonic() - began
    clean_server, server = _server(), _server()
    clean_home, home = project.home("clean"), project.home("trials")
    command = materialize_command("refined_trajectories")
    processes = []
    try:
        clean_log = root / "clean.log"
        clean = start(command, project.env(clean_home, fault_server_env(clean_server, embedded_path,
                                                                        MAX_IN_FLIGHT="1")), clean_log)
        processes.append(clean)
        timeline = _timeline(Watch(clean, clean_log, clean_server, clean_home))
        clean_run = finish(clean, clean_log, 60, began)
        assert_ok(clean_run)

        env = project.env(home, fault_server_env(server, embedded_path, MAX_IN_FLIGHT="1"))
        plan = _plan(random.Random(SEED))
        t1 = time.monotonic()
        done = [_trial(i, kind, draw, timeline, command, env, home, server, root / f"trial-{i:02d}.log")
                for i, (kind, draw) in enumerate(plan)]
        trials_s = time.monotonic() - t1
        final_log = root / "final.log"
        final = start(command, env, final_log)
        processes.append(final)
        final_run = finish(final, final_log, 240, time.monotonic())
        total_s = time.monotonic() - began
        report = {"timeline": {k: round(v, 2) if v else v for k, v in timeline.items()},
                  "prepare_s": round(prepared, 1), "trials_s": round(trials_s, 1),
                  "final_s": round(final_run.seconds, 1), "total_s": round(total_s, 1),
                  "requests": {"clean": len(clean_server.requests), "trials_and_final": len(server.requests)},
                  "trials": [asdict(t) for t in done]}
        (root / "kill_trials.json").write_text(json.dumps(report, indent=2))
        yield {"clean_home": clean_home, "home": home, "final": final_run, "trials": done, "report": report,
               "final_run_id": RUN_ID.search(final_run.log).group(1) if RUN_ID.search(final_run.log) else None}
    finally:
        for process in processes:
            if process.poll() is None:
                kill_group(process)
        clean_server.stop()
        server.stop()


def test_twenty_kills_spread_over_the_runs_life(trials):
    done, report = trials["trials"], trials["report"]
    lines = [f"{t.index:>2} {t.kind:<9} {t.plan:<32} killed at {t.at_s:>5.2f}s  {t.phase:<20} "
             f"requests {t.requests:>2}  run {t.run_id or '-'}"
             + (f"  lineage rows {t.lineage_rows}" if t.lineage_rows is not None else "") for t in done]
    print(f"\nuninterrupted run: {report['timeline']}; requests {report['requests']}\n" + "\n".join(lines))
    print(f"wall time: prepare {report['prepare_s']}s, trials {report['trials_s']}s, final run "
          f"{report['final_s']}s, whole file {report['total_s']}s")
    assert all(t.killed for t in done), [asdict(t) for t in done if not t.killed]
    phases = {t.phase for t in done}
    assert {"before run start", "workload starting", "model work"} <= phases, phases
    assert phases & {"after the workload", "after the asset body"}, phases
    assert_ok(trials["final"])


def _engine_blocked(instance, run_id: str) -> list[str]:
    import dagster as dg

    return [e.dagster_event.message for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
            if (e.dagster_event.message or "").startswith(BLOCKED)]


def test_no_run_waited_on_a_dead_runs_slot(trials):
    import dagster as dg

    from reer_assets.defs.recovery import recover_report
    from reer_assets.lib.dagster_internals import pool_holdings

    instance = instance_for(trials["home"])
    try:
        runs = {r.run_id: r for r in instance.get_runs()}
        order = [t.run_id for t in trials["trials"] if t.run_id] + [trials["final_run_id"]]
        # no run of the instance was ever blocked by a pool limit
        blocked = {run_id: _engine_blocked(instance, run_id) for run_id in runs}
        assert not any(blocked.values()), {k: v for k, v in blocked.items() if v}
        # every run killed holding the gpu slot was marked failed by a later run claiming it,
        # which says so in its own log
        held = [t for t in trials["trials"] if t.phase in HELD_PHASES]
        assert held
        reclaims = []
        for trial in held:
            run = runs[trial.run_id]
            assert run.status == dg.DagsterRunStatus.FAILURE, (trial, run.status)
            by = re.search(r"run ([0-9a-f-]{36})", run.tags["reer/reclaimed_by"]).group(1)
            assert order.index(by) > order.index(trial.run_id), (trial, by)
            said = [e.user_message for e in instance.all_logs(by) if e.dagster_event is None
                    and e.user_message.startswith(f"Pool gpu: the slot of run {trial.run_id}")]
            assert len(said) == 1 and "not blocked by limit" in said[0], (trial, said)
            reclaims.append((trial.index, order.index(by) - order.index(trial.run_id)))
        assert pool_holdings(instance) == []
        # what is left for `reer recover`: runs killed holding nothing (e.g. before their step)
        left = recover_report(instance, dry_run=True)["dead_runs"]
        assert all(entry["slots"] == [] for entry in left), left
        statuses = {}
        for run in runs.values():
            statuses[run.status.value] = statuses.get(run.status.value, 0) + 1
        print(f"\n{len(held)} runs killed holding the gpu slot, each reclaimed by a later run "
              f"(trial, runs later): {reclaims}; no run logged '{BLOCKED}'; run statuses {statuses}; "
              f"{len(left)} dead run(s) holding nothing left for `reer recover`")
    finally:
        instance.dispose()


def _frame(home: Path, table: str) -> pl.DataFrame:
    return pl.read_parquet(asset_path(home, "refined_trajectories") / f"{table}.parquet")


def _rows(frame: pl.DataFrame) -> list[dict]:
    return frame.drop([c for c in NONDETERMINISTIC if c in frame.columns]).sort("id").to_dicts()


def test_output_equals_an_uninterrupted_run(trials):
    clean, resumed = _frame(trials["clean_home"], "trajectories"), _frame(trials["home"], "trajectories")
    assert sorted(resumed["id"]) == sorted(clean["id"])
    assert clean.height == ITEMS and (clean["status"] == "ok").sum() == ITEMS
    exact = ["id", "status", "initial_thinking", "final_thinking", "num_steps", "completion_tokens", "scored_tokens"]
    assert resumed.select(exact).sort("id").equals(clean.select(exact).sort("id"))
    assert clean["final_thinking"].n_unique() == ITEMS  # seed-dependent: a wrong seed would show
    for table in TABLES:  # every column but the wall time; scores within SCORE_TOLERANCE
        assert_same(_rows(_frame(trials["home"], table)), _rows(_frame(trials["clean_home"], table)), table,
                    SCORE_TOLERANCE)
    # the whole search trace of every item (steps, candidates, raw outputs, choices, token counts)
    assert_same([json.loads(t) for t in resumed.sort("id")["trace_json"]],
                [json.loads(t) for t in clean.sort("id")["trace_json"]], "trace_json", SCORE_TOLERANCE)


def test_no_id_twice_in_parquet_or_lineage(trials):
    home = trials["home"]
    for table in TABLES:
        frame = _frame(home, table)
        assert frame["id"].n_unique() == frame.height, f"duplicate ids in {table}.parquet"
        stored = lineage(home, f"SELECT id FROM {table} WHERE partition = ?", [DOMAIN])["id"]
        assert stored.n_unique() == stored.len(), f"duplicate ids in lineage table {table}"
        assert sorted(stored.to_list()) == sorted(frame["id"].to_list()), table
