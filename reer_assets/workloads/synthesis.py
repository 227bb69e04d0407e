"""Workload: the request behind each accepted document (given, or back-synthesized).

A document's published thinking (the source's own, when it had one) travels with its query, so the
search and the experiments can reach it without going back to the documents.

extras: documents (Parquet of raw_documents), out (Parquet to write), work (checkpoint folder),
config {temperature, top_p, top_k, max_tokens, seed, qc{...}}, config_hash.
"""

from __future__ import annotations

import polars as pl

from reer_assets.core.protocols import Sampling
from reer_assets.core.refinement import derive_seed
from reer_assets.core.schemas import QUERIES
from reer_assets.core.synthesis import QueryQC, query_reasons, synthesize_query
from reer_assets.lib import prompt_sets, storage
from reer_assets.workloads.common import Extras, ItemCheckpoints, Log, pipes_main, quiet_libraries


@prompt_sets.applied  # the prompt set of the extras (REER_PROMPTS) is in force while it runs
def run(extras: Extras, log: Log) -> dict:
    from reer_assets.backends.config import BackendSpec, load_generator
    from reer_assets.core.ids import stable_id

    quiet_libraries()
    cfg = extras["config"]
    qc = QueryQC(**cfg.get("qc", {}))
    docs = storage.read_parquet(extras["documents"]).filter(pl.col("status") == "accepted")
    checkpoints = ItemCheckpoints(extras["work"])
    generator = None
    made = reused = 0
    sampling = Sampling(cfg["temperature"], cfg["top_p"], cfg["top_k"], cfg["max_tokens"])
    spec = BackendSpec.from_env("generator")
    batched, batch_stats = {}, None
    if spec.batch:  # REER_GENERATOR_BATCH=1: every pending request in one batch (backends/batch.py)
        batched, batch_stats = _synthesize_in_batch(spec, docs, checkpoints, sampling, cfg, extras, log)
    for doc in docs.iter_rows(named=True):
        if checkpoints.has(doc["id"]):
            reused += 1
            continue
        raw, model, synthesized, usage = None, None, False, (0, 0)
        query = doc["given_request"]
        if not query:
            if doc["id"] in batched:
                made_query = batched[doc["id"]]
                if made_query is None:
                    continue  # its batch request failed: no checkpoint, raised below, asked again by the next run
            else:
                if generator is None:
                    generator = load_generator(spec)
                made_query = synthesize_query(generator, doc["text"], sampling,
                                              seed=derive_seed(cfg["seed"], doc["id"], "synthesize"))
            query, raw, model, synthesized = made_query.query, made_query.raw_output, made_query.model, True
            usage = (made_query.prompt_tokens, made_query.completion_tokens)
        reasons = query_reasons(query, doc["text"], doc["language"], qc)
        checkpoints.save(doc["id"], {
            "id": stable_id("qry", doc["id"], query, synthesized, model, extras["config_hash"]),
            "document_id": doc["id"], "domain": doc["domain"], "language": doc["language"], "query": query,
            "reference": doc["text"], "synthesized": synthesized, "model": model, "raw_output": raw,
            "status": "rejected" if reasons else "accepted", "reject_reasons": reasons,
            "prompt_tokens": usage[0], "completion_tokens": usage[1], "config_hash": extras["config_hash"],
            # .get: raw_documents written before the column existed have none
            "published_thinking": doc.get("published_thinking"),
        })
        made += 1
        log(f"query for {doc['id']}: {'synthesized' if synthesized else 'given'}, {'rejected ' + str(reasons) if reasons else 'accepted'}")
    failed = [doc_id for doc_id, made_query in batched.items() if made_query is None]
    if failed:
        from reer_assets.backends.openai_compat import BackendCallError

        classes = sorted(set(batch_stats["results"]) - {"ok"})
        raise BackendCallError(classes[0] if len(classes) == 1 else "batch_failed", 1,
                               f"{len(failed)} of {len(batched)} batch synthesis request(s) failed ({', '.join(classes)}); "
                               "the others are checkpointed, the next run asks only for these")
    rows = [checkpoints.load(doc_id) for doc_id in docs["id"].to_list()]
    frame = QUERIES.frame(rows)
    storage.write_parquet(frame, extras["out"])
    summary = {"rows": frame.height, "made": made, "reused": reused,
               "synthesized": int(frame["synthesized"].sum()), "rejected": int((frame["status"] == "rejected").sum())}
    if batch_stats is not None:
        summary["batch"] = batch_stats
    if generator is not None:  # per-server counters of an HTTP generator (docs/scale.md)
        from reer_assets.backends.openai_compat import http_usage

        summary.update(http_usage(generator))
    return summary


def _synthesize_in_batch(spec, docs, checkpoints, sampling, cfg, extras, log) -> tuple[dict, dict]:
    """Every document that still needs a synthesized request, as one batch: ``{document id: SynthesizedQuery,
    or None where its request failed}`` and the batch counters. Resumes a recorded batch (docs/scale.md)."""
    from pathlib import Path

    from reer_assets.backends.batch import batch_generator
    from reer_assets.core.synthesis import SynthesizedQuery, parse_synthesized, synthesis_request

    pending = [doc for doc in docs.iter_rows(named=True) if not checkpoints.has(doc["id"]) and not doc["given_request"]]
    if not pending:
        return {}, None
    generator = batch_generator(spec, "synthesis", Path(extras["work"]) / "batches", log)
    requests = [synthesis_request(doc["text"], sampling, derive_seed(cfg["seed"], doc["id"], "synthesize"))
                for doc in pending]
    out = {}
    for doc, outcome in zip(pending, generator.generate_outcomes(requests)):
        if not outcome.ok:
            log(f"query for {doc['id']}: batch request failed ({outcome.error_class}: {outcome.error})")
            out[doc["id"]] = None
            continue
        completion = outcome.completions[0]
        out[doc["id"]] = SynthesizedQuery(parse_synthesized(completion.text), completion.text, generator.model_id,
                                          completion.prompt_tokens, completion.completion_tokens)
    return out, generator.runner.stats.to_dict()


if __name__ == "__main__":
    pipes_main(run)
