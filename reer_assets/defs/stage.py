"""The skeleton every stage asset shares, written once.

fingerprint (code version + inputs + config + models) → up to date? → remove the stored fingerprint →
produce the outputs (usually a workload) → load the lineage rows → check → save the fingerprint →
metadata with the data version. An asset partition whose fingerprint is unchanged and whose outputs
exist is reused without calling a model.

Outputs and fingerprint change together or not at all: the stored fingerprint is removed before the
outputs are touched and written only after the check passed, so a run that fails its check or is killed
anywhere in between leaves *no* fingerprint, and the next run of any config recomputes. Downstream
stages read upstream fingerprints, so they fail clearly ("not materialised") instead of reading another
config's rows under a stale fingerprint.

Every stage asset declares a Dagster ``code_version`` (shown in the UI, in the asset's details); it is
part of the fingerprint, so bumping it when a stage's logic changes makes the next run recompute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import dagster as dg
import polars as pl

from reer_assets.lib import fingerprints, storage
from reer_assets.lib.lineage import stamp


@dataclass
class StageRun:
    asset: str
    partition: str | None
    fingerprint: str
    reused: bool
    paths: dict[str, Path]
    summary: dict[str, Any] = field(default_factory=dict)

    def read(self, name: str) -> pl.DataFrame:
        return storage.read_parquet(self.paths[name])

    def result(self, rows: int, metadata: Mapping[str, Any]) -> dg.MaterializeResult:
        """The materialisation: row count, reuse, the stage's own metadata, where the files are, the data version."""
        folder = next(iter(self.paths.values())).parent
        return dg.MaterializeResult(
            metadata={"dagster/row_count": rows, "reused": self.reused, **metadata,
                      "path": dg.MetadataValue.path(str(folder))},
            data_version=dg.DataVersion(self.fingerprint),
        )


def partition_of(context: dg.AssetExecutionContext) -> str | None:
    """The asset's partition; None for an unpartitioned asset, also when it runs inside a partitioned run
    (a job that mixes both, such as experiment_job, gives every step the run's partition key)."""
    if not context.has_partition_key or context.assets_def.partitions_def is None:
        return None
    return context.partition_key


def code_version_of(context: dg.AssetExecutionContext) -> str:
    """The asset's declared Dagster code version; a stage without one could never invalidate its reuse."""
    version = context.assets_def.code_versions_by_key.get(context.asset_key)
    if not version:
        raise dg.DagsterInvariantViolationError(
            f"{context.asset_key.to_user_string()} declares no code_version: every stage asset needs one "
            "(it is part of the fingerprint; bump it when the stage's logic changes)")
    return version


def run_stage(
    context: dg.AssetExecutionContext,
    asset: str,
    parts: tuple,
    produce: Callable[[dict[str, Path]], dict[str, Any] | None],
    lineage: Any | None = None,
    tables: Mapping[str, str] | None = None,
    check: Callable[[StageRun], None] | None = None,
    requires: list[Path] | None = None,
) -> StageRun:
    """Run one asset partition through the skeleton.

    ``parts`` are what the fingerprint hashes (upstream fingerprints, config hash, model ids);
    ``produce(paths)`` writes the registered outputs (``lib/storage.OUTPUTS``) and returns a summary;
    ``tables`` maps lineage table -> output name, loaded in one transaction when the outputs are new;
    ``check(run)`` may raise ``dg.Failure`` (after lineage is written, before the fingerprint is saved);
    ``requires`` are files outside the asset folder that must exist for a reuse (a checkpoint folder's).
    """
    partition = partition_of(context)
    fingerprint = fingerprints.compute(asset, code_version_of(context), *parts)
    paths = storage.output_paths(asset, partition)
    reused = fingerprints.is_current(asset, partition, fingerprint, [*paths.values(), *(requires or [])])
    if reused:
        summary = (fingerprints.stored(asset, partition) or {}).get("summary", {})
        context.log.info(f"[{partition or asset}] {asset} is up to date (fingerprint {fingerprint}): reused")
    else:
        fingerprints.clear(asset, partition)  # from here until save(), the folder claims no config
        for path in paths.values():
            storage.makedirs(path.parent)
        summary = produce(paths) or {}
    run = StageRun(asset, partition, fingerprint, reused, paths, summary)
    if not reused and lineage is not None and tables:
        lineage.write({table: stamp(table, run.read(name), context.run.run_id, partition)
                       for table, name in tables.items()})
    if check is not None:
        check(run)
    if not reused:
        fingerprints.save(asset, partition, fingerprint, summary)
    return run


def upstream(asset: str, partition: str | None = None) -> str:
    """The fingerprint of an upstream asset partition (a clear error when it was never materialised)."""
    return fingerprints.upstream(asset, partition)
