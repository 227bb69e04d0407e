"""Up-to-date checks: an asset partition's fingerprint is a hash of its inputs' fingerprints,
its config and its models. When the stored fingerprint matches, the outputs are reused and
no model is called; the fingerprint is also the Dagster data version."""

from __future__ import annotations

from typing import Any

from reer_assets.core.ids import config_hash
from reer_assets.lib import storage
from reer_assets.lib.storage import AnyPath, asset_dir

SCHEME = "2"  # how a fingerprint is made; each stage's own logic version is its Dagster code_version


def compute(asset: str, code_version: str, *parts: Any) -> str:
    return config_hash({"asset": asset, "scheme": SCHEME, "code_version": code_version, "parts": parts})


def stored(asset: str, partition: str | None) -> dict[str, Any] | None:
    path = asset_dir(asset, partition) / "fingerprint.json"
    if not storage.exists(path):
        return None
    return storage.read_json(path)


def upstream(asset: str, partition: str | None) -> str:
    """The fingerprint of an upstream partition; a clear error if it was never materialised."""
    record = stored(asset, partition)
    if record is None:
        raise FileNotFoundError(f"{asset}[{partition or 'unpartitioned'}] has not been materialised yet")
    return record["fingerprint"]


def is_current(asset: str, partition: str | None, fingerprint: str, outputs: list[AnyPath]) -> bool:
    record = stored(asset, partition)
    return bool(record and record["fingerprint"] == fingerprint and all(storage.exists(p) for p in outputs))


def clear(asset: str, partition: str | None) -> None:
    """Forget the stored fingerprint before outputs are rewritten (stage.run_stage writes it back last)."""
    storage.remove(asset_dir(asset, partition) / "fingerprint.json")


def save(asset: str, partition: str | None, fingerprint: str, summary: dict[str, Any]) -> None:
    record = {"fingerprint": fingerprint, "summary": summary}
    storage.write_json(asset_dir(asset, partition) / "fingerprint.json", record)
