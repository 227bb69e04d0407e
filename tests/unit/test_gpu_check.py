"""scripts/gpu_check.py: its FLOP formulas and card peaks, and a tiny end-to-end run on the CPU (no GPU here).

The numbers it prints on a GPU are only as good as these formulas, so they are checked against the
textbook counts (a full step is 3 x forward = 6 N tokens plus attention; a LoRA step has no weight
gradients for the frozen weights), and the peak against the data sheets' dense bf16 figures.
"""

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"
# reer_assets.backends.vllm_server: the CPU executor setting (stdlib imports only; vLLM is started, not imported)
ALLOWED = ("torch", "transformers", "peft", "tokenizers", "reer_assets.core", "reer_assets.backends.hf",
           "reer_assets.backends.vllm_server",
           "__future__", "argparse", "gc", "importlib.util", "json", "os", "subprocess", "sys", "tempfile", "time",
           "dataclasses")


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["gpu_check"]


# passed on from the suite's environment (tests/conftest.py): one OpenMP thread per worker, vLLM's worker in its
# engine process; nothing else of this environment reaches the script
PASSED_ON = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "REER_VLLM_CPU_EXECUTOR", "VLLM_CPU_KVCACHE_SPACE")


def _run(*extra: str, timeout: int = 300) -> list[dict]:
    env = {"PYTHONPATH": str(SCRIPT.parents[1]), "PATH": "/usr/bin:/bin", "HOME": str(Path.home()),
           **{name: os.environ[name] for name in PASSED_ON if name in os.environ}}
    out = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--repeats", "1", *extra],
                         capture_output=True, text=True, timeout=timeout, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_imports_only_what_a_gpu_machine_without_vllm_has():
    """vLLM is imported only inside the child process that runs the answer benchmark (when it is installed)."""
    tree = ast.parse(SCRIPT.read_text())
    child = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "vllm_child")
    in_child = {id(n) for n in ast.walk(child)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            for name in names:
                if name == "vllm" or name.startswith("vllm."):
                    assert id(node) in in_child, name
                else:
                    assert any(name == a or name.startswith(a + ".") for a in ALLOWED), name


QWEN3_8B_BLOCK_PARAMS = 36 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 12288)  # q, o, k, v, MLP (norms left out)


def test_a_full_step_is_three_forwards_and_six_n_tokens_plus_attention(gpu_check):
    shape, n, tokens = gpu_check.QWEN3_8B, QWEN3_8B_BLOCK_PARAMS, 8192
    forward = gpu_check.forward_flops(shape, n, tokens, tokens / 2, logit_tokens=tokens)
    full = gpu_check.sft_step_flops(shape, n, tokens, "full")
    assert full == pytest.approx(3 * forward)
    with_head = n + shape.hidden * shape.vocab
    attention = gpu_check.attention_flops(shape, tokens, tokens / 2)
    assert full == pytest.approx(6 * with_head * tokens + 3 * attention)
    assert 6 * with_head * tokens / full > 0.8  # at 8k tokens the weights dominate, attention is the rest


def test_a_lora_step_is_between_one_forward_and_a_full_step(gpu_check):
    shape, n, tokens = gpu_check.QWEN3_8B, QWEN3_8B_BLOCK_PARAMS, 8192
    forward = gpu_check.forward_flops(shape, n, tokens, tokens / 2, logit_tokens=tokens)
    adapters = 43_646_976  # r=16 on every linear layer of the 8B shape
    lora = gpu_check.sft_step_flops(shape, n, tokens, "lora", adapters)
    full = gpu_check.sft_step_flops(shape, n, tokens, "full")
    assert forward < lora < full
    assert lora < 4 * forward  # the old count (4 x forward) was more than a full step
    assert 0.6 < lora / full < 0.75  # no weight gradients for the frozen weights: about 0.7 of a full step
    # the adapters are trained: each adds forward + both gradients, 6 FLOPs per parameter and token
    assert lora - gpu_check.sft_step_flops(shape, n, tokens, "lora", 0) == pytest.approx(6 * adapters * tokens)
    with pytest.raises(ValueError):
        gpu_check.sft_step_flops(shape, n, tokens, "qlora")


@pytest.mark.parametrize("name,tflops", [
    ("NVIDIA H200", 989.0),
    ("NVIDIA H100 80GB HBM3", 989.0),  # how the SXM card names itself
    ("NVIDIA H100 PCIe", 756.0),
    ("NVIDIA H100 NVL", 835.0),
    ("NVIDIA A100-SXM4-80GB", 312.0),
    ("NVIDIA GH200 480GB", 989.0),
])
def test_the_peak_is_the_cards_dense_bf16_figure(gpu_check, name, tflops):
    peak = gpu_check.peak_for(name)
    assert peak["peak_tflops"] == tflops and "dense BF16" in peak["peak_source"]
    assert gpu_check.mfu_fields(tflops * 1e12 / 2, 1.0, peak) == {"mfu": 0.5}


