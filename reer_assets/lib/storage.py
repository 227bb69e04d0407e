"""Every path the engine writes, from one place, the registry of each asset's outputs, and the few
helpers every Parquet/JSON read and write of the assets and workloads goes through.

Asset files live under the storage root: ``REER_STORAGE_ROOT``, a local folder or any fsspec URL
(``s3://bucket/prefix``, ``gs://...``, ``memory://...``), default ``$DAGSTER_HOME/reer``. A local root
gives plain :class:`pathlib.Path` objects and the helpers below do exactly what the code did before
(``pl.read_parquet``, ``write_parquet``, a rename for JSON); a remote root gives ``upath.UPath`` objects
(the same Path API over fsspec) and the helpers read and write whole objects (one PUT each, so a
reader sees an object complete or not at all). docs/scale.md, "Storage root".

Layout under the storage root (``<root>``) and the instance folder (``$DAGSTER_HOME``, default ``./dagster_home``):
  <root>/assets/<asset>/<partition>/       Parquet outputs + fingerprint.json per asset partition
  <root>/lineage/<table>/*.parquet         lineage fragments (REER_LINEAGE_MODE=fragments)
  lineage.duckdb                           lineage (REER_LINEAGE_MODE=single, the default; override: REER_LINEAGE_DB)
  reer/work/<asset>/<partition>/<fp>/      workload scratch and per-item checkpoints (always local)
  reer/datasets/sft/<version>/             sft_dataset exports (Parquet, JSONL, card; local)
  reer/checkpoints/<id>/                   fine-tuned checkpoints (local)
  models/embedded/<key>/                   the embedded default model (local)
  inbox/<domain>/                          drop folder watched by the inbox sensor
"""

from __future__ import annotations

import builtins
import io
import json
import os
from pathlib import Path
from typing import IO, Any

from reer_assets import settings
from reer_assets.settings import REPO_ROOT, SQL_DIR, dagster_home, lineage_db  # noqa: F401 (re-exported)

# a local pathlib.Path, a remote upath.UPath, or their text (what the workloads get in their extras)
AnyPath = str | os.PathLike | Path

UNPARTITIONED = "__all__"

# What each asset writes into its folder (asset_dir): output name -> file. Downstream code asks for an
# output by asset and name, never by file name.
OUTPUTS: dict[str, dict[str, str]] = {
    "run_plan": {"plan": "plan.json"},
    "raw_documents": {"documents": "documents.parquet"},
    "synthesized_queries": {"queries": "queries.parquet"},
    "refined_trajectories": {"trajectories": "trajectories.parquet", "search_steps": "search_steps.parquet",
                             "candidates": "candidates.parquet"},
    "filtered_dataset": {"dataset": "dataset.parquet"},
    "sft_dataset": {"current": "current.json"},
    "base_model": {"current": "current.json"},
    "finetuned_checkpoint": {"current": "current.json"},
    "benchmark_scores": {"results": "results.parquet", "judgments": "judgments.parquet", "summary": "summary.json"},
    "ablation_datasets": {"rows": "rows.parquet"},
    "ablation_checkpoints": {"checkpoints": "checkpoints.parquet"},
    "ablation_results": {"results": "results.parquet", "judgments": "judgments.parquet"},
    "experiment_report": {"experiments": "experiments.parquet", "results": "results.parquet", "report": "report.md",
                          "plot": "plot.png"},
}


def output_path(asset: str, name: str, partition: str | None = None) -> Path:
    try:
        return asset_dir(asset, partition) / OUTPUTS[asset][name]
    except KeyError:
        raise KeyError(f"{asset} has no output {name!r}; its outputs: {', '.join(OUTPUTS.get(asset, {}))}") from None


def output_paths(asset: str, partition: str | None = None) -> dict[str, Path]:
    return {name: output_path(asset, name, partition) for name in OUTPUTS[asset]}


def read_output(asset: str, name: str, partition: str | None = None):
    """An upstream asset's Parquet output as a Polars frame, with a clear error when it was never made."""
    path = output_path(asset, name, partition)
    if not exists(path):
        raise FileNotFoundError(f"{asset}[{partition or 'unpartitioned'}] has not been materialised yet ({path})")
    return read_parquet(path)


def read_pointer(asset: str) -> dict[str, Any]:
    """What an unpartitioned asset points at (its ``current`` record: a dataset version, a model path)."""
    path = output_path(asset, "current")
    if not exists(path):
        raise FileNotFoundError(f"{asset} has not been materialised yet")
    return read_json(path)


def write_pointer(asset: str, record: dict[str, Any]) -> Path:
    path = output_path(asset, "current")
    write_json(path, record, indent=2)
    return path


# --- the storage root and path objects ---------------------------------------------------------------

