"""Workload of the training stage: build the embedded base model, or fine-tune a base model with TRL.

extras, task ``base_model``: nothing else; builds (or reuses) the embedded default model and reports it.
extras, task ``finetune``: base_model (path), dataset (Parquet with ``messages``), out_dir,
recipe {name, overrides...}, general_data (optional Parquet/JSONL of chat rows to mix in), mix_ratio.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from reer_assets.workloads.common import Extras, Log, pipes_main, quiet_libraries


def read_chat_rows(path: str) -> list[list[dict[str, str]]]:
    """``messages`` rows from a Parquet or JSONL file (the general-purpose data a user mixes in)."""
    frame = pl.read_parquet(path) if path.endswith(".parquet") else pl.read_ndjson(path)
    if "messages" not in frame.columns:
        raise ValueError(f"{path}: mixing data needs a 'messages' column of chat turns (role, content)")
    return frame["messages"].to_list()


def build_base_model(log: Log) -> dict:
    import json

    from reer_assets.backends.embedded import ensure_embedded_model

    path = ensure_embedded_model(log=log)
    report = json.loads((path / "build.json").read_text())
    return {"path": str(path), "key": report["key"], "parameters": report["parameters"],
            "final_loss": report["final_loss"], "train_seconds": report["train_seconds"]}


def run(extras: Extras, log: Log) -> dict:
    if extras.get("task") == "base_model":
        quiet_libraries()
        return build_base_model(log)
    return finetune(extras, log)


def finetune(extras: Extras, log: Log) -> dict:
    from reer_assets.backends.training import train
    from reer_assets.core.training import recipe

    quiet_libraries()
    rows = read_chat_rows(extras["dataset"])
    if not rows:
        raise ValueError("sft_dataset has no accepted rows: nothing to fine-tune on")
    spec = dict(extras["recipe"])
    chosen = recipe(spec.pop("name"), **spec)
    general = read_chat_rows(extras["general_data"]) if extras.get("general_data") else None
    return train(extras["base_model"], rows, Path(extras["out_dir"]), chosen, general_rows=general,
                 mix_ratio=float(extras.get("mix_ratio") or 0.0), log=log)


if __name__ == "__main__":
    pipes_main(run)
