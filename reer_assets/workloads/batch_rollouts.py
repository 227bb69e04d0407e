"""Batch mode for the search's initial rollouts (``REER_GENERATOR_BATCH=1``; docs/scale.md, "Batch mode").

Before the search starts, every pending item's initial-rollout request (what :class:`ReerSearch` asks
first, :func:`~reer_assets.core.refinement.initial_rollout_request`) goes out as one batch
(``backends/batch.py``), and each answer is written into that item's call cache under the key the live
generator would use. The search then runs as always: its first generation is a cache hit, its edit steps are
live calls. A killed run resumes like any search item (the call caches), and the batch itself like every
batch (its submission in lineage). A request the batch could not answer is left out of the cache, so the
search makes that call live, and its failure, if it fails again, is recorded on the item as live failures are.

The batch must sample what the live generator would: over a provider both are the same served model; on a
local model the batch runs on vLLM (``run-batch``), so the live generator must be vLLM too
(``REER_GENERATOR_BACKEND=vllm``: same engine, same seeds, the same tokens); with ``embedded`` or ``hf``
the rollouts stay live and the summary says why.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from reer_assets.core.call_cache import CachingGenerator, CallCache
from reer_assets.core.refinement import SearchConfig, SearchItem, initial_rollout_request


def prefill_initial_rollouts(todo: list[tuple], extras: dict, config: SearchConfig, seed: int, spec: Any,
                             log: Callable[[str], None]) -> dict[str, Any]:
    """Answer ``todo``'s initial rollouts ``(position, query row, rollout, trajectory id)`` in one batch, into
    ``<work>/calls/<trajectory id>.jsonl``; returns the batch's counters for the workload summary."""
    from reer_assets.backends.batch import batch_generator
    from reer_assets.backends.config import model_id

    if spec.backend not in ("openai", "vllm"):
        why = (f"the initial rollouts stay live: batch mode on a local model runs vLLM's run-batch, and the "
               f"live {spec.backend} generator would sample differently (set REER_GENERATOR_BACKEND=vllm)")
        log(why)
        return {"skipped": why}
    work = Path(extras["work"])
    keyed = CachingGenerator(SimpleNamespace(model_id=model_id(spec, "generator")), CallCache())
    pending = []
    for _, query_row, rollout, traj_id in todo:
        item = SearchItem(query_row["id"], query_row["query"], query_row["reference"],
                          published_thinking=query_row.get("published_thinking"))
        request, _ = initial_rollout_request(config, seed, item, rollout)
        cache = CallCache(work / "calls" / f"{traj_id}.jsonl")
        key = keyed.key(request)
        if key not in cache.values:  # an item resumed mid-search already has it
            pending.append((cache, key, request))
    if not pending:
        return {"submitted": 0, "cached_already": len(todo)}
    generator = batch_generator(spec, "initial_rollouts", work / "batches", log)
    try:
        outcomes = generator.generate_outcomes([request for _, _, request in pending])
    except Exception as exc:  # the batch could not go out (the server is down...): the search asks live
        if not getattr(exc, "error_class", None):
            raise
        log(f"initial rollouts: the batch failed ({exc.error_class}: {exc}); the search makes these calls live")
        return {**generator.runner.stats.to_dict(), "error": exc.error_class}
    answered = 0
    for (cache, key, _), outcome in zip(pending, outcomes):
        if outcome.ok:
            cache.put_many([(key, [asdict(c) for c in outcome.completions])])
            answered += 1
    log(f"initial rollouts: {answered} of {len(pending)} answered in batch; the search makes the rest live")
    return {**generator.runner.stats.to_dict(), "answered": answered}
