"""Benchmarks that measure the engine's hot paths in one process, so their ratios are like for like."""
