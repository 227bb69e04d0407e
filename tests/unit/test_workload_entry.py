"""A workload module runs without Dagster when given an extras file (how `accelerate launch` starts one)."""

import json
import subprocess
import sys

import pytest


@pytest.mark.model
def test_training_workload_runs_from_an_extras_file(tmp_path, embedded_path):
    extras = tmp_path / "extras.json"
    extras.write_text(json.dumps({"task": "base_model"}))
    out = subprocess.run([sys.executable, "-m", "reer_assets.workloads.training", str(extras)], capture_output=True,
                         text=True, timeout=300, check=True)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["path"] == str(embedded_path) and summary["parameters"] > 0
