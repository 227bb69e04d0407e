"""Supervised fine-tuning with TRL's SFTTrainer (and PEFT LoRA), as practitioners run it.

The loss is on the assistant turn only. With a chat template that marks the assistant turn
(``{% generation %}`` … ``{% endgeneration %}``) the rows train as they are stored (``messages``,
TRL's ``assistant_only_loss``); with any other template, the embedded model's included, they train
as prompt/completion pairs (``completion_only_loss``). Either way the trainer first proves that the
thinking is inside the trained tokens (a template that drops it is refused by name), applies the
recipe's length policy and reports what it cut, and writes a loadable checkpoint with its card.
The embedded model trains on the CPU through this same code path.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from reer_assets.core.chat_format import TemplateDropsReasoningError, check_template_keeps_reasoning, template_name
from reer_assets.core.training import Recipe, apply_length_policy, mix_rows

Messages = list[dict[str, str]]


def loss_mode(tokenizer) -> str:
    """``assistant_only`` when the template marks assistant turns, else ``completion_only``."""
    from trl.chat_template_utils import has_generation_markers

    template = tokenizer.chat_template or ""
    return "assistant_only" if template and has_generation_markers(template) else "completion_only"


def row_lengths(tokenizer, rows: list[Messages]) -> list[int]:
    """Tokens of each conversation as the trainer will see it (the rendered template, tokenized)."""
    return [len(tokenizer(tokenizer.apply_chat_template(m, tokenize=False), add_special_tokens=False)["input_ids"])
            for m in rows]


def _dataset(rows: list[Messages], mode: str):
    from datasets import Dataset

    if mode == "assistant_only":
        return Dataset.from_list([{"messages": m} for m in rows])
    return Dataset.from_list([{"prompt": m[:-1], "completion": m[-1:]} for m in rows])


def _check_mask_holds_the_thinking(trainer, tokenizer, row: Messages) -> None:
    """The tokens the loss sees in the first example must contain its whole assistant turn."""
    example = trainer.train_dataset[0]
    labels = example.get("labels")
    if labels is None or all(label != -100 for label in labels):
        raise RuntimeError("TRL prepared no loss mask: refusing to train on prompts")
    trained = tokenizer.decode([t for t, label in zip(example["input_ids"], labels) if label != -100],
                               skip_special_tokens=False)
    content = row[-1]["content"]
    thinking = content.split("</think>", 1)[0]
    if thinking not in trained:
        raise TemplateDropsReasoningError(
            f"with the chat template of {template_name(tokenizer)} the loss mask does not cover the thinking "
            "of the assistant turn; refusing to fine-tune on answers alone")


def encode_chat(tokenizer, messages: Messages) -> tuple[list[int], list[int]]:
    """Token ids of a conversation and labels that are -100 outside its last (assistant) turn."""
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise ValueError(f"the chat template of {template_name(tokenizer)} does not render the prompt as a prefix "
                         "of the conversation")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
    return prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids


@torch.inference_mode()
def assistant_nll(model_path: str, rows: list[Messages]) -> float:
    """Mean NLL per assistant token of ``rows`` under a model: what fine-tuning on them lowers."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    total, count = 0.0, 0
    for messages in rows:
        ids, labels = encode_chat(tokenizer, messages)
        n = sum(1 for label in labels[1:] if label != -100)
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()
        total, count = total + loss * n, count + n
    return total / count


