"""The answering code of benchmark_scores, ablation_results and `reer eval answer`, with the hf backend.

Real parts: the embedded generator, a peft LoRA adapter made here on it (random A, non-zero B, so it
changes the model), a lineage DuckDB file. The vLLM engine and server: tests/vllm/test_eval_answer.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from reer_assets.workloads import answering

pytestmark = pytest.mark.model
CFG = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "max_tokens": 24, "seed": 0}


def make_lora(base: Path, out: Path, rank: int = 8, scale: float = 0.15) -> Path:
    """A peft LoRA adapter of ``base`` saved in ``out``: A as peft initialises it, B random (peft starts B at
    zero, which would leave the model unchanged), on every attention and MLP projection; the same adapter on
    every call (peft draws A from torch's global generator: seeded here)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(
        r=rank, lora_alpha=2 * rank, lora_dropout=0.0, task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    peft_model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def lora_path(embedded_path, tmp_path_factory) -> Path:
    return make_lora(embedded_path, tmp_path_factory.mktemp("lora") / "adapter")


@pytest.fixture(scope="module")
def items():
    from reer_assets.workloads.evaluation import bundled_items

    return [{**i, "format": "bundled"} for i in bundled_items(1)][:3]


def _spec(path, label="m", checkpoint_id=None):
    return {"label": label, "path": str(path), "model_id": checkpoint_id or str(path), "checkpoint_id": checkpoint_id}


def test_answer_backend_follows_the_generator_role():
    assert answering.answer_backend({"backend": "embedded", "max_in_flight": 4})["backend"] == "hf"
    spec = answering.answer_backend({"backend": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "generator",
                                     "api_key_env": "MY_KEY"}, max_in_flight=16)
    # the generator's model is not the checkpoint's: it is dropped; the key's variable name is kept
    assert spec == {"backend": "openai", "base_url": "http://127.0.0.1:1/v1", "api_key_env": "MY_KEY",
                    "max_in_flight": 16}
    with pytest.raises(ValueError, match="unknown answering backend"):
        answering.answer_backend({"backend": "tgi"})


def test_a_server_is_chosen_per_checkpoint():
    answerer = answering.Answerer({"backend": "openai"}, {"finetuned": "http://127.0.0.1:9/v1#ckpt",
                                                          "ckpt_b": {"base_url": "http://127.0.0.1:8/v1"}})
    assert answerer.server_of({"label": "finetuned"}) == {"base_url": "http://127.0.0.1:9/v1", "model": "ckpt"}
    assert answerer.server_of({"label": "x", "checkpoint_id": "ckpt_b"})["base_url"] == "http://127.0.0.1:8/v1"
    with pytest.raises(ValueError, match="no server for base"):
        answerer.server_of({"label": "base", "path": "/nowhere"})


def test_bundled_file_rejects_bad_lines_with_reasons(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join([
        json.dumps({"id": "a", "prompt": "Write a poem.", "required_length": 50, "domain": "essays"}),
        "{not json",
        json.dumps({"id": "b"}),
        json.dumps({"id": "a", "prompt": "Again."}),
        json.dumps({"id": "c", "prompt": "Write.", "required_length": -3}),
        json.dumps(["a list"]),
        json.dumps({"id": "d", "prompt": "Short story please.", "reference": "Once."}),
    ]) + "\n", encoding="utf-8")
    rows = answering.load_bundled(path)
    reasons = {r["line"]: r["reasons"] for r in rows}
    assert [r["status"] for r in rows] == ["accepted", "rejected", "rejected", "rejected", "rejected", "rejected",
                                           "accepted"]
    assert reasons[2] == ["invalid_json"] and reasons[3] == ["missing_field:prompt"]
    assert reasons[4] == ["duplicate_id:a"] and reasons[5] == ["bad_field:required_length"]
    assert reasons[6] == ["not_an_object"]
    assert rows[0]["required_length"] == 50 and rows[0]["meta"] == {"domain": "essays"}
    assert rows[-1]["reference"] == "Once." and rows[-1]["language"] == "en"


def test_find_checkpoint_by_folder_and_by_lineage_id(tmp_path, lora_path):
    import polars as pl

    from reer_assets.lib.duckdb_store import write_many

    db = tmp_path / "lineage.duckdb"
    write_many({"checkpoints": pl.DataFrame([{"id": "ckpt_test", "base_model": "reer-embedded", "path": str(lora_path),
                                              "dataset_id": None, "train_loss": 1.0, "train_examples": 1,
                                              "config_json": "{}", "run_id": "r"}])}, db, mode="single")
    assert answering.find_checkpoint(str(lora_path)) == (str(lora_path.resolve()), None)
    assert answering.find_checkpoint("ckpt_test", str(db)) == (str(lora_path), "ckpt_test")
    with pytest.raises(FileNotFoundError, match="neither a model folder nor a checkpoint id"):
        answering.find_checkpoint("ckpt_missing", str(db))


def test_how_reer_serve_runs_a_full_and_a_lora_checkpoint(embedded_path, lora_path, tmp_path):
    """`reer serve --checkpoint`: a full checkpoint is served as it is, a LoRA one on its base with the
    adapter beside it (the servers themselves: tests/vllm/test_eval_answer_served.py)."""
    from reer_assets.cli.serve import _checkpoint_server

    full = tmp_path / "full"
    shutil.copytree(embedded_path, full)
    assert _checkpoint_server(str(full)) == (str(full.resolve()), "full", [], {
        "id": None, "path": str(full.resolve()), "adapter": None, "base": None, "tokenizer": str(full.resolve())})
    model, served, flags, found = _checkpoint_server(str(lora_path))
    assert model == str(embedded_path) and served == "adapter" and found["adapter"] == "lora"
    assert flags == ["--enable-lora", "--max-lora-rank", "8", "--lora-modules", f"adapter={lora_path.resolve()}"]


def test_hf_answers_every_item_once_loaded(embedded_path, items):
    answerer = answering.Answerer({"backend": "embedded"}, models=[_spec(embedded_path)])
    with answerer:
        rows, tokens, how = answering.answer_items(_spec(embedded_path), items, CFG, print, answerer)
        loaded = answerer._loaded
        again, _, _ = answering.answer_items(_spec(embedded_path), items, CFG, print, answerer)
        assert answerer._loaded is loaded  # the same checkpoint is not loaded again
    assert len(rows) == len(items) and how["model"] == f"hf:{embedded_path}" and how["in_flight"] == 1
    assert [r["prompt_id"] for r in rows] == [str(i["id"]) for i in items]
    assert [r["output"] for r in rows] == [r["output"] for r in again]  # seeded per item: the same answers
    assert all(r["output"].startswith("<think>") and r["heldout_nll"] > 0 for r in rows)  # > 0: an NLL; its value depends on the answer
    assert all(r["length_score"] is not None for r in rows)  # bundled items ask for a length
    assert tokens["bundled"]["completion"] == how["completion_tokens"] > 0  # equal exactly; > 0 so the check is not vacuous


def test_a_lora_adapter_is_merged_and_changes_the_model(embedded_path, lora_path, items, tmp_path):
    """hf answers a LoRA checkpoint with the adapter merged in memory: its held-out NLL is the one of the same
    adapter merged on disk and loaded as a full checkpoint, and not the base's."""
    merged = answering.load_hf(str(lora_path), str(embedded_path))
    merged.model.save_pretrained(tmp_path / "merged")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (embedded_path / name).exists():
            shutil.copy(embedded_path / name, tmp_path / "merged" / name)
    models = [_spec(embedded_path, "base"), _spec(lora_path, "lora"), _spec(tmp_path / "merged", "merged")]
    with answering.Answerer({"backend": "hf"}, models=models) as answerer:
        base, lora, full = (answering.answer_items(m, items, CFG, print, answerer)[0] for m in models)
    for a, b in zip(lora, full):
        assert a["heldout_nll"] == pytest.approx(b["heldout_nll"], abs=1e-4)
    differences = [abs(a["heldout_nll"] - b["heldout_nll"]) for a, b in zip(lora, base)]
    assert min(differences) > 1e-5 and sum(differences) / len(differences) > 1e-3  # the base's would be equal
    assert [r["output"] for r in lora] != [r["output"] for r in base]  # greedy, same prompts: the adapter speaks


def test_reer_eval_answer_json_with_hf(embedded_path, tmp_path, capfd):
    from reer_assets.cli.main import main

    bench = tmp_path / "longbench.jsonl"
    bench.write_text("\n".join([
        json.dumps({"prompt": "Write a note to a neighbour about a lost cat.", "type": "letter", "length": 80}),
        json.dumps({"prompt": "Describe a rainy market.", "length": "many"}),
        "not json",
        json.dumps({"prompt": "Write a haiku about frost.", "type": "poem", "length": 20}),
    ]) + "\n", encoding="utf-8")
    rc = main(["eval", "answer", "--model", str(embedded_path), "--benchmark", str(bench), "--format",
               "longbench-write", "--backend", "hf", "--max-tokens", "16", "--json"])
    out = capfd.readouterr().out
    assert rc == 0
    doc = json.loads(out)
    assert doc["model"] == f"hf:{embedded_path}" and doc["answering"]["backend"] == "hf"
    assert [r["id"] for r in doc["rows"]] == ["lbw-0001", "lbw-0004"]  # one row per accepted item
    assert {r["line"]: r["reasons"] for r in doc["rejected"]} == {2: ["bad_field:length"], 3: ["invalid_json"]}
    for row in doc["rows"]:
        assert isinstance(row["format_ok"], bool) and row["output_length"] >= 0 and "length_score" in row
        assert row["output"].startswith("<think>")
    assert doc["loaded"]["accepted"] == 2 and doc["loaded"]["rejected"] == 2


def test_reer_eval_answer_openai_needs_a_server(embedded_path, capfd):
    from reer_assets.cli.main import main

    rc = main(["eval", "answer", "--model", str(embedded_path), "--format", "bundled", "--backend", "openai", "--json"])
    assert rc == 2 and "--base-url" in capfd.readouterr().err
