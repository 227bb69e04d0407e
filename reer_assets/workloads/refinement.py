"""Workload: the REER search for every accepted (query, reference) of a partition.

extras: queries (Parquet of synthesized_queries), outputs {trajectories, search_steps, candidates: Parquet
paths}, work (checkpoints), config {search{SearchConfig fields}, seed, item_concurrency?}, config_hash,
shard? {index, count} (search only the items whose query id hashes to ``index``; docs/scale.md, "Shards").
Each finished item is checkpointed atomically, so a killed run resumes where it stopped;
an item cut short mid-search replays its finished model calls from a per-item call cache;
an item whose model calls fail is recorded as ``failed`` (with the error class) and retried
by the next run, never saved as a success. With HTTP backends several items are searched
at once (``item_concurrency``, default the client's in-flight limit).
"""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from reer_assets.core.call_cache import CachingGenerator, CachingScorer, CallCache
from reer_assets.core.ids import stable_id
from reer_assets.core.refinement import ReerSearch, SearchConfig, SearchItem
from reer_assets.core.schemas import TRAJECTORIES
from reer_assets.core.trace import SearchTrace
from reer_assets.core.trajectories import explode, trajectory_row
from reer_assets.lib import prompt_sets, storage
from reer_assets.workloads.common import Extras, ItemCheckpoints, Log, pipes_main, quiet_libraries


@dataclass(frozen=True)
class SearchExtras:
    """The search workload's extras, typed: the asset builds one and sends :meth:`to_json` across Pipes; the
    workload reads it back with :meth:`from_json` (the JSON layout is the module docstring's)."""

    queries: str
    work: str
    search: SearchConfig
    seed: int
    config_hash: str
    generator_id: str
    scorer_id: str
    item_concurrency: int | None = None
    prompt_set: dict | None = None  # prompt_sets.extras(): the whole prompt set, under its EXTRAS_KEY
    outputs: dict[str, str] | None = None
    shard: dict | None = None  # {index, count}

    def to_json(self) -> Extras:
        out: Extras = {"queries": self.queries, "work": self.work,
                       "config": {"search": self.search.to_dict(), "seed": self.seed,
                                  "item_concurrency": self.item_concurrency},
                       "config_hash": self.config_hash, "generator_id": self.generator_id, "scorer_id": self.scorer_id}
        if self.prompt_set is not None:
            out[prompt_sets.EXTRAS_KEY] = self.prompt_set
        if self.outputs is not None:
            out["outputs"] = dict(self.outputs)
        if self.shard is not None:
            out["shard"] = dict(self.shard)
        return out

    @classmethod
    def from_json(cls, extras: Extras) -> "SearchExtras":
        cfg = extras["config"]
        return cls(extras["queries"], extras["work"], SearchConfig.from_dict(cfg["search"]), cfg["seed"],
                   extras["config_hash"], extras["generator_id"], extras["scorer_id"], cfg.get("item_concurrency"),
                   extras.get(prompt_sets.EXTRAS_KEY), extras.get("outputs"), extras.get("shard"))

    @property
    def models(self) -> tuple[str, str]:
        return self.generator_id, self.scorer_id


def trajectory_id(query_row: dict[str, Any], rollout: int, config_hash: str, models: tuple[str, str]) -> str:
    return stable_id("traj", query_row["id"], rollout, config_hash, *models)


def shard_of(query_id: str, count: int) -> int:
    """The shard of a query: a stable hash of its id (every rollout of a query goes to the same shard)."""
    if count <= 1:
        return 0
    return int.from_bytes(hashlib.sha256(query_id.encode("utf-8")).digest()[:8], "big") % count


def item_jobs(extras: SearchExtras, queries: pl.DataFrame | None = None) -> list[tuple[int, dict, int, str]]:
    """``(position, query row, rollout, trajectory id)`` of every item this run searches: each accepted
    query x rollout, in query order, only those of ``extras.shard`` when it is set. The position is
    the item's place in the whole partition (so shards combine in the order one run would write)."""
    if queries is None:
        queries = storage.read_parquet(extras.queries).filter(pl.col("status") == "accepted")
    shard = extras.shard or {"index": 0, "count": 1}
    return [(k, query_row, rollout, trajectory_id(query_row, rollout, extras.config_hash, extras.models))
            for k, (query_row, rollout) in enumerate(
                (q, r) for q in queries.iter_rows(named=True) for r in range(extras.search.num_rollouts))
            if shard_of(query_row["id"], int(shard["count"])) == int(shard["index"])]