def is_remote(path: AnyPath) -> bool:
    """Whether ``path`` names an fsspec location other than the local file system."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def as_path(path: AnyPath):
    """A path object for ``path``: :class:`Path` when local, ``UPath`` (with REER_STORAGE_OPTIONS) when remote."""
    if not is_remote(path):
        text = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
        return path if isinstance(path, Path) else Path(text.removeprefix("file://"))
    from upath import UPath

    if isinstance(path, UPath):
        return path
    return UPath(str(path), **settings.storage_options())


def local_root() -> Path:
    """``$DAGSTER_HOME/reer``: workload scratch, datasets and checkpoints, whatever the storage root."""
    return dagster_home() / "reer"


def reer_root():
    """The storage root (REER_STORAGE_ROOT, default ``$DAGSTER_HOME/reer``): asset files and lineage fragments."""
    configured = settings.storage_root()
    return as_path(configured) if configured else local_root()


def lineage_dir():
    """Where fragments-mode lineage lives: ``<root>/lineage/<table>/*.parquet``."""
    return reer_root() / "lineage"


# --- reads and writes --------------------------------------------------------------------------------

def _fresh(target) -> Any:
    """A remote path whose file system forgets its cached listings: another process (a workload, another
    machine) may have written since we last listed, and fsspec would answer from the stale listing."""
    target.fs.invalidate_cache()
    return target


def exists(path: AnyPath) -> bool:
    target = as_path(path)
    return target.exists() if not is_remote(target) else _fresh(target).exists()


def makedirs(path: AnyPath) -> None:
    """Create a local folder (and its parents); object stores have no folders, so nothing there."""
    target = as_path(path)
    if not is_remote(target):
        target.mkdir(parents=True, exist_ok=True)


def open(path: AnyPath, mode: str = "rb", **kwargs) -> IO:  # storage.open: shadows the builtin here on purpose
    """A file object for a local path or a remote URL (binary by default)."""
    target = as_path(path)
    if not is_remote(target):
        if any(m in mode for m in "wax"):
            target.parent.mkdir(parents=True, exist_ok=True)
        return builtins.open(target, mode, **kwargs)
    return target.fs.open(target.path, mode, **kwargs)


def read_parquet(path: AnyPath, **kwargs):
    import polars as pl

    target = as_path(path)
    if not is_remote(target):
        return pl.read_parquet(target, **kwargs)
    with _fresh(target).fs.open(target.path, "rb") as handle:
        return pl.read_parquet(handle, **kwargs)


def write_parquet(frame, path: AnyPath) -> Any:
    """Write a Polars frame: locally as before (folder created); remotely as one object in one PUT."""
    target = as_path(path)
    if not is_remote(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(target)
        return target
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    target.fs.pipe_file(target.path, buffer.getvalue())
    return target


def read_text(path: AnyPath) -> str:
    target = as_path(path)
    if not is_remote(target):
        return target.read_text(encoding="utf-8")
    return _fresh(target).fs.cat_file(target.path).decode("utf-8")


def write_text(path: AnyPath, text: str) -> Any:
    """Replace a file's text atomically: a rename locally, one PUT remotely."""
    target = as_path(path)
    if not is_remote(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
        return target
    target.fs.pipe_file(target.path, text.encode("utf-8"))
    return target


def read_json(path: AnyPath) -> Any:
    return json.loads(read_text(path))


def write_json(path: AnyPath, record: Any, indent: int | None = 2) -> Any:
    return write_text(path, json.dumps(record, indent=indent, default=str))


def glob(pattern: AnyPath) -> list:
    """Paths matching a glob (``*`` within one level), sorted; the same kind of path objects as :func:`as_path`."""
    target = as_path(pattern)
    if not is_remote(target):
        import glob as globbing

        return [Path(p) for p in sorted(globbing.glob(str(target)))]
    protocol = str(target).split("://", 1)[0]
    return [as_path(f"{protocol}://{p}") for p in sorted(_fresh(target).fs.glob(target.path))]


def remove(path: AnyPath) -> None:
    """Delete a file; a file that is already gone is not an error."""
    target = as_path(path)
    try:
        if not is_remote(target):
            target.unlink()
        else:
            target.fs.rm_file(target.path)
    except FileNotFoundError:
        pass


def filesystem(path: AnyPath):
    """(fsspec file system, path within it) for ``path``: DuckDB reads remote fragments through it."""
    target = as_path(path)
    if not is_remote(target):
        import fsspec

        return fsspec.filesystem("file"), str(target)
    return target.fs, target.path


def asset_dir(asset: str, partition: str | None = None) -> Path:
    return reer_root() / "assets" / asset / (partition or UNPARTITIONED)


def work_dir(asset: str, partition: str | None, fingerprint: str) -> Path:
    """Workload scratch and per-item checkpoints: local (atomic renames, fsync), whatever the storage root."""
    return local_root() / "work" / asset / (partition or UNPARTITIONED) / fingerprint


def dataset_dir(name: str, version: str) -> Path:
    return local_root() / "datasets" / name / version


def checkpoint_dir(checkpoint_id: str) -> Path:
    return local_root() / "checkpoints" / checkpoint_id


def inbox_dir(domain: str) -> Path:
    return dagster_home() / "inbox" / domain
