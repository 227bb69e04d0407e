"""Benchmark evaluation without a model in sight: judge prompts, parsing and records, benchmark adapters.

* :mod:`.judge`: LLM-as-judge in four modes (``rubric`` for WritingBench, ``quality`` for LongBench-Write
  S_q, ``checklist`` for HelloBench, ``pairwise`` for A/B comparisons), versioned prompts, JSON schemas
  for structured output, tolerant parsing with at most three attempts, a content-addressed cache and a
  record (judge model, prompt version, sampling, date, judged text, tokens) with every score.
* :mod:`.benchmarks`: adapters that normalise LongBench-Write, WritingBench and HelloBench files into one
  row shape (bad lines become ``rejected`` rows with reasons) and each benchmark's own aggregation.

The judge talks to a model only through the small :class:`.judge.JudgeBackend` protocol; the HTTP
implementation is :mod:`reer_assets.backends.judge`. Like the rest of ``core``, this package imports
neither torch, transformers, vLLM nor Dagster. See docs/evaluation.md.
"""
