"""Twenty kill-resume trials: SIGKILL a real ``dagster asset materialize`` of ``refined_trajectories``
at seeded moments of its life, twenty times in a row, with no recovery step in between, then let it
finish; the result must equal an uninterrupted run of the same seed, and no run may wait on the pool
slot of a run killed before it.

One small domain (3 given-request pieces, profile ``test``) is materialised up to
``synthesized_queries`` once; the uninterrupted run and the trials then run in copies of that
instance folder. Both talk to a seeded fault server (``tests/support/fault_server.py``: answers
depend on each request's seed, prompt log-probs on the whole prompt), which also counts the model
calls of each process from outside.

Each trial is one CLI run in its own process group, killed (``os.killpg(SIGKILL)``) the moment an
*event* is seen, never after a sleep or a measured duration. The kind of each trial and the event
it is killed on are drawn from a seeded RNG before any run:

``startup``   before the run starts: the process spawned, its first console line, the project's code
              imported (``_duckdb`` mapped into the CLI process), or the run created (its event-log
              file appears under ``history/runs/``);
``run_start`` the ``RUN_START`` line, before the step claims its pool slot;
``step``      after ``STEP_START`` (the ``gpu`` slot claimed), before any model request: the
              ``STEP_START`` line, the Pipes workload process spawned, Pipes opened, the openai
              SDK or tokenizers loaded into the workload;
``model``     mid-request: the fault server holds the process's N-th request (N drawn from 2-4) open
              and the kill comes once it has arrived, so the process is surely waiting on it;
``late``      after the workload wrote its Parquet output: the three files rewritten (the workload
              gone), the run waiting for the lineage DB's lock (held by the test), both before the
              lineage write; or ``fingerprint.json`` saved, after it.

The fault server also holds the first request of every startup, run_start and step trial, so none of
them can get a model answer before its kill whatever the machine's load. The late ones come last
(they let the workload finish its items) and in the order a run meets their events. No recovery
command runs between trials: every run that finds the slot held by a killed run must reclaim it on
its own (``ReerInstance``'s claim hook), which the checks read back from the runs' event logs.
"""

from __future__ import annotations

import json
import os
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
    log_tail,
    materialize_command,
    prepare_tiny_project,
    start,
)
from tests.support.fault_server import FaultServer, Hold
from tests.support.traces import SCORE_TOLERANCE, assert_same

pytestmark = [
    pytest.mark.model,  # the openai scorer tokenizes with the embedded tokenizer
    pytest.mark.slow,
    # the module fixture runs 22 CLI materialisations one after another (about 5 minutes on two idle
    # cores, twice that on a loaded machine); the first test of the module pays for it
    pytest.mark.timeout(1800),
]

ITEMS = 3
TRIALS = 20
SEED = 18
KINDS = ["startup"] * 3 + ["run_start"] + ["step"] * 4 + ["model"] * 7  # shuffled; then the late ones
LATE = 5
STARTUP_EVENTS = ("spawned", "console output", "project imported", "run created")
STEP_EVENTS = ("STEP_START", "workload spawned", "pipes opened", "openai imported", "tokenizers imported")
MODEL_REQUESTS = (2, 3, 4)  # the request of the process (the scorer's start-up check is its 1st) held at the kill
LATE_EVENTS = ("output", "lineage locked", "fingerprint")  # in the order a run meets them
LOCKED_LATE = ("output", "lineage locked")  # the test holds the lineage DB's lock: surely before the lineage write
EVENT_DEADLINE_S = 300.0  # a bound: a trial whose event never comes fails with this, naming the event
POLL_S = 0.02  # polling interval of the watch loop (not a timing of the run)

RUN_ID = re.compile(r" - ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}) - ")
RUN_FILE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.db$")
PIPES_OPENED = "[pipes] external process successfully opened dagster pipes"
LINEAGE_LOCKED = "is locked by another process"  # duckdb_store.connect's warning while it retries
REUSED = "refined_trajectories is up to date"
WORKLOAD = b"reer_assets.workloads.refinement"
BLOCKED = "Step blocked by limit for pool"
HELD_PHASES = ("workload starting", "model work", "after the workload")  # the gpu slot is surely held
TABLES = ("trajectories", "search_steps", "candidates")
NONDETERMINISTIC = ("seconds", "trace_json")  # wall time of an item (and the trace that records it)


