"""A process SIGKILLed in the middle of a lineage write leaves that write whole or absent.

``duckdb_store.write_many`` writes several tables in one DuckDB transaction. Here a child process
writes two large tables (200,000 rows each) in one ``write_many`` and is SIGKILLed several times
against the same database file, each time on an *event* of the write, never after a sleep: the child
runs the project's own ``write_many`` with its connection traced, printing a marker as it begins the
transaction, starts each table's insert, commits and closes, and waits (for the kill) at the marker it
was told to stop at; two events are file sizes seen from outside, during the commit (the WAL file has
grown past a seeded number of bytes) and during the checkpoint at close (the database file has grown
past a seeded number of bytes). Each of the eight events is used once, in a seeded order. After every
kill the file must open, each table must hold all or none of that write's rows (both the same:
absent for a kill before the COMMIT, whole for one after it returned, either during it), and every
earlier write must be intact.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.reliability.conftest import REPO

pytestmark = pytest.mark.slow

ROWS = 200_000
SEED = 18
TABLES = ("kill_a", "kill_b")
MARKER_DEADLINE_S = 120.0  # a bound on waiting for the child's next marker; it fails the test, naming the marker
POLL_S = 0.001  # polling interval of a file size

# event -> (the marker the child waits at, the outcome the kill must leave: "absent", "whole" or None for either)
EVENTS = {
    "begun": ("begun", "absent"),  # the transaction begun, nothing inserted
    "inserting-kill_a": ("committing", "absent"),  # killed as the first table's insert starts (it runs on)
    "inserting-kill_b": ("committing", "absent"),  # killed as the second table's insert starts
    "committing": ("committing", "absent"),  # both inserted, COMMIT not yet executed
    "wal": ("committed", None),  # during COMMIT: the WAL file has grown past a seeded size
    "committed": ("committed", "whole"),  # COMMIT returned, the connection still open
    "checkpoint": ("closed", "whole"),  # during the checkpoint at close: the file has grown past a seeded size
    "closed": ("closed", "whole"),  # the connection closed, the process not yet exited
}
KILLS = len(EVENTS)

CHILD = r"""
import contextlib, os, sys
import polars as pl
from reer_assets.lib import duckdb_store

path, write_no, rows, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]


def size(name):
    return os.path.getsize(name) if os.path.exists(name) else 0


def at(name, **sizes):
    # where the write has got to; at the stop marker, wait for the kill (end of input: the parent is gone)
    print(" ".join([name] + [f"{k}={v}" for k, v in sizes.items()]), flush=True)
    if name == stop:
        sys.stdin.readline()
        os._exit(3)


class Traced:
    # the real connection; every statement write_many runs is announced (before and after)
    def __init__(self, con):
        self._con = con

    def execute(self, sql, *args, **kwargs):
        words = sql.split()
        verb = words[0].upper()
        if verb == "INSERT":
            at("inserting-" + words[4])  # INSERT OR REPLACE INTO <table> ...
        if verb == "COMMIT":
            at("committing")
        result = self._con.execute(sql, *args, **kwargs)
        if verb == "BEGIN":
            at("begun")
        if verb == "COMMIT":
            at("committed", wal=size(path + ".wal"), db=size(path))
        return result

    def __getattr__(self, name):
        return getattr(self._con, name)


real_connect = duckdb_store.connect


@contextlib.contextmanager
def traced_connect(*args, **kwargs):
    with real_connect(*args, **kwargs) as con:
        yield Traced(con)
    at("closed", db=size(path))


duckdb_store.connect = traced_connect
frames = {t: pl.DataFrame({"id": [f"{t}-{write_no}-{j}" for j in range(rows)], "write_no": [write_no] * rows,
                            "payload": [f"row {j} of write {write_no} " + "x" * 48 for j in range(rows)]})
          for t in ("kill_a", "kill_b")}
