"""The lineage store: one DuckDB file (``single``, the default) or Parquet fragments (``fragments``).

``single`` (REER_LINEAGE_MODE unset or ``single``): one DuckDB file, schema from ``sql/schema``, short
bulk writes. DuckDB admits one read-write process at a time, so every write opens, writes a whole
Polars frame in one transaction and closes, retrying with backoff while another process holds the
lock. Model workloads never open it.

``fragments`` (REER_LINEAGE_MODE=fragments): no writer ever opens a shared database. Each write
appends one Parquet fragment per table under the storage root,
``<root>/lineage/<table>/<run id>-<uuid>.parquet``, written under a temporary name and renamed (one
PUT on an object store), so any number of processes on any number of machines write at once and a
reader sees a fragment whole or not at all. Reads open an in-memory DuckDB whose tables of the same
names are views over the fragments (``read_parquet`` globs), de-duplicated by primary key with the
latest write winning, exactly as ``INSERT OR REPLACE`` does in the file ("latest" by a logical clock,
never a machine's wall clock: :func:`_next_seq`); so ``sql/queries``, the
``row_provenance`` view and ``reer lineage`` work unchanged. :func:`compact` merges a table's
fragments into one file (de-duplicated by id) and deletes the merged fragments; running it again
changes nothing. docs/scale.md, "Lineage at scale".
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import duckdb
import polars as pl

from reer_assets import settings
from reer_assets.lib import storage
from reer_assets.lib.storage import SQL_DIR, lineage_db

log = logging.getLogger(__name__)


class LineageLockTimeout(RuntimeError):
    pass


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text or "conflict" in text or "could not set lock" in text


SEQ_COLUMN = "_fragment_seq"  # in every fragment: its write's logical sequence (see _next_seq); the highest wins
COMPACTED_PREFIX = "compacted-"


def lineage_mode(mode: str | None = None) -> str:
    """The lineage mode: ``mode`` when given, else REER_LINEAGE_MODE (``single`` by default)."""
    if mode is None:
        return settings.lineage_mode()
    if mode not in settings.LINEAGE_MODES:
        raise ValueError(f"unknown lineage mode {mode!r}: choose one of {', '.join(settings.LINEAGE_MODES)}")
    return mode


@contextlib.contextmanager
def connect(path: Path | None = None, read_only: bool = False, timeout_s: float = 120.0, mode: str | None = None,
            root: Any = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the lineage DB (creating the schema), retrying with jittered backoff on lock conflicts.

    In ``fragments`` mode (``mode`` or REER_LINEAGE_MODE) this is an in-memory database whose lineage
    tables are views over the fragments under ``root`` (default ``<storage root>/lineage``); ``path`` is
    not used, and writes go through :func:`write_many`.
    """
    if lineage_mode(mode) == "fragments":
        with fragments_connection(root) as con:
            yield con
        return
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


def report(name: str, path: Path | None = None, mode: str | None = None, root: Any = None) -> list[dict]:
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
                         "rows": query(text, path=path, mode=mode, root=root).to_dicts()})
    return sections


def write_many(frames: dict[str, pl.DataFrame], path: Path | None = None, mode: str | None = None,
               root: Any = None) -> dict[str, int]:
    """Several tables in one connection and one transaction (all or nothing); in ``fragments`` mode one
    fragment per table (see :func:`write_fragments`)."""
    if lineage_mode(mode) == "fragments":
        return write_fragments(frames, root)
    counts = {}
    with connect(path, mode="single") as con:
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


def query(sql: str, params: list | None = None, path: Path | None = None, mode: str | None = None,
          root: Any = None) -> pl.DataFrame:
    """A read-only query as a Polars frame."""
    attempts = 3 if lineage_mode(mode) == "fragments" else 1
    for attempt in range(1, attempts + 1):
        try:
            with connect(path, read_only=True, mode=mode, root=root) as con:
                return pl.from_arrow(con.sql(sql, params=params or None).to_arrow_table())
        except duckdb.IOException:
            # a fragment merged and deleted by a compaction between the glob and the read: look again
            if attempt == attempts:
                raise
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


# --- fragments mode -------------------------------------------------------------------------------

def fragments_root(root: Any = None):
    """Where fragments live: ``root`` when given, else ``<storage root>/lineage``."""
    return storage.as_path(root) if root is not None else storage.lineage_dir()


def _schema_tables(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, Any]]:
    """Each lineage table of the DDL: its columns (in order, with types) and primary key."""
    tables: dict[str, dict[str, Any]] = {}
    for name, column, kind in con.execute(
            "SELECT table_name, column_name, data_type FROM duckdb_columns() WHERE NOT internal AND table_name IN "
            "(SELECT table_name FROM duckdb_tables() WHERE NOT internal) ORDER BY table_name, column_index").fetchall():
        tables.setdefault(name, {"columns": {}, "key": []})["columns"][column] = kind
    for name, key in con.execute("SELECT table_name, constraint_column_names FROM duckdb_constraints() "
                                 "WHERE constraint_type = 'PRIMARY KEY'").fetchall():
        if name in tables:
            tables[name]["key"] = list(key)
    return tables


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _attach_filesystem(con: duckdb.DuckDBPyConnection, root: Any) -> str:
    """Let DuckDB read ``root`` (through fsspec when remote); the root's text as DuckDB should see it."""
    if storage.is_remote(root):
        fs, _ = storage.filesystem(root)
        con.register_filesystem(fs)
    return str(root)


