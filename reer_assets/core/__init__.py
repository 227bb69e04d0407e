"""Pure REER logic. Imports neither Dagster nor torch (DESIGN.md §7)."""
