"""Benchmark answers through vLLM with fine-tuned checkpoints, full and LoRA: `reer eval answer` and
`benchmark_scores` on the in-process engine and over `reer serve --checkpoint` servers.

The full checkpoint is a copy of the embedded generator's folder; the LoRA checkpoint a peft adapter made
here on it with a non-zero B (tests/unit/test_eval_answer.py ``make_lora``), so it changes the model: its
greedy answers differ from the base's, and its held-out NLL is the adapter's merged into the base.

Three vLLM engines start in this module (about a minute each on two busy cores), each path once: the full
checkpoint on its own engine through the CLI, the LoRA checkpoint on an engine over its base through
``benchmark_scores`` (base and adapter on one engine), and ``reer serve --checkpoint`` of the LoRA
checkpoint (its base served beside it as ``<name>-base``), which the CLI and ``benchmark_scores`` then
answer through over HTTP. The full checkpoint has the base's weights, so its engine's held-out NLL equals
the served base's on the same prompts. How a full checkpoint is served (no LoRA flags) is checked without
a server in tests/unit/test_eval_answer.py.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess

import dagster as dg
import polars as pl
import pytest

from reer_assets.defs.resources import LineageResource, ModelBackendResource, WorkloadRunner
from tests.unit.test_cli_output import REER, REPO
from tests.unit.test_eval_answer import make_lora
from tests.vllm.test_cli_json import _serve, _stop, clean_env

pytestmark = [pytest.mark.model, pytest.mark.vllm, pytest.mark.slow]
GREEDY = ["--temperature", "0", "--max-tokens", "24", "--seed", "0", "--json"]


@pytest.fixture(scope="module")
def checkpoints(embedded_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    full = root / "full"
    shutil.copytree(embedded_path, full)
    return {"full": full, "lora": make_lora(embedded_path, root / "lora")}


@pytest.fixture(scope="module")
def bench_file(tmp_path_factory):
    """Three bundled prompts (with their references) and two bad lines."""
    from reer_assets import data

    path = tmp_path_factory.mktemp("bench") / "prompts.jsonl"
    good = [json.dumps(p) for p in data.benchmark_prompts() if p["language"] == "en"][:3]
    path.write_text("\n".join([good[0], "{broken", good[1], json.dumps({"id": "x"}), good[2]]) + "\n", encoding="utf-8")
    return path


def answer(model, bench_file, *args: str) -> dict:
    out = subprocess.run([*REER, "eval", "answer", "--model", str(model), "--benchmark", str(bench_file), "--format",
                          "bundled", *args, *GREEDY], capture_output=True, text=True, cwd=REPO, env=clean_env({}),
                         timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout)


def check_rows(doc: dict) -> None:
    assert [r["line"] for r in doc["rows"]] == [1, 3, 5]  # one row per accepted item, in file order
    assert {r["line"]: r["reasons"] for r in doc["rejected"]} == {2: ["invalid_json"], 4: ["missing_field:prompt"]}
    for row in doc["rows"]:
        assert isinstance(row["format_ok"], bool) and row["output_length"] >= 0 and row["length_score"] is not None
        assert row["heldout_nll"] > 0  # > 0: an NLL; its value depends on the answer


def assert_changed(differences: list[float]) -> None:
    """The adapter changes every item's held-out NLL (same weights give the same NLL to ~1e-6; a random
    adapter can move one item little), and clearly on average."""
    assert all(abs(d) > 1e-5 for d in differences) and sum(abs(d) for d in differences) / len(differences) > 1e-3


@pytest.fixture(scope="module")
def full_on_engine(checkpoints, bench_file):
    """`reer eval answer --backend vllm` of the full checkpoint: an engine of its own (one start)."""
    return answer(checkpoints["full"], bench_file, "--backend", "vllm", "--max-in-flight", "2")


@pytest.mark.timeout(900)  # an engine starts in a subprocess, about a minute on two busy cores
def test_eval_answer_on_the_engine_full_checkpoint(full_on_engine, checkpoints):
    full = full_on_engine
    check_rows(full)
    assert full["model"] == f"vllm:{checkpoints['full']}" and full["answering"]["adapter"] is None
    assert full["answering"]["engine"] == str(checkpoints["full"]) and full["answering"]["in_flight"] == 2


@pytest.fixture(scope="module")
def lora_server(checkpoints, tmp_path_factory):
    """`reer serve --checkpoint` of the LoRA checkpoint: its base with --enable-lora, the adapter beside it."""
    process, printed = _serve(["--checkpoint", str(checkpoints["lora"]), "--json"],
                              tmp_path_factory.mktemp("serve") / "lora.log")
    try:
        yield json.loads(printed)
    finally:
        _stop(process, signal.SIGTERM)


@pytest.fixture(scope="module")
def over_http(lora_server, checkpoints, bench_file):
    """The adapter and its base answered over HTTP, the same prompts, seed and greedy decoding. Over HTTP
    the held-out NLL is scored locally (transformers) on the checkpoint folder given: the base's answers
    are asked for with the full checkpoint's folder (the base's weights)."""
    url = lora_server["base_url"]
    return {"tuned": answer(checkpoints["lora"], bench_file, "--base-url", url, "--served-model", "lora",
                            "--max-in-flight", "3"),
            "base": answer(checkpoints["full"], bench_file, "--base-url", url, "--served-model", "lora-base")}


@pytest.mark.timeout(900)
def test_serve_checkpoint_and_answer_over_http(lora_server, over_http, checkpoints, embedded_path):
    lora, tuned, base = lora_server, over_http["tuned"], over_http["base"]
    assert lora["checkpoint"] == {"id": None, "path": str(checkpoints["lora"]), "adapter": "lora",
                                  "base": str(embedded_path), "tokenizer": str(embedded_path)}
    assert lora["model"] == str(embedded_path) and lora["served_model"] == "lora"
    assert lora["base_url"].startswith("http://127.0.0.1:")
    for doc in (tuned, base):
        check_rows(doc)
    assert tuned["model"] == "openai:lora" and base["model"] == "openai:lora-base"
    assert tuned["answering"]["backend"] == "openai" and tuned["answering"]["in_flight"] == 3
    # the adapter really changes the model: not the base's answers, nor its held-out NLL (the adapter merged)
    assert [r["output"] for r in tuned["rows"]] != [r["output"] for r in base["rows"]]
    assert_changed([a["heldout_nll"] - b["heldout_nll"] for a, b in zip(tuned["rows"], base["rows"])])


@pytest.mark.timeout(900)
def test_the_full_checkpoint_on_its_engine_scores_as_the_served_base(full_on_engine, over_http):
    """Same weights scored two ways: the full checkpoint's own vLLM engine (prompt log-probs), and
    transformers on the same folder beside the server's answers."""
    engine, served = full_on_engine["rows"], over_http["base"]["rows"]
    assert [r["line"] for r in engine] == [r["line"] for r in served]
    assert all(abs(a["heldout_nll"] - b["heldout_nll"]) < 1e-3 for a, b in zip(engine, served))


