"""base_model and finetuned_checkpoint: the model to fine-tune and the fine-tuned result."""


import json
from typing import Optional

import dagster as dg
import polars as pl

from reer_assets.core.ids import config_hash, stable_id
from reer_assets.core.training import recipe, render_checkpoint_card
from reer_assets.defs.resources import LineageResource, WorkloadRunner
from reer_assets.defs.stage import run_stage
from reer_assets.lib import storage
from reer_assets.lib.run_config import RecipeConfig, RunConfig, SeedConfig

RECIPE_FIELDS = ("epochs", "learning_rate", "per_device_batch", "global_batch", "max_length", "length_policy", "seed")


class BaseModelConfig(RunConfig):
    model: Optional[str] = None  # a local path or an id in the local HF cache; None = the embedded default


def pointer(asset: str) -> dict:
    """An upstream pointer (dataset version, model path), as a Dagster failure when it is missing."""
    try:
        return storage.read_pointer(asset)
    except FileNotFoundError as exc:
        raise dg.Failure(str(exc)) from exc


@dg.asset(code_version="1", group_name="training", pool="gpu", kinds={"pytorch"})
def base_model(context: dg.AssetExecutionContext, config: BaseModelConfig, runner: WorkloadRunner) -> dg.MaterializeResult:
    """The model to fine-tune: the embedded default (built or reused through the ``training``
    workload) or a user-set path/id, recorded as is. Unpartitioned; pointer file at
    ``reer/assets/base_model/__all__/current.json``.
    """
    if config.model:
        record = {"path": config.model, "model_id": config.model, "source": "user"}
    else:
        summary = runner.run(context, "training", {"task": "base_model"}, env={})
        record = {"path": summary["path"], "model_id": f"reer-embedded:{summary['key']}", "source": "embedded",
                  "parameters": summary["parameters"], "final_loss": summary["final_loss"]}
    def record_it(paths):
        storage.write_pointer("base_model", record)
        return record

    run = run_stage(context, "base_model", (record["model_id"], record["path"]), record_it)
    return run.result(1, {k: v for k, v in record.items() if v is not None})


class FinetuneConfig(RecipeConfig, SeedConfig):
    """The fine-tuning recipe (core/training.py: ``paper``, ``lora``, ``embedded``) and overrides; unset fields
    come from the profile's ``finetune`` section."""

    section = "finetune"
    per_device_batch: Optional[int] = None
    global_batch: Optional[int] = None
    max_length: Optional[int] = None
    length_policy: Optional[str] = None  # drop | truncate
    general_data: Optional[str] = None  # Parquet/JSONL of chat rows (``messages``) mixed in
    mix_ratio: float = 0.0  # general rows per REER row (the paper used about 0.85)

    def training(self) -> dict:
        """What the workload gets: the recipe (name + overrides) and the mixing."""
        resolved = self.resolved()
        spec = {"name": resolved["recipe"], **{k: resolved[k] for k in RECIPE_FIELDS if k in resolved}}
        recipe(spec["name"], **{k: v for k, v in spec.items() if k != "name"})  # fails now on a bad setting
        return {"recipe": spec, "general_data": self.general_data, "mix_ratio": self.mix_ratio}


@dg.asset(code_version="1", deps=["base_model", "sft_dataset"], group_name="training", pool="gpu", kinds={"pytorch"})
def finetuned_checkpoint(
    context: dg.AssetExecutionContext, config: FinetuneConfig, lineage: LineageResource, runner: WorkloadRunner
) -> dg.MaterializeResult:
    """``base_model`` fine-tuned with TRL's SFTTrainer on ``sft_dataset`` (loss on the assistant turn
    only; full or LoRA by recipe), saved as a loadable checkpoint with its card (``README.md``) under
    ``reer/checkpoints/<id>/``. Runs out of process (workload ``training``, pool ``gpu``); reports the
    recipe, the train loss per epoch, the eval loss and what the length policy cut. Unpartitioned;
    lineage table ``checkpoints``. Never auto-materialised.
    """
    base = pointer("base_model")
    dataset = pointer("sft_dataset")
    if not dataset["rows"]:
        raise dg.Failure(
            f"sft_dataset {dataset['version']} has no accepted rows, so there is nothing to fine-tune on; "
            "see the reject_reasons of filtered_dataset (or relax its filter config)",
        )
    train_config = config.training()
    checkpoint_id = stable_id("ckpt", base["model_id"], dataset["version"], train_config)
    out_dir = storage.checkpoint_dir(checkpoint_id)

    def finetune(paths):
        runner.run(context, "training", {
            "task": "finetune", "base_model": base["path"], "dataset": str(dataset["path"]) + "/train.parquet",
            "out_dir": str(out_dir), **train_config,
        }, env={})
        report = json.loads((out_dir / "training.json").read_text())
        record = {"checkpoint_id": checkpoint_id, "path": str(out_dir), "base_model": base["model_id"],
                  "dataset": dataset["version"], "train_loss": report["train_loss"], "eval_loss": report["eval_loss"],
                  "recipe": report["recipe"]["name"], "run_id": context.run.run_id}
        (out_dir / "README.md").write_text(render_checkpoint_card(record, report), encoding="utf-8")
        storage.write_pointer("finetuned_checkpoint", record)
        lineage.write({"checkpoints": pl.DataFrame([{
            "id": checkpoint_id, "dataset_id": dataset["version"], "base_model": base["model_id"], "path": str(out_dir),
            "train_loss": report["train_loss"], "train_examples": report["examples"],
            "config_json": json.dumps(train_config), "run_id": context.run.run_id,
        }])})
        return record

    run = run_stage(context, "finetuned_checkpoint", (checkpoint_id,), finetune,
                    requires=[out_dir / "training.json", out_dir / "README.md"])
    report = json.loads((out_dir / "training.json").read_text())
    return run.result(report["examples"], {
        "checkpoint_id": checkpoint_id,
        "recipe": report["recipe"],
        "train_loss": report["train_loss"],
        "eval_loss": report["eval_loss"],
        "epoch_losses": report["epoch_losses"],
        "length_policy": report["length"],
        "mixing": report["mixing"],
        "train_seconds": report["seconds"],
        "card": dg.MetadataValue.md((out_dir / "README.md").read_text(encoding="utf-8")),
        "base_model": base["model_id"],
        "dataset_version": dataset["version"],
        "config_hash": config_hash(train_config),
        "checkpoint_path": dg.MetadataValue.path(str(out_dir)),
    })