at("ready")
duckdb_store.write_many(frames, path=path)
print("DONE", flush=True)
"""


class Writer:
    """One ``write_many`` in a child process (its own process group); its markers arrive on a queue."""

    def __init__(self, path: Path, write_no: int, stop: str = "none"):
        self.path = path
        self.process = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(write_no), str(ROWS), stop],
                                        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)  # end of output

    def _take(self, line: str | None, waiting_for: str) -> tuple[str, dict[str, int]]:
        if line is None:
            raise AssertionError(f"the writer ended before {waiting_for!r} (seen {self.seen}): "
                                 f"{self.process.stderr.read()}")
        self.seen.append(line)
        name, *sizes = line.split()
        return name, {k: int(v) for k, v in (s.split("=") for s in sizes)}

    def next(self, waiting_for: str) -> tuple[str, dict[str, int]]:
        """The next marker, waiting at most MARKER_DEADLINE_S."""
        try:
            line = self.lines.get(timeout=MARKER_DEADLINE_S)
        except queue.Empty:
            raise AssertionError(f"no marker from the writer within {MARKER_DEADLINE_S:.0f}s while waiting for "
                                 f"{waiting_for!r} (seen {self.seen})") from None
        return self._take(line, waiting_for)

    def poll(self, waiting_for: str) -> tuple[str, dict[str, int]] | None:
        try:
            line = self.lines.get_nowait()
        except queue.Empty:
            return None
        return self._take(line, waiting_for)

    def until(self, marker: str) -> dict[str, int]:
        while True:
            name, sizes = self.next(marker)
            if name == marker:
                return sizes

    def drain(self) -> None:
        """Every marker the (dead) child printed, up to its end of output."""
        while (line := self.lines.get(timeout=MARKER_DEADLINE_S)) is not None:
            self.seen.append(line)

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=60)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _grown(writer: Writer, file: Path, at_least: int, paused_at: str) -> str:
    """Wait until ``file`` is ``at_least`` bytes, or the writer paused at ``paused_at`` (then it is as
    far as this write can get before the kill); which of the two came."""
    deadline = time.monotonic() + MARKER_DEADLINE_S
    while True:
        if _size(file) >= at_least:
            return f"{file.name} at {_size(file)} >= {at_least} bytes"
        marker = writer.poll(paused_at)
        if marker is not None and marker[0] == paused_at:
            return f"{paused_at} ({file.name} {_size(file)} < {at_least} bytes)"
        if time.monotonic() > deadline:
            raise AssertionError(f"{file.name} never reached {at_least} bytes within {MARKER_DEADLINE_S:.0f}s")
        time.sleep(POLL_S)  # wait: a polling interval


def _counts(path) -> dict[str, dict[int, int]]:
    """Rows per write number in each table, read by a fresh connection (after WAL replay)."""
    import duckdb

    con = duckdb.connect(str(path))
    try:
        return {t: dict(con.execute(f"SELECT write_no, count(*) FROM {t} GROUP BY 1").fetchall()) for t in TABLES}
    finally:
        con.close()


def test_a_killed_write_many_is_whole_or_absent(tmp_path):
    import duckdb

    from reer_assets.lib import duckdb_store

    path = tmp_path / "lineage.duckdb"
    wal = Path(f"{path}.wal")
    con = duckdb.connect(str(path))
    for table in TABLES:
        con.execute(f"CREATE TABLE {table} (id VARCHAR PRIMARY KEY, write_no INTEGER, payload VARCHAR)")
    con.close()

    # writes 0 and 1, uninterrupted: the sizes the seeded thresholds are fractions of (the WAL a commit
    # leaves, how much the checkpoint at close grows the file), and earlier data to keep intact
    wal_sizes, growths = [], []
    for write_no in (0, 1):
        writer = Writer(path, write_no)
        committed = writer.until("committed")
        closed = writer.until("closed")
        writer.until("DONE")
        assert writer.process.wait(timeout=60) == 0, writer.process.stderr.read()
        wal_sizes.append(committed["wal"])
        growths.append(closed["db"] - committed["db"])
    assert min(wal_sizes) > 0 and min(growths) > 0, (wal_sizes, growths)  # > 0: the seeded sizes must be reachable for the kill moments to exist
    committed_writes = {0, 1}

    rng = random.Random(SEED)
    order = rng.sample(sorted(EVENTS), KILLS)
    wal_at = int(rng.uniform(0.05, 0.95) * min(wal_sizes))
    growth_at = int(rng.uniform(0.05, 0.95) * min(growths))
    outcomes = []
    for write_no, event in zip(range(2, KILLS + 2), order):
        paused_at, expected = EVENTS[event]
        writer = Writer(path, write_no, stop=paused_at)
        try:
            if event == "wal":
                writer.until("committing")
                fired = _grown(writer, wal, wal_at, paused_at)
            elif event == "checkpoint":
                at_commit = writer.until("committed")["db"]
                fired = _grown(writer, path, at_commit + growth_at, paused_at)
            else:
                writer.until(event)
                fired = event
        finally:
            writer.kill()
        assert writer.process.returncode == -signal.SIGKILL, (event, writer.process.returncode, writer.seen)
        counts = _counts(path)  # the database opens after every kill
        got = {t: counts[t].get(write_no, 0) for t in TABLES}
        assert set(got.values()) <= {0, ROWS} and len(set(got.values())) == 1, (write_no, event, got)
        outcome = "whole" if got[TABLES[0]] == ROWS else "absent"
        assert expected in (None, outcome), (write_no, event, fired, outcome, writer.seen)
        if outcome == "whole":
            committed_writes.add(write_no)
        # earlier writes intact, and nothing of a write that did not commit
        for table in TABLES:
            assert counts[table] == {w: ROWS for w in sorted(committed_writes)}, (table, counts[table],
                                                                                  committed_writes)
        # the last marker drained: how far the write had got (past the event when it ran on)
        writer.drain()
        outcomes.append((write_no, event, fired, writer.seen[-1].split()[0], outcome))

    # the project's own reader opens it too
    frame = duckdb_store.query("SELECT count(*) AS n FROM kill_a", path=path)
    assert frame["n"][0] == ROWS * len(committed_writes)
    absent = sum(1 for o in outcomes if o[-1] == "absent")
    print(f"\n{KILLS} kills of a write_many of 2 x {ROWS:,} rows (WAL at commit {wal_sizes} bytes, checkpoint growth "
          f"{growths} bytes): {absent} absent, {KILLS - absent} whole; (write, event, killed at, last marker, "
          f"outcome): {outcomes}")