def recover_shard(extras: SearchExtras, error: BaseException) -> tuple[list[dict], int]:
    """The rows of a shard whose run failed (killed, crashed, lost its machine): each of its items that
    was checkpointed, as it was saved, and every other one as a ``failed`` row with the error's class
    (retried by the next run). Returns the rows in item order and how many came from checkpoints."""
    checkpoints = ItemCheckpoints(Path(extras.work) / "items")
    rows, recovered = [], 0
    for _, query_row, rollout, traj_id in item_jobs(extras):
        saved = checkpoints.load(traj_id) if checkpoints.has(traj_id) else None
        if saved is not None and current_checkpoint(saved, query_row):
            rows.append(saved)
            recovered += 1
        else:
            rows.append(failed_row(query_row, traj_id, rollout, error, extras.config_hash))
    return rows, recovered


def current_checkpoint(saved: dict, query_row: dict) -> bool:
    """Whether an item's checkpoint can stand for it: one saved before published thinkings were scored
    (no ``published_score`` key) cannot, for an item that has one; that item is searched again (with seeded
    backends, the same search), now with its published score."""
    return "published_score" in saved or not query_row.get("published_thinking")


def failed_row(query_row: dict, traj_id: str, rollout: int, error: BaseException, config_hash: str) -> dict:
    row = TRAJECTORIES.empty_row()
    row.update({"id": traj_id, "query_id": query_row["id"], "document_id": query_row["document_id"],
                "domain": query_row["domain"], "rollout": rollout, "status": "failed",
                "reject_reason": f"{error_class_of(error)}: {str(error)[:300]}", "query": query_row["query"],
                "reference": query_row["reference"], "config_hash": config_hash,
                "published_thinking": query_row.get("published_thinking")})
    return row


def error_class_of(error: BaseException) -> str:
    """The recorded class of a failure: the backend's own (``http_429``, ``timeout``...) or the type name."""
    return getattr(error, "error_class", None) or type(error).__name__


class ItemSearcher:
    """Searches one (query, rollout) with its own call cache, so a resumed item replays for free.

    The cache file (``work/calls/<trajectory id>.jsonl``) holds every generation and score
    of the item as it is made; it is deleted once the item's checkpoint is written.
    """

    def __init__(self, generator, scorer, config: SearchConfig, seed: int, calls_dir: Path):
        self.generator, self.scorer, self.config, self.seed = generator, scorer, config, seed
        self.calls_dir = calls_dir
        self.model_calls = {"generator": 0, "scorer": 0, "cache_hits": 0}
        self._lock = threading.Lock()

    def run(self, item: SearchItem, rollout: int, traj_id: str) -> SearchTrace:
        cache = CallCache(self.calls_dir / f"{traj_id}.jsonl")
        generator, scorer = CachingGenerator(self.generator, cache), CachingScorer(self.scorer, cache)
        try:
            return ReerSearch(generator, scorer, self.config, seed=self.seed).run(item, rollout)
        finally:
            with self._lock:
                self.model_calls["generator"] += generator.calls
                self.model_calls["scorer"] += scorer.calls
                self.model_calls["cache_hits"] += cache.hits

    def forget(self, traj_id: str) -> None:
        (self.calls_dir / f"{traj_id}.jsonl").unlink(missing_ok=True)


def item_concurrency(configured: int | None, gen_spec, scorer_spec) -> int:
    """Items searched at once: the configured number, else the HTTP in-flight limit when both
    roles are remote (their calls wait on the network), else one (a local model is busy)."""
    if configured:
        return int(configured)
    if gen_spec.backend == scorer_spec.backend == "openai":
        return min(gen_spec.max_in_flight, scorer_spec.max_in_flight)
    return 1


