"""The lineage database: one DuckDB file, schema from ``sql/schema``, short bulk writes.

DuckDB admits one read-write process at a time, so every write opens, writes a whole
Polars frame in one transaction and closes, retrying with backoff while another process
holds the lock. Model workloads never open it.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from pathlib import Path
from typing import Iterator

import duckdb
import polars as pl

from reer_assets.lib.storage import SQL_DIR, lineage_db

log = logging.getLogger(__name__)


class LineageLockTimeout(RuntimeError):
    pass


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text or "conflict" in text or "could not set lock" in text


@contextlib.contextmanager
def connect(path: Path | None = None, read_only: bool = False, timeout_s: float = 120.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the lineage DB (creating the schema), retrying with jittered backoff on lock conflicts."""
    path = Path(path or lineage_db())
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    deadline, delay, waits = started + timeout_s, 0.05, 0
    while True:
        try:
            if read_only and not path.exists():
                read_only = False  # nothing to read yet: create it
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.Error as exc:
            if not _is_lock_error(exc) or time.monotonic() > deadline:
                if _is_lock_error(exc):
                    raise LineageLockTimeout(f"lineage DB {path} stayed locked for {timeout_s}s") from exc
                raise
            if not waits:
                log.warning("lineage DB %s is locked by another process; retrying for up to %.0fs", path, timeout_s)
            waits += 1
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 2.0)
    if waits:
        log.warning("lineage DB %s opened after %d retries (%.1fs)", path, waits, time.monotonic() - started)
    try:
        if not read_only:
            apply_schema(con)
        yield con
    finally:
        con.close()


def apply_schema(con: duckdb.DuckDBPyConnection) -> None:
    for script in sorted((SQL_DIR / "schema").glob("*.sql")):
        con.execute(script.read_text())


def named_query(name: str) -> str:
    return (SQL_DIR / "queries" / f"{name}.sql").read_text()


def report(name: str, path: Path | None = None) -> list[dict]:
    """Every named query of the report ``sql/queries/<name>/``, in file order: name, description, rows.

    The description is the query's leading comment, so the SQL file is the one place that says
    what a section means.
    """
    folder = SQL_DIR / "queries" / name
    if not folder.is_dir():
        known = sorted(p.name for p in (SQL_DIR / "queries").iterdir() if p.is_dir())
        raise ValueError(f"unknown report {name!r}; known: {', '.join(known)}")
    sections = []
    for script in sorted(folder.glob("*.sql")):
        text = script.read_text()
        description = " ".join(line.removeprefix("--").strip() for line in text.splitlines() if line.startswith("--"))
        sections.append({"name": script.stem.split("_", 1)[-1], "description": description,
                         "rows": query(text, path=path).to_dicts()})
    return sections


def write_many(frames: dict[str, pl.DataFrame], path: Path | None = None) -> dict[str, int]:
    """Several tables in one connection and one transaction (all or nothing)."""
    counts = {}
    with connect(path) as con:
        con.execute("BEGIN")
        try:
            for table, frame in frames.items():
                if frame.is_empty():
                    counts[table] = 0
                    continue
                columns = ", ".join(f'"{c}"' for c in frame.columns)
                con.register("incoming", frame.to_arrow())
                con.execute(f"INSERT OR REPLACE INTO {table} ({columns}) SELECT {columns} FROM incoming")
                con.unregister("incoming")
                counts[table] = frame.height
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    return counts


def query(sql: str, params: list | None = None, path: Path | None = None) -> pl.DataFrame:
    """A read-only query as a Polars frame."""
    with connect(path, read_only=True) as con:
        return pl.from_arrow(con.sql(sql, params=params or None).to_arrow_table())
