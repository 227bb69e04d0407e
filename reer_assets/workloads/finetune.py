"""Workload: fine-tune the base model on sft_dataset and save a loadable checkpoint.

extras: base_model (path), dataset (Parquet with ``messages``), out_dir, config {epochs, learning_rate,
batch_size, max_length, seed}.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from reer_assets.workloads.common import Extras, Log, pipes_main, quiet_libraries


def run(extras: Extras, log: Log) -> dict:
    from reer_assets.backends.sft import finetune

    quiet_libraries()
    rows = pl.read_parquet(extras["dataset"])["messages"].to_list()
    if not rows:
        raise ValueError("sft_dataset has no accepted rows: nothing to fine-tune on")
    config = extras["config"]
    return finetune(extras["base_model"], rows, Path(extras["out_dir"]), log=log, **config)


if __name__ == "__main__":
    pipes_main(run)
