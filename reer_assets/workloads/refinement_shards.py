"""The search workload's shards, behind its interface: the plan (one run per shard, each its extras and
output paths) and the merge (the partition's outputs from its shards' rows, a failed shard's items from their
checkpoints or as failed rows). The asset (defs/refinement/assets.py) starts the runs; docs/scale.md, "Shards".
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from reer_assets.core.schemas import TRAJECTORIES
from reer_assets.core.trajectories import explode
from reer_assets.lib import storage
from reer_assets.workloads.refinement import SearchExtras, error_class_of, item_jobs, recover_shard


class ShardFailed(Exception):
    """A shard's workload run failed (its process killed, its Ray job or pod lost, a crash); its items
    that were not checkpointed are recorded as failed rows with the run's error class."""

    def __init__(self, index: int, count: int, mode: str, error: BaseException):
        self.error_class = error_class_of(error)
        super().__init__(f"shard {index + 1} of {count} ({mode} runner): {str(error)[:400]}")


@dataclass
class ShardRun:
    index: int
    count: int
    extras: SearchExtras
    summary: Optional[dict[str, Any]] = None
    error: Optional[BaseException] = None

    @property
    def error_class(self) -> str | None:
        return error_class_of(self.error) if self.error is not None else None


def shard_runs(base: SearchExtras, paths: dict[str, Path], count: int) -> list[ShardRun]:
    """The runs of a partition: one shard writes the registered outputs itself; N shards each write
    theirs under ``<work>/shards/<i>-of-<N>/`` (cleared first) and :func:`combine_shards` merges them.
    The work folder, with the per-item checkpoints, is the same for every shard and shard count."""
    if count == 1:
        return [ShardRun(0, 1, replace(base, outputs={name: str(path) for name, path in paths.items()}))]
    runs = []
    for index in range(count):
        folder = Path(base.work) / "shards" / f"{index}-of-{count}"
        shutil.rmtree(folder, ignore_errors=True)
        runs.append(ShardRun(index, count, replace(base, shard={"index": index, "count": count},
                                                   outputs={name: str(folder / f"{name}.parquet") for name in paths})))
    return runs


def combine_shards(runs: list[ShardRun], paths: dict[str, Path], base: SearchExtras, mode: str,
                   seconds: float) -> dict[str, Any]:
    """Write the partition's outputs from its shards: each finished shard's rows, and for a failed shard
    its checkpointed items plus a failed row for each of the others; in the order one run writes them.
    Returns the combined workload summary (sums, and one entry per shard in ``shard_runs``)."""
    rows: list[dict] = []
    per_shard, totals = [], Counter()
    for shard in runs:
        if shard.error is None:
            mine = storage.read_parquet(shard.extras.outputs["trajectories"]).to_dicts()
            summary = shard.summary or {}
            totals.update({k: int(summary.get(k) or 0) for k in
                           ("made", "reused", "generator_calls", "scorer_calls", "cache_hits")})
            entry = {"shard": shard.index + 1, "of": shard.count, "status": "ok", "items": len(mine),
                     **{k: summary.get(k) for k in ("made", "reused", "failed", "seconds")}}
        else:
            failure = ShardFailed(shard.index, shard.count, mode, shard.error)
            mine, recovered = recover_shard(shard.extras, failure)
            totals["recovered"] += recovered
            entry = {"shard": shard.index + 1, "of": shard.count, "status": "failed", "items": len(mine),
                     "recovered": recovered, "failed": len(mine) - recovered,
                     "error_class": failure.error_class, "error": str(failure)}
        per_shard.append(entry)
        rows.extend(mine)
    order = {traj_id: k for k, _, _, traj_id in item_jobs(replace(base, shard=None))}
    rows.sort(key=lambda row: order.get(row["id"], len(order)))
    frame = TRAJECTORIES.frame(rows)
    steps, candidates = explode(rows)
    for name, table in (("trajectories", frame), ("search_steps", steps), ("candidates", candidates)):
        storage.write_parquet(table, paths[name])
    concurrency = max((int((s.summary or {}).get("item_concurrency") or 0) for s in runs), default=0)
    return {"rows": frame.height, "made": totals["made"], "reused": totals["reused"],
            "failed": int((frame["status"] == "failed").sum()) if frame.height else 0,
            "recovered": totals["recovered"], "item_concurrency": concurrency,
            "generator_calls": totals["generator_calls"], "scorer_calls": totals["scorer_calls"],
            "cache_hits": totals["cache_hits"], "seconds": round(seconds, 2), "shards": len(runs), "runner": mode,
            "shard_runs": per_shard}
