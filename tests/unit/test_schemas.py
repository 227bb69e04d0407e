"""Each table is declared once (core/schemas.py); the DuckDB DDL must hold its lineage columns with matching types."""

import duckdb
import polars as pl
import pytest

from reer_assets.core.schemas import TABLES
from reer_assets.lib.duckdb_store import apply_schema

DUCKDB_TYPES = {pl.String: "VARCHAR", pl.Int32: "INTEGER", pl.Int64: "BIGINT", pl.Float64: "DOUBLE",
                pl.Boolean: "BOOLEAN", pl.List(pl.String): "VARCHAR[]", pl.List(pl.Int64): "BIGINT[]"}


@pytest.fixture(scope="module")
def ddl_columns():
    con = duckdb.connect()
    apply_schema(con)
    rows = con.execute("SELECT table_name, column_name, data_type FROM information_schema.columns").fetchall()
    con.close()
    out: dict[str, dict[str, str]] = {}
    for table, column, kind in rows:
        out.setdefault(table, {})[column] = kind
    return out


@pytest.mark.parametrize("name", sorted(TABLES))
def test_lineage_columns_exist_in_the_ddl_with_the_same_types(name, ddl_columns):
    table = TABLES[name]
    assert name in ddl_columns, f"sql/schema has no table {name}"
    for column in table.lineage:
        assert column in table.columns, f"{name}.{column} is a lineage column but not a Parquet column"
        assert column in ddl_columns[name], f"sql/schema: {name} lacks {column}"
        assert ddl_columns[name][column] == DUCKDB_TYPES[table.columns[column]], (name, column)
    # lineage rows are stamped with their run and partition
    assert {"run_id", "partition"} <= set(ddl_columns[name]), name


def test_ddl_has_no_stage_column_that_no_table_declares(ddl_columns):
    extra = {"run_id", "partition", "recorded_at"}
    for name, table in TABLES.items():
        assert set(ddl_columns[name]) - extra <= set(table.lineage), (name, set(ddl_columns[name]) - extra - set(table.lineage))
