"""What a fine-tuning run is, before any model is loaded: named recipes, the length policy, data mixing.

A recipe is the whole training setting a practitioner would write into a launch script; the
checkpoint card records it. ``paper`` is the REER paper's full fine-tuning setting, ``lora`` the
same data with a LoRA adapter, ``embedded`` the CPU setting the tests and the demo use on the
project's one-million-parameter model (the same code path, smaller numbers).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

LENGTH_POLICIES = ("drop", "truncate")


@dataclass(frozen=True)
class Recipe:
    name: str
    method: str = "full"  # full | lora
    learning_rate: float = 2e-5
    epochs: float = 3
    max_steps: int | None = None  # a step budget: stop after this many optimizer steps (instead of ``epochs``)
    per_device_batch: int = 4
    global_batch: int = 96  # reached by gradient accumulation: global / (per_device * devices)
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    bf16: bool = True  # on CUDA only; the CPU trains in float32
    gradient_checkpointing: bool = True
    max_length: int | None = None  # None: the longest row of the data (nothing is cut)
    length_policy: str = "drop"  # rows over max_length: drop them, or truncate them (right side)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str = "all-linear"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("full", "lora"):
            raise ValueError(f"recipe {self.name!r}: method must be 'full' or 'lora', not {self.method!r}")
        if self.length_policy not in LENGTH_POLICIES:
            raise ValueError(f"recipe {self.name!r}: length_policy must be one of {LENGTH_POLICIES}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"recipe {self.name!r}: max_steps must be at least 1 (or unset), not {self.max_steps}")
        if self.global_batch % self.per_device_batch:
            raise ValueError(f"recipe {self.name!r}: global_batch {self.global_batch} is not a multiple of "
                             f"per_device_batch {self.per_device_batch}")

    def gradient_accumulation(self, devices: int = 1) -> int:
        return max(1, self.global_batch // (self.per_device_batch * max(1, devices)))

    def with_overrides(self, **overrides: Any) -> "Recipe":
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


RECIPES: dict[str, Recipe] = {
    # arXiv 2509.06160: full fine-tuning, lr 2e-5, 3 epochs, global batch 96. The scheduler and warmup
    # are not given there; cosine with 3% warmup is our choice.
    "paper": Recipe("paper"),
    "lora": Recipe("lora", method="lora", learning_rate=1e-4),
    "embedded": Recipe("embedded", learning_rate=1e-3, epochs=2, per_device_batch=4, global_batch=4,
                       lr_scheduler="linear", warmup_ratio=0.0, bf16=False, gradient_checkpointing=False,
                       max_length=4096),
}


def recipe(name: str, **overrides: Any) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}: choose one of {', '.join(RECIPES)}")
    return RECIPES[name].with_overrides(**overrides)


@dataclass
class LengthReport:
    """What the length policy did: never silent."""

    max_length: int
    policy: str
    rows_in: int
    rows_over: int = 0
    rows_dropped: int = 0
    rows_truncated: int = 0
    tokens_cut: int = 0
    kept: list[int] = field(default_factory=list)  # indices of the rows that are trained on

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "kept"}


def apply_length_policy(lengths: Sequence[int], max_length: int | None, policy: str) -> LengthReport:
    """Which rows train, given each row's token count: over-long rows are dropped or truncated, and counted."""
    if policy not in LENGTH_POLICIES:
        raise ValueError(f"length_policy must be one of {LENGTH_POLICIES}, not {policy!r}")
    limit = max_length if max_length is not None else max(lengths, default=0)
    report = LengthReport(max_length=limit, policy=policy, rows_in=len(lengths))
    for i, n in enumerate(lengths):
        if n <= limit:
            report.kept.append(i)
            continue
        report.rows_over += 1
        if policy == "drop":
            report.rows_dropped += 1
        else:
            report.rows_truncated += 1
            report.tokens_cut += n - limit
            report.kept.append(i)
    return report


