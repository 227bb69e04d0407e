"""Dagster definitions, one folder per stage. Never imports torch or vllm (README: Layout)."""
