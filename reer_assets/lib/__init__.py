"""Dagster-side helpers: storage paths, lineage in DuckDB, ids, metadata. No torch here."""
