"""`reer bench search`: REER search throughput, measured side by side in one process.

1. Items per minute with both roles on the ``openai`` backend against a real vLLM server
   of the embedded model (started here on 127.0.0.1), at in-flight limits 1, 8 and 32
   (items searched at once = requests in flight per client). Like with like: every measured
   pass searches the same items with the same seed (``--seed``), so each does the same work,
   and the server runs without prefix caching, so no pass replays another's prompts from its
   cache; a warm-up pass (another seed) runs first so every measured pass sees a warm server.
   Items per minute counts searched items only (status ``ok``), not rejected ones.
2. With ``--through-dagster``: one partition's ``refined_trajectories`` materialised through
   Dagster (Pipes subprocess, lineage writes, metadata) against the same search workload
   called directly in a fresh process, same items, same seed, same backends, fresh
   checkpoints each (the partition's fingerprint and work folder are cleared before each).

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
    from reer_assets.core.refinement import SearchItem

    pieces = data.corpus()
    # spread over domains and both languages: every k-th piece
    step = max(1, len(pieces) // limit)
    return [SearchItem(p["id"], p["request"], p["text"]) for p in pieces[::step][:limit]]


def _search_config(profile_name: str):
    from reer_assets.core.refinement import SearchConfig
    from reer_assets.lib.profiles import profile

    return SearchConfig(**profile(profile_name)["search"])


def run_in_flight(server_url: str, model: str, items, in_flight: int, seed: int, profile_name: str) -> dict:
    """Search ``items`` with ``in_flight`` items (and requests per client) at once; wall and counts."""
    from concurrent.futures import ThreadPoolExecutor

    from reer_assets.backends.config import BackendSpec
    from reer_assets.backends.openai_compat import OpenAIClient, OpenAIGenerator, OpenAIScorer
    from reer_assets.core.refinement import ReerSearch

    settings = BackendSpec(backend="openai", base_url=server_url, model=model, tokenizer=model, max_in_flight=in_flight)
    gen_client, score_client = OpenAIClient(settings), OpenAIClient(settings)
    generator, scorer = OpenAIGenerator(gen_client, "bench"), OpenAIScorer(score_client, "bench")
    config = _search_config(profile_name)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=in_flight) as pool:
        traces = list(pool.map(lambda item: ReerSearch(generator, scorer, config, seed=seed).run(item), items))
    wall = time.perf_counter() - started
    ok = sum(t.status == "ok" for t in traces)
    return {
        "in_flight": in_flight, "items": len(items), "seed": seed, "wall_s": round(wall, 2),
        "items_per_min": round(ok / wall * 60, 2),  # searched items only (status ok)
        "ok": ok,
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
    # no prefix cache: every pass sends the same prompts (same items, same seed), and a cache would let a
    # later pass replay an earlier one's prefills
    server = start_vllm_server(model, None, log, extra=["--no-enable-prefix-caching"])
    try:
        items = _items(args.items)
        print(f"warm-up: {len(items)} items at in-flight 8", file=sys.stderr)
        run_in_flight(server.base_url, model, items, 8, seed=args.seed + 999, profile_name=args.profile)
        rows = []
        for in_flight in args.in_flight:
            row = run_in_flight(server.base_url, model, items, in_flight, seed=args.seed, profile_name=args.profile)
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
        return rows
    finally:
        server.stop()


_DIRECT = """
import json, sys, time
from reer_assets.workloads import refinement
extras = json.loads(sys.argv[1])
started = time.perf_counter()
summary = refinement.run(extras, lambda message: None)
print(json.dumps({"wall": time.perf_counter() - started, "made": summary["made"]}))
"""


def bench_dagster(args) -> dict:
    """Wall of the refined_trajectories materialisation vs the same workload called directly.

    Both sides run the search in a fresh Python process (the asset through Pipes, the direct
    call through ``python -c``), so both pay the same model load; what differs is Dagster:
    the run, the event log, Pipes messages, lineage writes and metadata. The two alternate
    ``--repeats`` times with the same seed (the same work each time); before each repeat the
    partition's fingerprint and work folder are cleared, so nothing is reused from a previous one.
    """
    import shutil
    import statistics
    import subprocess

    import dagster as dg
    import polars as pl

    home = Path(tempfile.mkdtemp(prefix="reer-bench-home-"))
    os.environ.update({"DAGSTER_HOME": str(home), "REER_PROFILE": args.profile})
    os.environ.pop("REER_LINEAGE_DB", None)
    from reer_assets.definitions import defs
    from reer_assets.defs.refinement.assets import SearchRunConfig
    from reer_assets.defs.resources import default_resources
    from reer_assets.lib.storage import asset_dir, local_root, output_path, read_output

    assets = {name: defs.get_assets_def(name) for name in ("raw_documents", "synthesized_queries", "refined_trajectories")}
    resources = default_resources()
    instance = dg.DagsterInstance.ephemeral()
    for name in ("raw_documents", "synthesized_queries"):
        assert dg.materialize([assets[name]], partition_key=args.domain, resources=resources, instance=instance).success
    queries = output_path("synthesized_queries", "queries", args.domain)
    n_items = pl.read_parquet(queries).filter(pl.col("status") == "accepted").height * args.rollouts
    dagster_walls, direct_walls, same = [], [], True
    seed = args.seed
    for repeat in range(args.repeats):
        search = SearchRunConfig(num_rollouts=args.rollouts, seed=seed).search_config().to_dict()
        direct_dir = Path(tempfile.mkdtemp(prefix="reer-bench-direct-"))
        outputs = {name: str(direct_dir / "out" / f"{name}.parquet")
                   for name in ("trajectories", "search_steps", "candidates")}
        extras = {"queries": str(queries), "outputs": outputs, "work": str(direct_dir / "work"),
                  "config": {"search": search, "seed": seed}, "config_hash": f"bench-direct-{seed}",
                  "generator_id": resources["generator"].model_id(), "scorer_id": resources["scorer"].model_id()}
        started = time.perf_counter()  # process start and model load count on both sides
        subprocess.run([sys.executable, "-c", _DIRECT, json.dumps(extras)], capture_output=True, text=True, check=True)
        direct_walls.append(time.perf_counter() - started)
        config = {"ops": {"refined_trajectories": {"config": {"num_rollouts": args.rollouts, "seed": seed}}}}
        (asset_dir("refined_trajectories", args.domain) / "fingerprint.json").unlink(missing_ok=True)
        shutil.rmtree(local_root() / "work" / "refined_trajectories" / args.domain, ignore_errors=True)
        started = time.perf_counter()
        result = dg.materialize([assets["refined_trajectories"]], partition_key=args.domain, resources=resources,
                                instance=instance, run_config=config)
        dagster_walls.append(time.perf_counter() - started)
        assert result.success
        direct = pl.read_parquet(direct_dir / "out/trajectories.parquet")["final_thinking"].to_list()
        through = read_output("refined_trajectories", "trajectories", args.domain)
        same = same and direct == through["final_thinking"].to_list()
        print(json.dumps({"repeat": repeat, "direct_s": round(direct_walls[-1], 2),
                          "dagster_s": round(dagster_walls[-1], 2)}), file=sys.stderr)
    return {"domain": args.domain, "items": n_items, "repeats": args.repeats,
            "dagster_wall_s": round(statistics.median(dagster_walls), 2),
            "direct_wall_s": round(statistics.median(direct_walls), 2),
            "dagster_walls": [round(w, 2) for w in dagster_walls], "direct_walls": [round(w, 2) for w in direct_walls],
            "same_trajectories": same}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # keep the report readable
    parser = argparse.ArgumentParser(prog="reer bench search", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=16, help="bundled items per in-flight pass")
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--profile", default="demo", help="search settings (a profile name)")
    parser.add_argument("--seed", type=int, default=0, help="the seed of every measured pass (same work in each)")
    parser.add_argument("--through-dagster", action="store_true",
                        help="instead: Dagster materialisation vs the direct call for one partition")
    parser.add_argument("--domain", default="essays")
    parser.add_argument("--rollouts", type=int, default=4, help="rollouts per accepted query (6 x 4 = 24 searches on essays)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating Dagster / direct pairs (medians reported)")
    args = parser.parse_args(argv)
    if args.through_dagster:
        row = bench_dagster(args)
        print(json.dumps(row, indent=2))
        print(f"dagster_overhead_ratio={row['dagster_wall_s'] / row['direct_wall_s']:.2f}")
        return 0
    rows = bench_in_flight(args)
    print(f"items/min counts searched items (status ok); every pass: same {rows[0]['items']} items, seed {args.seed}")
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