class _LogLosses:
    """Sends the trainer's logged losses to ``log`` (stdout stays clean for the CLI's JSON)."""

    def __init__(self, log):
        from transformers import TrainerCallback

        class Callback(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    log(f"step {state.global_step}/{state.max_steps} epoch {logs.get('epoch', 0):.2f} "
                        f"loss {float(logs['loss']):.4f}")

        self.callback = Callback()


def _epoch_losses(history: list[dict[str, Any]]) -> list[float]:
    per_epoch: dict[int, list[float]] = defaultdict(list)
    for entry in history:
        if "loss" in entry and "epoch" in entry:
            per_epoch[max(1, math.ceil(entry["epoch"] - 1e-9))].append(float(entry["loss"]))
    return [sum(v) / len(v) for _, v in sorted(per_epoch.items())]


def train(base_model: str, rows: list[Messages], out_dir: Path, recipe: Recipe, *,
          general_rows: list[Messages] | None = None, mix_ratio: float = 0.0, eval_fraction: float = 0.1,
          log=print) -> dict[str, Any]:
    """Fine-tune ``base_model`` on ``rows`` with ``recipe``; save a checkpoint in ``out_dir``; return the report."""
    from trl import SFTConfig, SFTTrainer

    started = time.perf_counter()
    if not rows:
        raise ValueError("no training rows: nothing to fine-tune on")
    cuda = torch.cuda.is_available()
    devices = max(1, torch.cuda.device_count()) if cuda else 1
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    check_template_keeps_reasoning(tokenizer, rows[0])
    mixed, mixing = mix_rows(rows, general_rows or [], mix_ratio, recipe.seed)
    lengths = row_lengths(tokenizer, mixed)
    length = apply_length_policy(lengths, recipe.max_length, recipe.length_policy)
    if length.rows_over:
        log(f"length policy {recipe.length_policy}: {length.rows_over} of {length.rows_in} rows over "
            f"{length.max_length} tokens ({length.rows_dropped} dropped, {length.tokens_cut} tokens cut)")
    kept = [mixed[i] for i in length.kept]
    if not kept:
        raise ValueError(f"every row is longer than max_length={length.max_length} and the policy drops them")
    n_eval = round(len(kept) * eval_fraction) if len(kept) >= 10 else 0
    eval_rows, train_rows = kept[:n_eval], kept[n_eval:]
    mode = loss_mode(tokenizer)
    accumulation = recipe.gradient_accumulation(devices)
    with tempfile.TemporaryDirectory(prefix="reer-sft-") as scratch:
        args = SFTConfig(
            output_dir=scratch, per_device_train_batch_size=recipe.per_device_batch,
            per_device_eval_batch_size=recipe.per_device_batch, gradient_accumulation_steps=accumulation,
            learning_rate=recipe.learning_rate, num_train_epochs=recipe.epochs, lr_scheduler_type=recipe.lr_scheduler,
            max_steps=recipe.max_steps or -1,  # a step budget overrides the epochs
            warmup_steps=recipe.warmup_ratio, weight_decay=recipe.weight_decay,  # a float below 1 is a ratio
            bf16=cuda and recipe.bf16, gradient_checkpointing=cuda and recipe.gradient_checkpointing,
            max_length=length.max_length, assistant_only_loss=mode == "assistant_only",
            completion_only_loss=mode == "completion_only", seed=recipe.seed, data_seed=recipe.seed,
            logging_steps=1, save_strategy="no", eval_strategy="no", report_to="none", use_cpu=not cuda,
            disable_tqdm=True, dataloader_num_workers=0,
        )
        dtype = torch.bfloat16 if cuda and recipe.bf16 else torch.float32
        model = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype)
        peft_config = None
        if recipe.method == "lora":
            from peft import LoraConfig

            peft_config = LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
                                     target_modules=recipe.lora_target_modules, task_type="CAUSAL_LM")
        trainer = SFTTrainer(model=model, args=args, train_dataset=_dataset(train_rows, mode),
                             eval_dataset=_dataset(eval_rows, mode) if eval_rows else None,
                             processing_class=tokenizer, peft_config=peft_config)
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(_LogLosses(log).callback)
        _check_mask_holds_the_thinking(trainer, tokenizer, train_rows[0])
        # TRL drops rows that truncation left without a trained token; count them, never lose them silently
        length.rows_dropped += len(train_rows) - len(trainer.train_dataset)
        result = trainer.train()
        eval_loss = float(trainer.evaluate()["eval_loss"]) if eval_rows else None
        out_dir.mkdir(parents=True, exist_ok=True)
        trained = trainer.model
        if recipe.method == "lora":
            trained.save_pretrained(out_dir / "adapter")
            trained = trained.merge_and_unload()  # the merged weights load anywhere, PEFT or not
        trained.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        epoch_losses = _epoch_losses(trainer.state.log_history)
    report = {
        "base_model": base_model, "examples": len(train_rows), "eval_examples": len(eval_rows),
        "recipe": recipe.to_dict(), "loss_mode": mode, "devices": devices, "gradient_accumulation": accumulation,
        "dtype": str(dtype).removeprefix("torch."), "length": length.to_dict(), "mixing": mixing,
        "steps": int(trainer.state.global_step), "epoch_losses": epoch_losses,
        "train_loss": epoch_losses[-1] if epoch_losses else float(result.training_loss),
        "eval_loss": eval_loss, "seconds": round(time.perf_counter() - started, 1),
    }
    (out_dir / "training.json").write_text(json.dumps(report, indent=2))
    log(f"trained {report['steps']} steps on {len(train_rows)} rows: train loss {report['train_loss']:.4f}"
        + (f", eval loss {eval_loss:.4f}" if eval_loss is not None else ""))
    return report
