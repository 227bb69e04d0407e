"""Workload: generate answers to the bundled benchmark prompts and score them, per model.

extras: models [{label, path, model_id, checkpoint_id}], prompts (JSONL path or null for the bundled
set), out (Parquet), config {max_tokens, temperature, top_p, top_k, seed}.
Metrics per answer: LongBench-Write length score, format adherence (one closed, clean think block
and an answer), and the model's clipped NLL of the held-out reference (the REER objective, in the
one inference format) given no thinking and given the model's own generated thinking.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from reer_assets.core.chat_format import THINK_OPEN, inference_messages
from reer_assets.core.evaluation.metrics import check_format, length_score
from reer_assets.core.ids import stable_id
from reer_assets.core.language import length_units
from reer_assets.core.objective import build_score_request, score_of
from reer_assets.core.protocols import GenerationRequest, Sampling
from reer_assets.core.refinement import derive_seed
from reer_assets.core.schemas import BENCHMARK_RESULTS
from reer_assets.core.segment import segment
from reer_assets.workloads.common import Extras, Log, pipes_main, quiet_libraries


def run(extras: Extras, log: Log) -> dict:
    from reer_assets import data
    from reer_assets.backends.hf import HFGenerator, HFScorer, LoadedModel

    quiet_libraries()
    cfg = extras["config"]
    prompts = data.benchmark_prompts() if not extras.get("prompts") else list(data.read_jsonl(Path(extras["prompts"])))
    if cfg.get("prompts_per_domain"):  # a quick run: the first N prompts of every domain
        kept, seen = [], Counter()
        for prompt in prompts:
            seen[prompt["domain"]] += 1
            if seen[prompt["domain"]] <= cfg["prompts_per_domain"]:
                kept.append(prompt)
        prompts = kept
    sampling = Sampling(cfg["temperature"], cfg["top_p"], cfg["top_k"], cfg["max_tokens"])
    rows = []
    started = time.perf_counter()
    for spec in extras["models"]:
        loaded = LoadedModel.load(spec["path"])
        generator, scorer = HFGenerator(loaded, spec["model_id"]), HFScorer(loaded, spec["model_id"])
        for prompt in prompts:
            request = GenerationRequest(inference_messages(prompt["prompt"]), prefill=THINK_OPEN, n=1,
                                        sampling=sampling, seed=derive_seed(cfg["seed"], prompt["id"], "bench"))
            output = THINK_OPEN + generator.generate([request])[0][0].text
            fmt = check_format(output)
            produced = length_units(fmt.answer, prompt["language"])
            reference = segment(prompt["reference"])
            # no thinking, then the model's own (its text up to </think>, or all of it when unclosed)
            nll, own = (score_of(r) for r in scorer.score([
                build_score_request(prompt["prompt"], "", reference),
                build_score_request(prompt["prompt"], fmt.thinking.removeprefix("\n"), reference)]))
            rows.append({
                "id": stable_id("bench", spec["model_id"], prompt["id"], cfg), "checkpoint_id": spec.get("checkpoint_id"),
                "model_label": spec["label"], "model": spec["model_id"], "prompt_id": prompt["id"],
                "domain": prompt["domain"], "language": prompt["language"], "required_length": prompt["required_length"],
                "output_length": produced, "length_score": length_score(prompt["required_length"], produced),
                "format_ok": fmt.adherent, "heldout_nll": nll, "heldout_nll_own_thinking": own, "output": output,
            })
        log(f"{spec['label']}: {len(prompts)} prompts done")
    frame = BENCHMARK_RESULTS.frame(rows)
    Path(extras["out"]).parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(extras["out"])
    return {"rows": frame.height, "seconds": round(time.perf_counter() - started, 1)}


if __name__ == "__main__":
    pipes_main(run)