def mix_rows(reer_rows: list[Any], general_rows: list[Any], ratio: float, seed: int) -> tuple[list[Any], dict]:
    """REER rows plus ``ratio`` general rows per REER row (the paper used about 1 : 0.85), shuffled.

    General rows are sampled without replacement while they last; the report says how many were
    asked for and how many were available.
    """
    if ratio < 0:
        raise ValueError("mixing ratio must be >= 0")
    wanted = round(len(reer_rows) * ratio)
    rng = random.Random(seed)
    picked = rng.sample(general_rows, min(wanted, len(general_rows))) if general_rows and wanted else []
    mixed = list(reer_rows) + picked
    rng.shuffle(mixed)
    return mixed, {"reer_rows": len(reer_rows), "general_rows": len(picked), "general_available": len(general_rows),
                   "ratio_requested": ratio, "ratio_used": round(len(picked) / len(reer_rows), 4) if reer_rows else 0.0}


def render_checkpoint_card(record: dict[str, Any], report: dict[str, Any]) -> str:
    """The ``README.md`` of a checkpoint folder: what it is, how it was made, how to load it."""
    rec = report["recipe"]
    length = report["length"]
    mixing = report["mixing"]
    eval_loss = "n/a (fewer than 10 rows: no held-out split)" if report.get("eval_loss") is None \
        else f"{report['eval_loss']:.4f} on {report['eval_examples']} held-out rows"
    lines = [
        f"# Checkpoint `{record['checkpoint_id']}`",
        "",
        "Fine-tuned by reer-assets on REER data (thinking found by perplexity-guided search, then the answer),",
        "in the one inference format: system, the standard inference prompt, and an assistant turn",
        "`<think>…</think><answer>…</answer>`. Prompt the model with the same format to get the same behaviour.",
        "",
        "| field | value |",
        "|---|---|",
        f"| base model | `{record['base_model']}` |",
        f"| dataset | `{record['dataset']}` ({report['examples']} training rows, {report['eval_examples']} held out) |",
        f"| recipe | `{rec['name']}`: {rec['method']} fine-tuning, lr {rec['learning_rate']}, {rec['epochs']} epochs, "
        f"global batch {rec['global_batch']} ({rec['per_device_batch']} × {report['gradient_accumulation']} accumulated "
        f"× {report['devices']} device(s)), {rec['lr_scheduler']} schedule, warmup {rec['warmup_ratio']} |",
        f"| loss | on the assistant turn only ({report['loss_mode'].replace('_', ' ')}) |",
        f"| precision | {report['dtype']}; gradient checkpointing {'on' if rec['gradient_checkpointing'] else 'off'} |",
        f"| max length | {length['max_length']} tokens, policy `{length['policy']}`: {length['rows_over']} rows over, "
        f"{length['rows_dropped']} dropped, {length['rows_truncated']} truncated, {length['tokens_cut']} tokens cut |",
        f"| mixing | {mixing['general_rows']} general chat rows with {mixing['reer_rows']} REER rows "
        f"(ratio {mixing['ratio_used']}, asked {mixing['ratio_requested']}) |",
        f"| train loss | {report['train_loss']:.4f} (per epoch: {', '.join(f'{x:.4f}' for x in report['epoch_losses'])}) |",
        f"| eval loss | {eval_loss} |",
        f"| steps | {report['steps']} |",
        f"| lineage | checkpoint `{record['checkpoint_id']}`, dataset `{record['dataset']}`, run `{record.get('run_id', '')}` |",
        "",
        "## Load it",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f"model = AutoModelForCausalLM.from_pretrained(\"{record['path']}\")",
        f"tokenizer = AutoTokenizer.from_pretrained(\"{record['path']}\")",
        "```",
        "",
        "or serve it: `reer serve --model <this folder>` (vLLM, OpenAI-compatible)."
        + (" The LoRA adapter alone is in `adapter/` (`peft.PeftModel.from_pretrained(base, \"adapter\")`)."
           if rec["method"] == "lora" else ""),
        "",
        "Trace the dataset rows behind it: `reer lineage sql \"SELECT * FROM checkpoints WHERE id = "
        f"'{record['checkpoint_id']}'\"`.",
    ]
    return "\n".join(lines) + "\n"
