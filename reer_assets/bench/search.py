"""`reer bench search`: REER search throughput, measured side by side in one process.

1. Items per minute with both roles on the ``openai`` backend against a real vLLM server
   of the embedded model (started here on 127.0.0.1), at in-flight limits 1, 8 and 32
   (items searched at once = requests in flight per client). A warm-up pass runs first so
   every measured pass sees the same warm server; each pass uses its own seed, so no pass
   replays another's requests.
2. With ``--through-dagster``: one partition's ``refined_trajectories`` materialised through
   Dagster (Pipes subprocess, lineage writes, metadata) against the same search called
   directly in this process, same items, same backends, fresh checkpoints for each.

The last line printed is ``search_speedup_8_vs_1=...`` or, with ``--through-dagster``,
``dagster_overhead_ratio=<Dagster wall / direct wall>``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from reer_assets import data


def _items(limit: int):
    from reer_assets.core.search import SearchItem

    pieces = data.corpus()
    # spread over domains and both languages: every k-th piece
    step = max(1, len(pieces) // limit)
    return [SearchItem(p["id"], p["request"], p["text"]) for p in pieces[::step][:limit]]


def _search_config(profile_name: str):
    from reer_assets.core.search import SearchConfig
    from reer_assets.lib.profiles import profile

    return SearchConfig(**profile(profile_name)["search"])


def run_in_flight(server_url: str, model: str, items, in_flight: int, seed: int, profile_name: str) -> dict:
    """Search ``items`` with ``in_flight`` items (and requests per client) at once; wall and counts."""
    from concurrent.futures import ThreadPoolExecutor

    from reer_assets.backends.openai_compat import ClientSettings, OpenAIClient, OpenAIGenerator, OpenAIScorer
    from reer_assets.core.search import ReerSearch

    settings = ClientSettings(base_url=server_url, model=model, tokenizer=model, max_in_flight=in_flight)
    gen_client, score_client = OpenAIClient(settings), OpenAIClient(settings)
    generator, scorer = OpenAIGenerator(gen_client, "bench"), OpenAIScorer(score_client, "bench")
    config = _search_config(profile_name)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=in_flight) as pool:
        traces = list(pool.map(lambda item: ReerSearch(generator, scorer, config, seed=seed).run(item), items))
    wall = time.perf_counter() - started
    return {
        "in_flight": in_flight, "items": len(items), "wall_s": round(wall, 2),
        "items_per_min": round(len(items) / wall * 60, 2),
        "ok": sum(t.status == "ok" for t in traces),
        "completion_tokens": gen_client.usage.completion_tokens,
        "scored_prompt_tokens": score_client.usage.prompt_tokens,
        "requests": gen_client.usage.requests + score_client.usage.requests,
    }


def bench_in_flight(args) -> list[dict]:
    from reer_assets.backends.embedded import ensure_embedded_model
    from reer_assets.backends.vllm_server import start_vllm_server

    model = str(ensure_embedded_model(log=lambda m: print(m, file=sys.stderr)))
    log = Path(tempfile.mkdtemp(prefix="reer-bench-")) / "vllm.log"
    print(f"starting vLLM server for {model} (log {log}) ...", file=sys.stderr)
    server = start_vllm_server(model, None, log)
    try:
        items = _items(args.items)
        print(f"warm-up: {len(items)} items at in-flight 8", file=sys.stderr)
        run_in_flight(server.base_url, model, items, 8, seed=999, profile_name=args.profile)
        rows = []
        for k, in_flight in enumerate(args.in_flight):
            row = run_in_flight(server.base_url, model, items, in_flight, seed=k, profile_name=args.profile)
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
        return rows
    finally:
        server.stop()


def bench_dagster(args) -> dict:
    """Wall of the refined_trajectories materialisation vs the same workload called directly."""
    import dagster as dg
    import polars as pl

    home = Path(tempfile.mkdtemp(prefix="reer-bench-home-"))
    os.environ.update({"DAGSTER_HOME": str(home), "REER_PROFILE": args.profile})
    os.environ.pop("REER_LINEAGE_DB", None)
    from reer_assets.defs.resources import default_resources
    from reer_assets.definitions import defs
    from reer_assets.lib.paths import asset_dir
    from reer_assets.workloads import search as search_workload

    assets = {key.to_user_string(): a for a in defs.assets for key in a.keys}
    resources = default_resources()
    instance = dg.DagsterInstance.ephemeral()
    config = {"ops": {"refined_trajectories": {"config": {"num_rollouts": args.rollouts}}}}
    for name in ("raw_documents", "synthesized_queries"):
        assert dg.materialize([assets[name]], partition_key=args.domain, resources=resources, instance=instance).success
    queries = asset_dir("synthesized_queries", args.domain) / "queries.parquet"
    n_items = pl.read_parquet(queries).filter(pl.col("status") == "accepted").height * args.rollouts

    started = time.perf_counter()
    result = dg.materialize([assets["refined_trajectories"]], partition_key=args.domain, resources=resources,
                            instance=instance, run_config=config)
    dagster_wall = time.perf_counter() - started
    assert result.success

    from reer_assets.defs.refinement.assets import SearchRunConfig

    run_config = SearchRunConfig(num_rollouts=args.rollouts).resolved()
    direct_dir = Path(tempfile.mkdtemp(prefix="reer-bench-direct-"))
    extras = {"queries": str(queries), "out_dir": str(direct_dir / "out"), "work": str(direct_dir / "work"),
              "config": run_config, "config_hash": "bench-direct",
              "generator_id": resources["generator"].model_id(), "scorer_id": resources["scorer"].model_id()}
    started = time.perf_counter()
    summary = search_workload.run(extras, lambda message: None)
    direct_wall = time.perf_counter() - started
    same = pl.read_parquet(direct_dir / "out/trajectories.parquet")["final_thinking"].to_list() == \
        pl.read_parquet(asset_dir("refined_trajectories", args.domain) / "trajectories.parquet")["final_thinking"].to_list()
    return {"domain": args.domain, "items": n_items, "dagster_wall_s": round(dagster_wall, 2),
            "direct_wall_s": round(direct_wall, 2), "direct_made": summary["made"], "same_trajectories": same}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # keep the report readable
    parser = argparse.ArgumentParser(prog="reer bench search", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=16, help="bundled items per in-flight pass")
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--profile", default="demo", help="search settings (a profile name)")
    parser.add_argument("--through-dagster", action="store_true",
                        help="instead: Dagster materialisation vs the direct call for one partition")
    parser.add_argument("--domain", default="essays")
    parser.add_argument("--rollouts", type=int, default=3, help="rollouts per item (8 pieces x 3 = 24 searches)")
    args = parser.parse_args(argv)
    if args.through_dagster:
        row = bench_dagster(args)
        print(json.dumps(row, indent=2))
        print(f"dagster_overhead_ratio={row['dagster_wall_s'] / row['direct_wall_s']:.2f}")
        return 0
    rows = bench_in_flight(args)
    print(f"{'in-flight':>9} {'items':>5} {'wall s':>8} {'items/min':>9} {'ok':>3} {'requests':>8} {'gen tokens':>10}")
    for r in rows:
        print(f"{r['in_flight']:>9} {r['items']:>5} {r['wall_s']:>8} {r['items_per_min']:>9} {r['ok']:>3} "
              f"{r['requests']:>8} {r['completion_tokens']:>10}")
    base = next((r for r in rows if r["in_flight"] == 1), rows[0])
    for r in rows:
        print(f"ratio in-flight {r['in_flight']} / {base['in_flight']}: {r['items_per_min'] / base['items_per_min']:.2f}x")
    eight = next((r for r in rows if r["in_flight"] == 8), None)
    if eight:
        print(f"search_speedup_8_vs_1={eight['items_per_min'] / base['items_per_min']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