@pytest.fixture(scope="module")
def materialize(tmp_path_factory, embedded_path):
    """benchmark_scores alone, against pointers written here (base: the embedded model)."""
    from reer_assets.definitions import defs
    from reer_assets.lib import storage

    root = tmp_path_factory.mktemp("bench_assets")
    patch = pytest.MonkeyPatch()
    patch.setenv("DAGSTER_HOME", str(root / "home"))
    patch.setenv("REER_PROFILE", "test")
    patch.delenv("REER_LINEAGE_DB", raising=False)
    resources = {"generator": ModelBackendResource(role="generator"), "judge": ModelBackendResource(role="judge",
                                                                                                    configured=False),
                 "lineage": LineageResource(db_path=str(root / "lineage.duckdb")), "runner": WorkloadRunner(mode="in_process")}
    storage.write_pointer("base_model", {"path": str(embedded_path), "model_id": "reer-embedded", "source": "embedded"})
    instance = dg.DagsterInstance.ephemeral()

    def run(tuned, config: dict) -> tuple[dict, pl.DataFrame]:
        storage.write_pointer("finetuned_checkpoint", {"checkpoint_id": f"ckpt_{tuned.name}", "path": str(tuned)})
        result = dg.materialize([defs.get_assets_def("benchmark_scores")], resources=resources, instance=instance,
                                run_config={"ops": {"benchmark_scores": {"config": {
                                    "max_tokens": 24, "prompts_per_domain": 1, "temperature": 0.0, **config}}}})
        assert result.success
        out = root / "home/reer/assets/benchmark_scores/__all__"
        return json.loads((out / "summary.json").read_text()), pl.read_parquet(out / "results.parquet")

    yield run
    patch.undo()


def check_results(summary: dict, results: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    per_model = results.group_by("model_label").len().sort("model_label")
    assert per_model.rows() == [("base", 6), ("finetuned", 6)]  # one prompt per bundled domain, each model
    base = results.filter(pl.col("model_label") == "base").sort("prompt_id")
    tuned = results.filter(pl.col("model_label") == "finetuned").sort("prompt_id")
    assert base["heldout_nll"].null_count() == 0 and tuned["heldout_nll"].null_count() == 0
    return base, tuned


@pytest.mark.timeout(900)
def test_benchmark_scores_on_the_engine(materialize, checkpoints, embedded_path):
    summary, results = materialize(checkpoints["lora"], {"backend": "vllm", "max_in_flight": 4})
    base, tuned = check_results(summary, results)
    how = summary["answering"]
    assert how["base"]["model"] == f"vllm:{embedded_path}" and how["base"]["adapter"] is None
    assert how["finetuned"]["model"] == f"vllm:{checkpoints['lora']}" and how["finetuned"]["adapter"] == "lora"
    assert how["base"]["engine"] == how["finetuned"]["engine"] == str(embedded_path)  # one engine for both
    assert how["finetuned"]["in_flight"] == 4
    assert base["output"].to_list() != tuned["output"].to_list()
    assert_changed((base["heldout_nll"] - tuned["heldout_nll"]).to_list())


@pytest.mark.timeout(900)
def test_benchmark_scores_over_servers(materialize, lora_server, checkpoints):
    url = lora_server["base_url"]
    summary, results = materialize(checkpoints["lora"], {"backend": "openai", "servers": {
        "base": f"{url}#lora-base", "finetuned": f"{url}#lora"}})
    base, tuned = check_results(summary, results)
    assert summary["answering"]["base"]["model"] == "openai:lora-base"
    assert summary["answering"]["finetuned"]["model"] == "openai:lora"
    assert base["output"].to_list() != tuned["output"].to_list()

    # a server named by checkpoint id, without a model: the server's first model (here the base)
    summary, results = materialize(checkpoints["full"], {"backend": "openai", "servers": {
        "base": f"{url}#lora-base", f"ckpt_{checkpoints['full'].name}": url}})
    base, tuned = check_results(summary, results)
    assert summary["answering"]["finetuned"]["model"] == "openai:lora-base"
    assert ((base["heldout_nll"] - tuned["heldout_nll"]).abs() < 1e-3).all()  # the same weights