def _latest_rows(source: str, columns: list[str], key: list[str], available: set[str], types: dict[str, str]) -> str:
    """SELECT of the newest row per key from ``source`` (a read_parquet call), the table's columns in order."""
    projected = ", ".join(_quote(c) if c in available else f"CAST(NULL AS {types[c]}) AS {_quote(c)}" for c in columns)
    order = f"{_quote(SEQ_COLUMN)} DESC" if SEQ_COLUMN in available else "1"
    if not key:
        key = [c for c in columns if c in available]
    partition = ", ".join(_quote(c) for c in key)
    return (f"SELECT {projected} FROM (SELECT *, row_number() OVER (PARTITION BY {partition} ORDER BY {order}) "
            f"AS _reer_rank FROM {source}) WHERE _reer_rank = 1")


def _read_source(con: duckdb.DuckDBPyConnection, files: str) -> tuple[str, set[str], dict[str, str]]:
    source = f"read_parquet({files}, union_by_name = true)"
    described = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
    return source, {row[0] for row in described}, {row[0]: row[1] for row in described}


@contextlib.contextmanager
def fragments_connection(root: Any = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB whose lineage tables are de-duplicated views over the fragments under ``root``.

    A table with no fragment yet stays the empty table of the DDL, so every named query binds.
    Folders under ``root`` that are not DDL tables (a test's own table, say) become plain views.
    """
    root = fragments_root(root)
    con = duckdb.connect()
    try:
        apply_schema(con)
        base = _attach_filesystem(con, root)
        tables = _schema_tables(con)
        for folder in storage.glob(root / "*"):
            table = folder.name
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", table) or not storage.glob(folder / "*.parquet"):
                continue
            pattern = _literal(f"{base.rstrip('/')}/{table}/*.parquet")
            source, available, found_types = _read_source(con, pattern)
            if table in tables:
                spec = tables[table]
                select = _latest_rows(source, list(spec["columns"]), spec["key"], available, spec["columns"])
                con.execute(f"DROP TABLE {_quote(table)}")
            else:
                columns = [c for c in found_types if c != SEQ_COLUMN]
                select = _latest_rows(source, columns, ["id"] if "id" in columns else [], available, found_types)
            con.execute(f"CREATE VIEW {_quote(table)} AS {select}")
        yield con
    finally:
        con.close()


def _run_id_of(frames: dict[str, pl.DataFrame]) -> str:
    for frame in frames.values():
        if "run_id" in frame.columns and frame.height:
            value = frame["run_id"].drop_nulls().head(1).to_list()
            if value:
                return re.sub(r"[^A-Za-z0-9_.-]", "_", str(value[0]))[:64]
    return "norun"


def _publish(con: duckdb.DuckDBPyConnection, select: str, target: Any) -> None:
    """COPY ``select`` to Parquet at ``target`` atomically: a temporary name then a rename (local, with
    fsyncs), or one upload of a finished local file (an object store: the object appears whole)."""
    target = storage.as_path(target)
    if not storage.is_remote(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        con.execute(f"COPY ({select}) TO {_literal(str(tmp))} (FORMAT parquet)")
        try:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fd = os.open(target.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="reer-lineage-") as folder:
        local = Path(folder) / target.name
        con.execute(f"COPY ({select}) TO {_literal(str(local))} (FORMAT parquet)")
        fs, remote_path = storage.filesystem(target)
        fs.put_file(str(local), remote_path)


_seq_lock = threading.Lock()
_last_seq = 0  # the highest sequence this process has written: its own writes are ordered whatever it reads


def _highest_seq(con: duckdb.DuckDBPyConnection, folder: Any) -> int:
    """The highest ``_fragment_seq`` among the fragments in ``folder`` (0 when there are none). Retried when a
    compaction deletes a listed fragment meanwhile (its rows are then in the compacted file, listed next time)."""
    for attempt in range(5):
        files = storage.glob(folder / "*.parquet")
        if not files:
            return 0
        listed = "[" + ", ".join(_literal(str(f)) for f in files) + "]"
        try:
            source, available, _ = _read_source(con, listed)
            if SEQ_COLUMN not in available:
                return 0
            value = con.execute(f"SELECT max({_quote(SEQ_COLUMN)}) FROM {source}").fetchall()[0][0]
            return int(value or 0)
        except (duckdb.IOException, duckdb.InvalidInputException, FileNotFoundError):
            if attempt == 4:
                raise
            time.sleep(0.05 * (attempt + 1))  # back-off before listing again (not a timing assumption)
    return 0


def _next_seq(con: duckdb.DuckDBPyConnection, root: Any, tables: list[str]) -> int:
    """The sequence of a new write: one more than every sequence already in these tables' fragments and than
    this process's previous write (a Lamport clock). So a write made after another writer's fragment was
    published wins over it on every machine, whatever their clocks say; two writes that never saw each other
    (published in the same instant) resolve either way, as with any concurrent writers. Fragments written
    before this rule carry their write's time in ns, which only raises the next sequence."""
    global _last_seq
    highest = max((_highest_seq(con, root / table) for table in tables), default=0)
    with _seq_lock:
        _last_seq = max(_last_seq, highest) + 1
        return _last_seq


def write_fragments(frames: dict[str, pl.DataFrame], root: Any = None) -> dict[str, int]:
    """One fragment per non-empty table: ``<root>/<table>/<run id>-<uuid>.parquet``.

    Rows are first loaded into the DDL's table in an in-memory DuckDB (the same types, defaults such
    as ``recorded_at`` and the primary key as the file), then copied out with the write's sequence
    number (:func:`_next_seq`: a logical clock, not the wall clock). Each fragment is atomic; a crash between
    two tables' fragments leaves the earlier ones, which the next run's write of the same ids supersedes (ids
    are content hashes).
    """
    root = fragments_root(root)
    counts: dict[str, int] = {}
    run_id = _run_id_of(frames)
    con = duckdb.connect()
    try:
        apply_schema(con)
        _attach_filesystem(con, root)
        tables = _schema_tables(con)
        seq = _next_seq(con, root, [table for table, frame in frames.items() if not frame.is_empty()])
        for table, frame in frames.items():
            if frame.is_empty():
                counts[table] = 0
                continue
            con.register("incoming", frame.to_arrow())
            if table in tables:
                columns = ", ".join(_quote(c) for c in frame.columns)
                con.execute(f"INSERT OR REPLACE INTO {_quote(table)} ({columns}) SELECT {columns} FROM incoming")
                select = f"SELECT *, CAST({seq} AS BIGINT) AS {_quote(SEQ_COLUMN)} FROM {_quote(table)}"
            else:
                con.execute(f"CREATE TABLE {_quote(table)} AS SELECT * FROM incoming")
                select = f"SELECT *, CAST({seq} AS BIGINT) AS {_quote(SEQ_COLUMN)} FROM {_quote(table)}"
            con.unregister("incoming")
            _publish(con, select, root / table / f"{run_id}-{uuid.uuid4().hex}.parquet")
            counts[table] = frame.height
    finally:
        con.close()
    return counts


def fragment_counts(root: Any = None) -> dict[str, int]:
    """Files per table folder under ``root`` (compacted files included)."""
    root = fragments_root(root)
    return {folder.name: len(storage.glob(folder / "*.parquet")) for folder in storage.glob(root / "*")
            if storage.glob(folder / "*.parquet")}


def compact(root: Any = None) -> dict[str, dict[str, int]]:
    """Merge each table's fragments into one file, de-duplicated by primary key (``id``), newest row kept.

    Only the files listed at the start are merged and then deleted, so fragments written meanwhile
    are kept for the next compaction; the merged file is written (atomically) before any fragment is
    deleted, so a reader at any moment sees every row (twice at most, which the views de-duplicate).
    A table that is already one compacted file is left alone: compacting twice changes nothing.
    Run one compaction at a time (the ``lineage_compaction`` asset is in the ``duckdb`` pool).
    """
    root = fragments_root(root)
    report: dict[str, dict[str, int]] = {}
    con = duckdb.connect()
    try:
        apply_schema(con)
        _attach_filesystem(con, root)
        tables = _schema_tables(con)
        for folder in storage.glob(root / "*"):
            table = folder.name
            files = storage.glob(folder / "*.parquet")
            if not files:
                continue
            if len(files) == 1 and files[0].name.startswith(COMPACTED_PREFIX):
                rows = con.execute(f"SELECT count(*) FROM read_parquet({_literal(str(files[0]))})").fetchone()[0]
                report[table] = {"files_before": 1, "files_merged": 0, "rows": int(rows)}
                continue
            listed = "[" + ", ".join(_literal(str(f)) for f in files) + "]"
            source, available, found_types = _read_source(con, listed)
            if table in tables:
                spec = tables[table]
                columns, key, types = list(spec["columns"]), spec["key"], spec["columns"]
            else:
                columns = [c for c in found_types if c != SEQ_COLUMN]
                key, types = (["id"] if "id" in columns else []), found_types
            latest = _latest_rows(source, [*columns, SEQ_COLUMN] if SEQ_COLUMN in available else columns, key,
                                  available, types)
            target = folder / f"{COMPACTED_PREFIX}{time.time_ns()}-{uuid.uuid4().hex}.parquet"
            _publish(con, latest, target)
            for path in files:
                storage.remove(path)
            rows = con.execute(f"SELECT count(*) FROM read_parquet({_literal(str(target))})").fetchone()[0]
            report[table] = {"files_before": len(files), "files_merged": len(files), "rows": int(rows)}
    finally:
        con.close()
    return report