def _server() -> FaultServer:
    return FaultServer(seeded=True).start()


def _stamp(path: Path) -> tuple | None:
    """What identifies one version of a file: inode, modification time, size (None: no file)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def _mapped(pid: int | None, needle: str) -> bool:
    """Whether a file whose path holds ``needle`` (a C extension: the module was imported) is mapped
    into process ``pid``."""
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as handle:
            return any(needle in line for line in handle)
    except OSError:
        return False


def _group_workload(pgid: int) -> int | None:
    """The live Pipes workload process of process group ``pgid`` (an exited, unreaped one has no cmdline)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                if WORKLOAD in handle.read():
                    return int(entry.name)
        except (OSError, ProcessLookupError):
            continue
    return None


class Watch:
    """What a running CLI materialisation has got to, read from outside: its console log, the shared
    libraries mapped into it and its workload, the files it wrote, the requests it sent."""

    def __init__(self, log_path: Path, server: FaultServer, home: Path, hold: Hold | None):
        self.log_path, self.server, self.hold = log_path, server, hold
        folder = asset_path(home, "refined_trajectories")
        self.outputs = [folder / f"{table}.parquet" for table in TABLES]
        self.fingerprint = folder / "fingerprint.json"
        self.runs_dir = home / "history" / "runs"
        self.before = {path: _stamp(path) for path in [*self.outputs, self.fingerprint]}
        self.run_files = self._run_files()
        self.base_requests = len(server.requests)
        self.process = None
        self.t0 = time.monotonic()
        self.text = ""

    def started(self, process) -> None:
        self.process, self.t0 = process, time.monotonic()

    def _run_files(self) -> set[str]:
        try:
            return {name for name in os.listdir(self.runs_dir) if RUN_FILE.match(name)}
        except FileNotFoundError:
            return set()

    def poll(self) -> None:
        self.text = self.log_path.read_text(errors="replace")

    def changed(self, path: Path) -> bool:
        stamp = _stamp(path)
        return stamp is not None and stamp != self.before[path]

    def logged(self, event: str) -> bool:
        return f" - {event} - " in self.text

    @property
    def requests(self) -> int:
        """Requests of this process that reached the server."""
        return len(self.server.requests) - self.base_requests

    @property
    def answered(self) -> int:
        """Requests of this process answered: a held one is released only after the kill."""
        return self.requests - (1 if self.hold is not None and self.hold.arrived.is_set() else 0)

    @property
    def body_done(self) -> bool:
        return self.logged("STEP_OUTPUT") or self.logged("STEP_FAILURE")

    def happened(self, event: str | int) -> bool:
        """Whether ``event`` has been seen (``event`` an int: that request of the process arrived, held)."""
        pid = self.process.pid
        if isinstance(event, int):
            return self.hold.arrived.is_set()
        if event == "spawned":  # Popen returned: the interpreter is starting
            return True
        if event == "console output":  # its first line (the warning click prints as the command begins)
            return bool(self.text)
        if event == "project imported":  # the definitions' imports reached duckdb (reer_assets.lib.duckdb_store)
            return _mapped(pid, "/_duckdb.")
        if event == "run created":  # Dagster created the run: its event-log file
            return bool(self._run_files() - self.run_files)
        if event in ("RUN_START", "STEP_START"):
            return self.logged(event)
        if event == "workload spawned":
            return _group_workload(pid) is not None
        if event == "pipes opened":
            return PIPES_OPENED in self.text
        if event == "openai imported":  # the openai SDK's pydantic core, as the backends are built
            return _mapped(_group_workload(pid), "/pydantic_core/_pydantic_core.")
        if event == "tokenizers imported":
            return _mapped(_group_workload(pid), "/tokenizers/tokenizers.")
        if event == "output":  # all three Parquet files rewritten and the workload that wrote them gone
            return all(self.changed(p) for p in self.outputs) and _group_workload(pid) is None
        if event == "lineage locked":
            return LINEAGE_LOCKED in self.text
        if event == "fingerprint":
            return self.changed(self.fingerprint)
        raise ValueError(f"unknown event {event!r}")

    def phase(self) -> str:
        if not self.logged("RUN_START"):
            return "before run start"
        if not self.logged("STEP_START"):
            return "before step start"
        if self.body_done:
            return "after the asset body"
        if self.changed(self.outputs[0]):
            return "after the workload"
        return "model work" if self.answered else "workload starting"

    def run_id(self) -> str | None:
        match = RUN_ID.search(self.text)
        return match.group(1) if match else None


