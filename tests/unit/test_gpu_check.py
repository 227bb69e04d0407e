"""scripts/gpu_check.py runs end to end on the CPU with a tiny config, one JSON line per measurement."""

import ast
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"
ALLOWED = ("torch", "transformers", "peft", "tokenizers", "reer_assets.core", "reer_assets.backends.hf",
           "__future__", "argparse", "json", "sys", "time", "dataclasses")


def test_imports_only_what_a_gpu_machine_without_vllm_has():
    tree = ast.parse(SCRIPT.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    for name in names:
        assert any(name == allowed or name.startswith(allowed + ".") for allowed in ALLOWED), name


def test_tiny_run_prints_every_measurement():
    out = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--repeats", "1"],
                         capture_output=True, text=True, timeout=300, check=True,
                         env={"PYTHONPATH": str(SCRIPT.parents[1]), "PATH": "/usr/bin:/bin"})
    records = {r["measurement"]: r for r in map(json.loads, out.stdout.splitlines())}
    assert set(records) == {"setup", "scorer_naive", "scorer_span", "scorer_prefix", "sft_step_lora", "sft_step_full",
                            "total"}
    assert all(r["status"] == "ok" for r in records.values())
    # the prefix mode forwards the shared prefix once: fewer tokens than the span mode for the same step
    assert records["scorer_prefix"]["forwarded_tokens_per_step"] < records["scorer_span"]["forwarded_tokens_per_step"]
    assert records["sft_step_lora"]["trainable_params"] < records["sft_step_full"]["trainable_params"]
