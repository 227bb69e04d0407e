"""Pure REER logic. Imports neither Dagster nor torch (README: Layout)."""