@dataclass
class Trial:
    index: int
    kind: str
    event: str  # what it was planned to be killed on
    fired: str = ""  # what it was killed on: the event, or "body returned" (a late run that reused)
    killed: bool = False
    phase: str = ""
    at_s: float = 0.0  # reported, never asserted
    requests: int = 0  # requests of this process that reached the server
    answered: int = 0
    run_id: str | None = None
    reused: bool = False  # the run found the partition current
    fingerprint_saved: bool = False
    lineage_rows: int | None = None  # late trials: trajectories the killed run had written to lineage


def _label(kind: str, event: str | int) -> str:
    return f"request {event} (held)" if kind == "model" else event


def _plan(rng: random.Random) -> list[tuple[str, str | int]]:
    """(kind, event) for every trial, drawn before any runs."""
    kinds = list(KINDS)
    rng.shuffle(kinds)
    startup = rng.sample(STARTUP_EVENTS, kinds.count("startup"))
    step = rng.sample(STEP_EVENTS, kinds.count("step"))
    plan: list[tuple[str, str | int]] = []
    for kind in kinds:
        if kind == "startup":
            plan.append((kind, startup.pop()))
        elif kind == "step":
            plan.append((kind, step.pop()))
        elif kind == "model":
            plan.append((kind, rng.choice(MODEL_REQUESTS)))
        else:
            plan.append((kind, "RUN_START"))
    # every late event at least once, the rest drawn; in the order a run meets them, so those before the
    # fingerprint come first (once a run saved it, later runs find the partition current and reuse it)
    late = list(LATE_EVENTS) + rng.choices(LATE_EVENTS, k=LATE - len(LATE_EVENTS))
    plan += [("late", event) for event in sorted(late, key=LATE_EVENTS.index)]
    assert len(plan) == TRIALS
    return plan


class LineageLock:
    """The test holding the lineage DB open read-write: DuckDB admits one such process, so a run's
    lineage write waits (``duckdb_store.connect`` retries, logging that the file is locked)."""

    def __init__(self, home: Path):
        import duckdb

        self.con = duckdb.connect(str(home / "lineage.duckdb"))

    def release(self) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None


