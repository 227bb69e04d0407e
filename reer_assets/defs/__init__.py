"""Dagster definitions, one folder per stage. Never imports torch or vllm (DESIGN.md §7)."""
