"""Supervised fine-tuning with transformers: loss on the assistant turn only."""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from reer_assets.backends.hf import pick_device, pick_dtype


def encode_chat(tokenizer, messages: list[dict[str, str]], max_length: int) -> tuple[list[int], list[int]]:
    """Token ids of the whole conversation and labels that are -100 outside the last assistant turn."""
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("the chat template does not render the prompt as a prefix of the conversation")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
    ids = (prompt_ids + answer_ids)[:max_length]
    labels = ([-100] * len(prompt_ids) + answer_ids)[:max_length]
    return ids, labels


def finetune(base_model: str, rows: list[list[dict[str, str]]], out_dir: Path, epochs: int = 2,
             learning_rate: float = 1e-3, batch_size: int = 4, max_length: int = 4096, seed: int = 0,
             log=print) -> dict[str, Any]:
    started = time.perf_counter()
    torch.manual_seed(seed)
    device = pick_device()
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=pick_dtype(device)).to(device)
    encoded = [encode_chat(tokenizer, messages, max_length) for messages in rows]
    encoded = [e for e in encoded if any(label != -100 for label in e[1])]
    if not encoded:
        raise ValueError("no training example has an assistant turn inside max_length")
    steps_per_epoch = math.ceil(len(encoded) / batch_size)
    total = max(1, epochs * steps_per_epoch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1 - s / total))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rng = random.Random(seed)
    epoch_losses = []
    model.train()
    for epoch in range(epochs):
        order = list(range(len(encoded)))
        rng.shuffle(order)
        losses = []
        for start in range(0, len(order), batch_size):
            batch = [encoded[i] for i in order[start : start + batch_size]]
            width = max(len(ids) for ids, _ in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (seq, lab) in enumerate(batch):
                ids[row, : len(seq)] = torch.tensor(seq)
                labels[row, : len(lab)] = torch.tensor(lab)
                mask[row, : len(seq)] = 1
            loss = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
        epoch_losses.append(sum(losses) / len(losses))
        log(f"epoch {epoch + 1}/{epochs}: train loss {epoch_losses[-1]:.4f}")
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    report = {"base_model": base_model, "examples": len(encoded), "epochs": epochs, "steps": total,
              "epoch_losses": epoch_losses, "train_loss": epoch_losses[-1], "seconds": round(time.perf_counter() - started, 1)}
    (out_dir / "training.json").write_text(json.dumps(report, indent=2))
    return report
