"""A prepared GPU check: the REER scorer and one SFT step at real shapes, on a randomly initialised model.

A GPU machine without weights or internet can still say how fast the engine's model code is:
the numbers depend on shapes, not on trained values. The model has Qwen3-8B's shape (bf16);
the scorer is ``backends/hf.py``'s ``HFScorer`` in its three modes on a search step's requests
(prompt plus thinking about 3k tokens, reference about 3k tokens, 2 candidates that share the
prefix up to the edited segment); the SFT steps are one LoRA step and one full fine-tuning step
(gradient checkpointing, AdamW) on one 8k-token sequence. One JSON line per measurement:

    PYTHONPATH=. python scripts/gpu_check.py            # Qwen3-8B shape on cuda
    PYTHONPATH=. python scripts/gpu_check.py --tiny     # a tiny config on the CPU (the test suite runs this)

FLOPs are counted as 2 x parameters (without embeddings) per forwarded token plus the causal
attention term 2 x layers x seq x ctx x heads x head_dim (ctx averaged over the causal triangle);
a training step counts 3x the forward (4x with gradient checkpointing's recompute). Model FLOP
utilisation (mfu) divides the useful FLOPs per second by --peak-tflops (790 for an H100/H200 in
dense bf16).
"""

from __future__ import annotations

import argparse
import json
import sys
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
    sft_tokens: int


QWEN3_8B = Shape(hidden=4096, layers=36, heads=32, kv_heads=8, head_dim=128, intermediate=12288, vocab=151936,
                 prompt_tokens=1800, suffix_tokens=1200, reference_tokens=3000, candidates=2, sft_tokens=8192)
TINY = Shape(hidden=64, layers=2, heads=4, kv_heads=2, head_dim=16, intermediate=128, vocab=512,
             prompt_tokens=48, suffix_tokens=32, reference_tokens=64, candidates=2, sft_tokens=128)


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def build_model(shape: Shape, device: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, Qwen3Config

    config = Qwen3Config(vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                         num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.kv_heads, head_dim=shape.head_dim,
                         max_position_embeddings=max(32768, 2 * shape.sft_tokens), tie_word_embeddings=False,
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


def non_embedding_params(model) -> int:
    embed = model.get_input_embeddings().weight.numel() + model.get_output_embeddings().weight.numel()
    return sum(p.numel() for p in model.parameters()) - embed


def forward_flops(shape: Shape, params: int, tokens: int, context: float) -> float:
    """FLOPs of a forward pass over ``tokens`` positions attending to ``context`` keys on average."""
    return 2 * params * tokens + 4 * shape.layers * tokens * context * shape.heads * shape.head_dim


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


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None


def measure_scorer(model, shape: Shape, device: str, peak_tflops: float, repeats: int) -> None:
    from reer_assets.backends.hf import HFScorer, LoadedModel

    loaded = LoadedModel("random-" + ("qwen3-8b-shape" if shape is QWEN3_8B else "tiny"), pad_only_tokenizer(), model, device)
    params = non_embedding_params(model)
    requests = step_requests(shape, torch.Generator().manual_seed(1))
    seq = len(requests[0][0])
    useful = sum(forward_flops(shape, params, len(ids), len(ids) / 2) for ids, _ in requests)
    for mode in ("naive", "span", "prefix"):
        scorer = HFScorer(loaded, mode=mode, batch_size=shape.candidates)
        reset_peak(device)
        try:
            scorer.score_ids(requests)  # warm-up (kernels, allocator)
            synchronize(device)
            started = time.perf_counter()
            for _ in range(repeats):
                scorer.score_ids(requests)
            synchronize(device)
            seconds = (time.perf_counter() - started) / repeats
        except torch.OutOfMemoryError:
            emit({"measurement": f"scorer_{mode}", "status": "oom", "peak_gib": peak_gib(device)})
            continue
        emit({"measurement": f"scorer_{mode}", "status": "ok", "requests": len(requests), "tokens_per_request": seq,
              "scored_per_request": seq - requests[0][1], "seconds_per_step": round(seconds, 4),
              "tokens_per_s": round(len(requests) * seq / seconds, 1),
              "useful_tflops_per_s": round(useful / seconds / 1e12, 2),
              "mfu": round(useful / seconds / (peak_tflops * 1e12), 4), "peak_gib": peak_gib(device),
              "forwarded_tokens_per_step": scorer.stats.forwarded_tokens // (repeats + 1)})
        del scorer


def sft_step(model, shape: Shape, device: str, peak_tflops: float, method: str) -> None:
    reset_peak(device)
    params = non_embedding_params(model)
    ids = torch.randint(2, shape.vocab, (1, shape.sft_tokens), generator=torch.Generator().manual_seed(2)).to(device)
    try:
        model.train()
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=2e-5 if method == "full" else 1e-4)
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
        seconds = timings[-1]
    except torch.OutOfMemoryError:
        emit({"measurement": f"sft_step_{method}", "status": "oom", "tokens": shape.sft_tokens, "peak_gib": peak_gib(device)})
        return
    finally:
        model.eval()
    # forward + backward (2x) + the recomputed forward of gradient checkpointing
    useful = 4 * forward_flops(shape, params, shape.sft_tokens, shape.sft_tokens / 2)
    emit({"measurement": f"sft_step_{method}", "status": "ok", "tokens": shape.sft_tokens,
          "trainable_params": sum(p.numel() for p in trainable), "seconds": round(seconds, 3),
          "tokens_per_s": round(shape.sft_tokens / seconds, 1), "mfu": round(useful / seconds / (peak_tflops * 1e12), 4),
          "peak_gib": peak_gib(device), "loss": round(loss.item(), 3)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny config (CPU test)")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="the accelerator's dense bf16 peak")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", action="append", default=[], choices=["scorer", "lora", "full"])
    args = parser.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    shape = TINY if args.tiny else QWEN3_8B
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    started = time.perf_counter()
    model = build_model(shape, device, dtype)
    emit({"measurement": "setup", "status": "ok", "device": device,
          "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
          "torch": torch.__version__, "dtype": str(dtype).removeprefix("torch."),
          "params": sum(p.numel() for p in model.parameters()), "shape": shape.__dict__,
          "seconds": round(time.perf_counter() - started, 1)})
    if "scorer" not in args.skip:
        measure_scorer(model, shape, device, args.peak_tflops, args.repeats)
    if "lora" not in args.skip:
        from peft import LoraConfig, get_peft_model

        lora = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
        sft_step(lora, shape, device, args.peak_tflops, "lora")
        model = lora.unload()  # the base weights back, without adapters
    if "full" not in args.skip:
        for p in model.parameters():
            p.requires_grad_(True)
        sft_step(model, shape, device, args.peak_tflops, "full")
    emit({"measurement": "total", "status": "ok", "seconds": round(time.perf_counter() - started, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
