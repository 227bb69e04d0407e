"""Items per minute of refined_trajectories through the Ray runner with 1 worker against 2, on the embedded
model (docs/scale.md, "Measurements").

    .venv/bin/python scripts/bench_ray_workers.py --items 12 --profile test --configs 1x2 2x1 --repeats 1

Starts a local Ray head on 127.0.0.1 with 2 CPUs, prepares the given-request English bundled pieces as
one domain (no model is needed before the search), then for each configuration ``WxC`` (W workers =
shards = concurrent Ray jobs, C CPUs per job, which is also its torch thread count) materialises
``refined_trajectories`` in a fresh instance folder: same items, same seed, nothing reused. Prints one
JSON line per run and a table: wall of the step, items, searched (ok) items, items/min counting ok
items only, and per-shard wall; then the per-item token counts from lineage (the cost model's inputs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TOKENS_SQL = """
SELECT status, count(*) AS items,
       round(avg(generator_calls), 2) AS generator_calls, round(avg(scorer_calls), 2) AS scorer_calls,
       round(avg(prompt_tokens)) AS prompt_tokens, round(avg(completion_tokens)) AS completion_tokens,
       round(avg(scored_tokens)) AS scored_tokens, round(avg(num_steps), 2) AS steps
FROM trajectories WHERE partition = ? GROUP BY status ORDER BY status
"""


def run_config(workers: int, cpus: float, pieces: list[dict], address: str, profile: str, root: Path,
               seed: int) -> dict:
    import dagster as dg

    home = root / f"home-{workers}x{cpus:g}-{time.monotonic_ns()}"
    home.mkdir(parents=True)
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    source = root / "pieces.jsonl"
    domains = home / "domains.yaml"
    domains.write_text(f"domains:\n  education:\n    shards: {workers}\n    languages: [en]\n    sources:\n"
                       f"      - reader: generic\n        path: {source}\n", encoding="utf-8")
    os.environ.update({"DAGSTER_HOME": str(home), "REER_PROFILE": profile, "REER_DOMAINS_FILE": str(domains)})
    os.environ.pop("REER_LINEAGE_DB", None)
    from reer_assets.definitions import defs
    from reer_assets.defs.resources import LineageResource, ModelBackendResource, WorkloadRunner
    from reer_assets.runtime.runners.ray import RayRunnerSettings
    from reer_assets.lib import duckdb_store

    runner = WorkloadRunner(mode="ray", ray=RayRunnerSettings(address=address, num_cpus=cpus, poll_interval_s=0.5))
    resources = {"generator": ModelBackendResource.from_env("generator"),
                 "scorer": ModelBackendResource.from_env("scorer"),
                 "lineage": LineageResource(db_path=str(home / "lineage.duckdb")), "runner": runner}
    instance = dg.DagsterInstance.ephemeral()
    upstream = [defs.get_assets_def(n) for n in ("raw_documents", "synthesized_queries")]
    assert dg.materialize(upstream, partition_key="education", resources=resources, instance=instance).success
    started = time.perf_counter()
    result = dg.materialize([defs.get_assets_def("refined_trajectories")], partition_key="education",
                            resources=resources, instance=instance,
                            run_config={"ops": {"refined_trajectories": {"config": {"seed": seed}}}})
    wall = time.perf_counter() - started
    assert result.success
    meta = result.asset_materializations_for_node("refined_trajectories")[0].metadata
    workload = meta["workload"].value
    status = dict(duckdb_store.query("SELECT status, count(*) FROM trajectories GROUP BY 1",
                                     path=home / "lineage.duckdb").iter_rows())
    ok = status.get("ok", 0)
    tokens = duckdb_store.query(TOKENS_SQL, ["education"], path=home / "lineage.duckdb").to_dicts()
    shards = workload.get("shard_runs") or [{"shard": 1, "items": workload.get("rows"),
                                             "seconds": workload.get("seconds")}]
    instance.dispose()
    return {"workers": workers, "cpus_per_worker": cpus, "items": sum(status.values()), "ok": ok,
            "rejected": status.get("rejected", 0), "failed": status.get("failed", 0), "wall_s": round(wall, 1),
            "ok_per_min": round(ok / wall * 60, 2), "items_per_min": round(sum(status.values()) / wall * 60, 2),
            "shards": [(s["shard"], s["items"], s.get("seconds")) for s in shards], "tokens": tokens, "home": str(home)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=12)
    parser.add_argument("--profile", default="test")
    parser.add_argument("--configs", nargs="+", default=["1x2", "2x1"], help="WORKERSxCPUS_PER_WORKER")
    parser.add_argument("--repeats", type=int, default=1, help="alternating passes over the configurations")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                       "RAY_USAGE_STATS_ENABLED": "0"})
    for name in [k for k in os.environ if k.startswith(("REER_GENERATOR_", "REER_SCORER_"))]:
        os.environ.pop(name)
    from reer_assets import data
    from reer_assets.backends.embedded import ensure_embedded_model
    from reer_assets.backends.embedded_scorer import ensure_scorer_model
    from tests.scale.conftest import start_ray_head, stop_ray_head

    ensure_embedded_model(), ensure_scorer_model()  # built or cached before anything is timed
    root = Path(tempfile.mkdtemp(prefix="reer-ray-bench-"))
    pieces = [p for p in data.corpus() if p.get("request_given") and p["language"] == "en"][: args.items]
    with open(root / "pieces.jsonl", "w", encoding="utf-8") as handle:
        for p in pieces:
            handle.write(json.dumps({"id": p["id"], "request": p["request"], "text": p["text"]}) + "\n")
    head = start_ray_head(root)
    rows = []
    try:
        for _ in range(args.repeats):
            for config in args.configs:
                workers, cpus = config.split("x")
                row = run_config(int(workers), float(cpus), pieces, head.address, args.profile, root, args.seed)
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        stop_ray_head(head)
    print(f"\nprofile {args.profile}, {len(pieces)} items, seed {args.seed}; items/min counts searched (ok) items")
    print(f"{'workers':>7} {'cpu/w':>5} {'wall s':>7} {'ok':>3} {'rej':>3} {'ok/min':>7} {'all/min':>7}  "
          "shards (n, items, s)")
    for r in rows:
        print(f"{r['workers']:>7} {r['cpus_per_worker']:>5g} {r['wall_s']:>7} {r['ok']:>3} {r['rejected']:>3} "
              f"{r['ok_per_min']:>7} {r['items_per_min']:>7}  {r['shards']}")
    print("\nper-item token counts (lineage, first run):")
    for t in rows[0]["tokens"]:
        print(json.dumps(t))
    return 0


if __name__ == "__main__":
    sys.exit(main())
