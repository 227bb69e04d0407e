"""Workload: build (or reuse) the embedded default model and report where it is."""

from __future__ import annotations

import json

from reer_assets.workloads.common import Extras, Log, pipes_main, quiet_libraries


def run(extras: Extras, log: Log) -> dict:
    from reer_assets.backends.embedded import ensure_embedded_model

    quiet_libraries()
    path = ensure_embedded_model(log=log)
    report = json.loads((path / "build.json").read_text())
    return {"path": str(path), "key": report["key"], "parameters": report["parameters"],
            "final_loss": report["final_loss"], "train_seconds": report["train_seconds"]}


if __name__ == "__main__":
    pipes_main(run)
