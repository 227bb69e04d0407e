"""A process SIGKILLed in the middle of a lineage write leaves that write whole or absent.

``duckdb_store.write_many`` writes several tables in one DuckDB transaction. Here a child process
writes two large tables (200,000 rows each) in one ``write_many`` and is SIGKILLed at a random
moment of it (seeded), several times against the same database file; after every kill the file
must open, each table must hold all or none of that write's rows (both the same), and every
earlier write must be intact.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.reliability.conftest import REPO

pytestmark = pytest.mark.slow

ROWS = 200_000
KILLS = 8
SEED = 18
TABLES = ("kill_a", "kill_b")

CHILD = r"""
import sys, polars as pl
from reer_assets.lib import duckdb_store
path, write_no, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
frames = {t: pl.DataFrame({"id": [f"{t}-{write_no}-{j}" for j in range(rows)], "write_no": [write_no] * rows,
                            "payload": [f"row {j} of write {write_no} " + "x" * 48 for j in range(rows)]})
          for t in ("kill_a", "kill_b")}
print("READY", flush=True)
duckdb_store.write_many(frames, path=path)
print("DONE", flush=True)
"""


def _write(path, write_no: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(write_no), str(ROWS)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_ready(process: subprocess.Popen) -> float:
    line = process.stdout.readline()
    assert line.strip() == "READY", (line, process.stderr.read() if process.poll() is not None else "")
    return time.monotonic()


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
    con = duckdb.connect(str(path))
    for table in TABLES:
        con.execute(f"CREATE TABLE {table} (id VARCHAR PRIMARY KEY, write_no INTEGER, payload VARCHAR)")
    con.close()

    # writes 0 and 1, uninterrupted: how long one write_many takes once the file has data (the
    # kills are spread over 1.5 times that, so some land after the commit)
    for write_no in (0, 1):
        process = _write(path, write_no)
        ready = _wait_ready(process)
        assert process.stdout.readline().strip() == "DONE", process.stderr.read()
        write_s = time.monotonic() - ready
        process.wait(timeout=60)
    committed = {0, 1}

    rng = random.Random(SEED)
    # spread over the write and past its end; three of them surely mid-write (within its first half)
    delays = [rng.uniform(0.1, 0.5) * write_s for _ in range(3)] + [rng.uniform(0.0, 1.5) * write_s
                                                                     for _ in range(KILLS - 3)]
    rng.shuffle(delays)
    outcomes = []
    t0 = time.monotonic()
    for write_no, delay in zip(range(2, KILLS + 2), delays):
        process = _write(path, write_no)
        _wait_ready(process)
        time.sleep(delay)
        finished_first = process.poll() is not None
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=60)
        counts = _counts(path)  # the database opens after every kill
        got = {t: counts[t].get(write_no, 0) for t in TABLES}
        assert set(got.values()) <= {0, ROWS} and len(set(got.values())) == 1, (write_no, delay, got)
        outcome = "whole" if got[TABLES[0]] == ROWS else "absent"
        if outcome == "whole":
            committed.add(write_no)
        # earlier writes intact, and nothing of a write that did not commit
        for table in TABLES:
            assert counts[table] == {w: ROWS for w in sorted(committed)}, (table, counts[table], committed)
        outcomes.append((write_no, round(delay, 2), outcome, finished_first))

    # the project's own reader opens it too
    frame = duckdb_store.query("SELECT count(*) AS n FROM kill_a", path=path)
    assert frame["n"][0] == ROWS * len(committed)
    absent = sum(1 for o in outcomes if o[2] == "absent")
    print(f"\none write_many of 2 x {ROWS:,} rows takes {write_s:.2f}s; {KILLS} kills in "
          f"{time.monotonic() - t0:.1f}s: {absent} absent, {KILLS - absent} whole; (write, delay s, outcome, "
          f"exited before the kill): {outcomes}")
    assert absent >= 1, "no kill landed before a commit: the test did not test a torn write"