def _trial(index: int, kind: str, event: str | int, command, env, home: Path, server: FaultServer,
           log_path: Path) -> Trial:
    trial = Trial(index, kind, _label(kind, event))
    base = len(server.requests)
    # model: hold the N-th request of this process open (the kill comes while it waits on it); startup,
    # run_start, step: hold its first, so no model answer can come before the kill whatever the load
    hold = None if kind == "late" else server.hold(number=base + (event if kind == "model" else 1))
    lock = LineageLock(home) if event in LOCKED_LATE else None
    watch = Watch(log_path, server, home, hold)
    process = start(command, env, log_path)
    watch.started(process)
    deadline = time.monotonic() + EVENT_DEADLINE_S
    try:
        while process.poll() is None:
            watch.poll()
            # a late run that found the partition current writes nothing: it is killed once its body returned
            fired = trial.event if watch.happened(event) else "body returned" if watch.body_done else None
            if fired:
                trial.at_s = round(time.monotonic() - watch.t0, 2)
                kill_group(process)
                trial.fired, trial.killed = fired, process.returncode is not None and process.returncode < 0
                break
            if time.monotonic() > deadline:
                kill_group(process)
                raise AssertionError(f"trial {index} ({kind}): {trial.event} never came within {EVENT_DEADLINE_S:.0f}s "
                                     f"(requests {watch.requests}):\n{log_tail(log_path)}")
            time.sleep(POLL_S)  # wait: a polling interval
        else:
            trial.phase, trial.at_s = "exited by itself", round(time.monotonic() - watch.t0, 2)
    finally:
        if hold is not None:  # after the kill: the held request's client is gone
            hold.release()
        if lock is not None:
            lock.release()
    assert not group_alive(process.pid), f"trial {index}: the process group survived SIGKILL"
    watch.poll()  # what the process wrote before it died
    trial.phase = trial.phase or watch.phase()
    trial.requests, trial.answered, trial.run_id = watch.requests, watch.answered, watch.run_id()
    trial.reused = REUSED in watch.text
    trial.fingerprint_saved = watch.changed(watch.fingerprint)
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
        t0 = time.monotonic()
        clean = start(command, project.env(clean_home, fault_server_env(clean_server, embedded_path,
                                                                        MAX_IN_FLIGHT="1")), clean_log)
        processes.append(clean)
        clean_run = finish(clean, clean_log, 240, t0)
        assert_ok(clean_run)

        env = project.env(home, fault_server_env(server, embedded_path, MAX_IN_FLIGHT="1"))
        plan = _plan(random.Random(SEED))
        t1 = time.monotonic()
        done = [_trial(i, kind, event, command, env, home, server, root / f"trial-{i:02d}.log")
                for i, (kind, event) in enumerate(plan)]
        trials_s = time.monotonic() - t1
        final_log = root / "final.log"
        final = start(command, env, final_log)
        processes.append(final)
        final_run = finish(final, final_log, 240, time.monotonic())
        total_s = time.monotonic() - began
        report = {"prepare_s": round(prepared, 1), "clean_s": round(clean_run.seconds, 1),
                  "trials_s": round(trials_s, 1), "final_s": round(final_run.seconds, 1),
                  "total_s": round(total_s, 1),
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


def _of(done: list[Trial], kind: str) -> list[Trial]:
    return [t for t in done if t.kind == kind]


def test_twenty_kills_each_on_its_event(trials):
    done, report = trials["trials"], trials["report"]
    lines = [f"{t.index:>2} {t.kind:<9} {t.event:<20} fired {t.fired:<20} at {t.at_s:>5.2f}s {t.phase:<20} "
             f"requests {t.requests:>2} answered {t.answered:>2}  run {t.run_id or '-'}"
             + (f"  lineage rows {t.lineage_rows}" if t.lineage_rows is not None else "")
             + ("  reused" if t.reused else "") for t in done]
    print(f"\nrequests {report['requests']}\n" + "\n".join(lines))
    print(f"wall time: prepare {report['prepare_s']}s, uninterrupted run {report['clean_s']}s, trials "
          f"{report['trials_s']}s, final run {report['final_s']}s, whole file {report['total_s']}s")
    assert all(t.killed for t in done), [asdict(t) for t in done if not t.killed]
    # every trial but the late ones of a reused run was killed on its own event
    assert all(t.fired == t.event for t in done if t.kind != "late"), [asdict(t) for t in done if t.fired != t.event]
    # nothing got a model answer before its step: the first request of these runs was held until the kill
    for t in _of(done, "startup") + _of(done, "run_start"):
        assert t.phase in ("before run start", "before step start", "workload starting") and not t.answered, asdict(t)
    assert any(t.phase == "before run start" for t in _of(done, "startup")), [asdict(t) for t in _of(done, "startup")]
    for t in _of(done, "step"):  # the slot claimed, no model answer yet
        assert t.phase == "workload starting" and t.answered == 0, asdict(t)
    for t in _of(done, "model"):  # mid-request: the N-th request arrived and was never answered
        n = int(t.event.split()[1])
        assert t.phase == "model work" and (t.requests, t.answered) == (n, n - 1), asdict(t)
    late = _of(done, "late")
    for t in late:
        if t.event in LOCKED_LATE:  # the lineage lock was held: after the output, surely before the lineage write
            assert t.fired == t.event and t.phase == "after the workload", asdict(t)
            assert t.lineage_rows == 0 and not t.fingerprint_saved, asdict(t)
    saved = [t for t in late if t.fired == "fingerprint"]
    assert len(saved) == 1, [asdict(t) for t in late]  # the first fingerprint trial; later runs reuse
    assert saved[0].lineage_rows == ITEMS and saved[0].phase in ("after the workload", "after the asset body")
    after = late[late.index(saved[0]) + 1:]
    assert after and all(t.fired == "body returned" and t.reused and t.lineage_rows == 0 for t in after), after
    assert_ok(trials["final"])
    assert REUSED in trials["final"].log  # the killed fingerprint trial left the partition current


def _engine_blocked(instance, run_id: str) -> list[str]:
    import dagster as dg

    return [e.dagster_event.message for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
            if (e.dagster_event.message or "").startswith(BLOCKED)]


def test_no_run_waited_on_a_dead_runs_slot(trials):
    import dagster as dg

    from reer_assets.runtime.recovery import recover_report
    from reer_assets.runtime.dagster_internals import pool_holdings

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
