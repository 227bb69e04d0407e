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
    build = json.loads((embedded_path / "build.json").read_text())
    assert summary["path"] == str(embedded_path) and summary["key"] == build["key"] == embedded_path.name
    # the count it reports is the model's own, counted here from the weights it would load
    from transformers import AutoModelForCausalLM

    weights = AutoModelForCausalLM.from_pretrained(embedded_path)
    assert summary["parameters"] == sum(p.numel() for p in weights.parameters()) == build["parameters"]
