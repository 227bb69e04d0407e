"""The `dg` CLI (dagster-dg-cli 1.13) in the project root: pyproject.toml's [tool.dg] section points it
at reer_assets.definitions, so `dg check defs` and `dg list defs` work as they would in a scaffolded project."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DG = Path(sys.executable).parent / "dg"


def dg(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "DAGSTER_DISABLE_TELEMETRY": "1"}
    return subprocess.run([str(DG), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_dg_check_defs(tmp_path):
    out = dg(tmp_path, "check", "defs")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "All definitions loaded successfully" in out.stdout + out.stderr


def test_dg_list_defs(tmp_path):
    out = dg(tmp_path, "list", "defs", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    listed = json.loads(out.stdout)
    assets = {a["asset_key"]: a for a in listed["assets"]}
    assert {"raw_documents", "synthesized_queries", "refined_trajectories", "filtered_dataset", "sft_dataset",
            "base_model", "finetuned_checkpoint", "benchmark_scores", "run_plan"} <= set(assets)
    assert assets["refined_trajectories"]["dependency_keys"] == ["synthesized_queries"]
    assert {"domain_pipeline_job", "model_pipeline_job", "ingest_job"} <= {j["name"] for j in listed["jobs"]}
    assert {"inbox_sensor", "dead_run_sensor", "domain_automation"} <= {s["name"] for s in listed["sensors"]}
    assert {"generator", "scorer", "lineage", "runner"} <= {r["name"] for r in listed["resources"]}
    # the plain table too, as a user reads it
    table = dg(tmp_path, "list", "defs")
    assert table.returncode == 0 and "refined_trajectories" in table.stdout, table.stdout + table.stderr
