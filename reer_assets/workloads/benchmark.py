"""Workload: generate answers to the bundled benchmark prompts and score them, per model.

extras: models [{label, path, model_id, checkpoint_id}], prompts (JSONL path or null for the bundled
set), out (Parquet), config {max_tokens, temperature, top_p, top_k, seed}, judge (null or settings).
Metrics per answer: LongBench-Write length score, format adherence (think closed, answer present),
the model's clipped NLL of the held-out reference, and a judge score when a judge is configured.
"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl

from reer_assets.core.bench_metrics import check_format, length_score
from reer_assets.core.ids import stable_id
from reer_assets.core.language import length_units
from reer_assets.core.objective import ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, clipped_nll
from reer_assets.core.prompts import prompts_for
from reer_assets.core.protocols import GenerationRequest, Sampling, ScoreRequest
from reer_assets.core.search import derive_seed
from reer_assets.workloads.common import Extras, Log, pipes_main, quiet_libraries

RESULT_SCHEMA = {
    "id": pl.String, "checkpoint_id": pl.String, "model_label": pl.String, "model": pl.String,
    "prompt_id": pl.String, "domain": pl.String, "language": pl.String, "required_length": pl.Int32,
    "output_length": pl.Int32, "length_score": pl.Float64, "format_ok": pl.Boolean, "heldout_nll": pl.Float64,
    "judge_score": pl.Float64, "judge_status": pl.String, "output": pl.String,
}


def run(extras: Extras, log: Log) -> dict:
    from reer_assets import data
    from reer_assets.backends.hf import HFGenerator, HFScorer, LoadedModel

    quiet_libraries()
    cfg = extras["config"]
    prompts = data.benchmark_prompts() if not extras.get("prompts") else list(data.read_jsonl(Path(extras["prompts"])))
    sampling = Sampling(cfg["temperature"], cfg["top_p"], cfg["top_k"], cfg["max_tokens"])
    rows = []
    started = time.perf_counter()
    for spec in extras["models"]:
        loaded = LoadedModel.load(spec["path"])
        generator, scorer = HFGenerator(loaded, spec["model_id"]), HFScorer(loaded, spec["model_id"])
        for prompt in prompts:
            ps = prompts_for(prompt["prompt"])
            request = GenerationRequest(ps.inference_messages(prompt["prompt"]), prefill=THINK_OPEN, n=1,
                                        sampling=sampling, seed=derive_seed(cfg["seed"], prompt["id"], "bench"))
            output = THINK_OPEN + generator.generate([request])[0][0].text
            fmt = check_format(output)
            produced = length_units(fmt.answer, prompt["language"])
            nll_request = ScoreRequest(ps.inference_messages(prompt["prompt"]), THINK_OPEN + THINK_CLOSE.lstrip("\n") + ANSWER_OPEN,
                                       prompt["reference"])
            nll = clipped_nll(scorer.score([nll_request])[0].token_logprobs)
            rows.append({
                "id": stable_id("bench", spec["model_id"], prompt["id"], cfg), "checkpoint_id": spec.get("checkpoint_id"),
                "model_label": spec["label"], "model": spec["model_id"], "prompt_id": prompt["id"],
                "domain": prompt["domain"], "language": prompt["language"], "required_length": prompt["required_length"],
                "output_length": produced, "length_score": length_score(prompt["required_length"], produced),
                "format_ok": fmt.adherent, "heldout_nll": nll, "judge_score": None,
                "judge_status": "skipped: no judge endpoint configured" if not extras.get("judge") else "pending",
                "output": output,
            })
        log(f"{spec['label']}: {len(prompts)} prompts done")
    frame = pl.DataFrame(rows, schema=RESULT_SCHEMA)
    Path(extras["out"]).parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(extras["out"])
    return {"rows": frame.height, "seconds": round(time.perf_counter() - started, 1)}


if __name__ == "__main__":
    pipes_main(run)
