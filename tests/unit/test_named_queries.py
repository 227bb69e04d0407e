"""Every named SQL query binds against the lineage schema (an empty database), so a typo fails here."""

from pathlib import Path

import duckdb
import pytest

from reer_assets.lib.duckdb_store import apply_schema
from reer_assets.settings import SQL_DIR

QUERIES = sorted((SQL_DIR / "queries").rglob("*.sql"))


@pytest.mark.parametrize("path", QUERIES, ids=[str(p.relative_to(SQL_DIR)) for p in QUERIES])
def test_query_runs_on_an_empty_lineage_db(path: Path):
    con = duckdb.connect()
    apply_schema(con)
    sql = path.read_text()
    params = ["x"] * sql.count("?")
    con.execute(sql, params)
    con.close()