def test_an_unknown_card_has_no_mfu_unless_a_peak_is_given(gpu_check):
    unknown = gpu_check.peak_for("Tesla T4")
    assert unknown["peak_tflops"] is None and "--peak-tflops" in unknown["mfu_why"]
    assert gpu_check.mfu_fields(1e12, 1.0, unknown) == {"mfu": None, "mfu_why": unknown["mfu_why"]}
    given = gpu_check.peak_for("Tesla T4", 65.0)
    assert given == {"peak_tflops": 65.0, "peak_source": "--peak-tflops"}
    assert gpu_check.peak_for("NVIDIA H200", 500.0)["peak_tflops"] == 500.0  # the flag wins over the table


@pytest.mark.timeout(120)
def test_an_oom_is_reported_for_that_length_and_the_next_step_still_runs(gpu_check, capsys):
    """The card's limit is injected into the real tiny model: a hook raising CUDA's OOM over 64 tokens."""
    import torch

    shape = gpu_check.TINY
    model = gpu_check.build_model(shape, "cpu", torch.float32)
    params = gpu_check.block_params(model)

    fault = {"error": torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")}

    def card_limit(module, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        if hidden is not None and hidden.shape[1] > 64:
            raise fault["error"]

    hook = model.model.layers[0].register_forward_pre_hook(card_limit, with_kwargs=True)
    for p in model.parameters():
        p.requires_grad_(True)
    for tokens in (128, 64):
        gpu_check.sft_step(model, shape, "cpu", gpu_check.peak_for("cpu"), "full", tokens, params)
    fault["error"] = RuntimeError("mat1 and mat2 shapes cannot be multiplied")
    with pytest.raises(RuntimeError, match="shapes"):  # anything else than OOM is a bug and is raised
        gpu_check.sft_step(model, shape, "cpu", gpu_check.peak_for("cpu"), "full", 128, params)
    hook.remove()
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["tokens"], r["status"]) for r in records] == [(128, "oom"), (64, "ok")]
    assert records[1]["loss"] > 0 and records[1]["mfu"] is None  # > 0: the exact count depends on what the model writes


@pytest.mark.timeout(300)
def test_tiny_run_prints_every_measurement():
    records = _run("--vllm", "off")
    by_name: dict[str, list[dict]] = {}
    for r in records:
        by_name.setdefault(r["measurement"], []).append(r)
    assert set(by_name) == {"setup", "scorer_naive", "scorer_span", "scorer_prefix", "sft_step_lora", "sft_step_full",
                            "vllm_answers", "total"}
    [setup] = by_name["setup"]
    assert setup["device_name"] == "cpu" and setup["peak_tflops"] is None and setup["mfu_why"]
    assert by_name["vllm_answers"] == [{"measurement": "vllm_answers", "status": "skipped", "why": "--vllm off"}]
    assert all(r["status"] == "ok" for name, rs in by_name.items() if name != "vllm_answers" for r in rs)
    assert all(r["mfu"] is None for r in records if "mfu" in r)  # no peak on the CPU: no made-up MFU
    # the prefix mode forwards the shared prefix once: fewer tokens than the span mode for the same step
    forwarded = {name: by_name[name][0]["forwarded_tokens_per_step"] for name in ("scorer_prefix", "scorer_span")}
    assert forwarded["scorer_prefix"] < forwarded["scorer_span"]
    lora = {r["tokens"]: r for r in by_name["sft_step_lora"]}
    full = {r["tokens"]: r for r in by_name["sft_step_full"]}
    assert set(lora) == set(full) == {64, 128}  # every length of the shape, shortest first
    for tokens in (64, 128):
        assert lora[tokens]["trainable_params"] < full[tokens]["trainable_params"]
        assert lora[tokens]["model_flops"] < full[tokens]["model_flops"]


@pytest.mark.timeout(60)
def test_without_cuda_the_vllm_benchmark_is_skipped_with_the_reason(gpu_check):
    import torch

    why = gpu_check.vllm_ready("auto")
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs the benchmark")
    assert why is not None and ("CUDA" in why or "not installed" in why)


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_vllm_answer_benchmark_runs_on_vllm_cpu():
    """The GPU run's vLLM code path, end to end on the CPU build (--vllm on): the tiny model saved, the
    engine started in a child process, a few and all answers in flight, every answer of full length."""
    pytest.importorskip("vllm")
    records = _run("--skip", "scorer", "--skip", "lora", "--skip", "full", "--vllm", "on", timeout=580)
    answers = [r for r in records if r["measurement"] == "vllm_answers"]
    assert [r["status"] for r in answers] == ["ok", "ok"], answers
    assert [r["in_flight"] for r in answers] == [2, 8]
    for r in answers:
        assert r["completion_tokens"] == r["answers"] * r["answer_tokens"] and r["tokens_per_s"] > 0  # > 0: a throughput; its value is the machine's