@prompt_sets.applied  # the prompt set of the extras (REER_PROMPTS) is in force while it runs
def run(extras: Extras, log: Log) -> dict:
    from reer_assets.backends.config import BackendSpec, load_generator, load_scorer

    quiet_libraries()
    typed = SearchExtras.from_json(extras)
    search_config = typed.search  # built once, here
    queries = storage.read_parquet(typed.queries).filter(pl.col("status") == "accepted")
    work = Path(typed.work)
    checkpoints = ItemCheckpoints(work / "items")
    gen_spec, scorer_spec = BackendSpec.from_env("generator"), BackendSpec.from_env("scorer")
    jobs = item_jobs(typed, queries)
    if typed.shard:
        log(f"shard {typed.shard['index'] + 1} of {typed.shard['count']}: {len(jobs)} items")
    results: dict[int, dict] = {}
    counts = {"made": 0, "reused": 0, "failed": 0}
    lock = threading.Lock()
    started = time.perf_counter()
    todo = []
    for k, query_row, rollout, traj_id in jobs:
        saved = checkpoints.load(traj_id) if checkpoints.has(traj_id) else None
        if saved is not None and current_checkpoint(saved, query_row):
            results[k] = saved
            counts["reused"] += 1
        else:
            todo.append((k, query_row, rollout, traj_id))
    batch_stats = None
    if todo and gen_spec.batch:  # REER_GENERATOR_BATCH=1: the initial rollouts as one batch, into the call caches
        from reer_assets.workloads.batch_rollouts import prefill_initial_rollouts

        batch_stats = prefill_initial_rollouts(todo, extras, search_config, typed.seed, gen_spec, log)
    searcher, start_error = None, None
    if todo:
        try:
            searcher = ItemSearcher(load_generator(gen_spec), load_scorer(scorer_spec), search_config, typed.seed,
                                    work / "calls")
        except Exception as exc:
            if not getattr(exc, "error_class", None):
                raise  # a configuration error (no prompt log-probs, a missing tokenizer...): the user must fix it
            # the model server failed (5xx, timeouts, connection refused) before any item started: every
            # item is recorded as failed with that error class, so the failure-rate bound applies to it
            start_error = exc
            log(f"model backends failed at start, every pending item fails: {error_class_of(exc)}: {exc}")

    def search_one(job: tuple) -> None:
        k, query_row, rollout, traj_id = job
        t0 = time.perf_counter()
        try:
            if searcher is None:
                raise start_error
            trace = searcher.run(SearchItem(query_row["id"], query_row["query"], query_row["reference"],
                                            published_thinking=query_row.get("published_thinking")), rollout, traj_id)
        except Exception as exc:  # recorded as failed, retried by the next run
            row = failed_row(query_row, traj_id, rollout, exc, typed.config_hash)
            with lock:
                results[k] = row
                counts["failed"] += 1
                log(f"{query_row['document_id']} rollout {rollout}: FAILED {row['reject_reason']}")
            return
        row = trajectory_row(query_row, traj_id, trace, typed.config_hash, time.perf_counter() - t0)
        checkpoints.save(traj_id, row)
        searcher.forget(traj_id)
        with lock:
            results[k] = row
            counts["made"] += 1
            log(f"{query_row['document_id']} rollout {rollout}: {trace.status} "
                f"{trace.initial_score} -> {trace.final_score} in {row['seconds']:.1f}s")

    concurrency = item_concurrency(typed.item_concurrency, gen_spec, scorer_spec)
    if concurrency <= 1:
        for job in todo:
            search_one(job)
    else:
        # a bounded pool: at most `concurrency` items in flight, the rest wait their turn
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="reer-item") as pool:
            list(pool.map(search_one, todo))
    rows = [results[k] for k in sorted(results)]
    frame = TRAJECTORIES.frame(rows)
    steps, candidates = explode(rows)
    for name, table in (("trajectories", frame), ("search_steps", steps), ("candidates", candidates)):
        storage.write_parquet(table, typed.outputs[name])
    calls = searcher.model_calls if searcher else {"generator": 0, "scorer": 0, "cache_hits": 0}
    summary = {"rows": frame.height, **counts, "item_concurrency": concurrency, "generator_calls": calls["generator"],
               "scorer_calls": calls["scorer"], "cache_hits": calls["cache_hits"],
               "seconds": round(time.perf_counter() - started, 2), **({"batch": batch_stats} if batch_stats else {})}
    if searcher is not None:  # per-server counters of HTTP backends (docs/scale.md); nothing for local models
        from reer_assets.backends.openai_compat import http_usage

        summary.update(http_usage(searcher.generator, searcher.scorer))
    return {**summary, "shard": typed.shard} if typed.shard else summary


if __name__ == "__main__":
    pipes_main(run)
