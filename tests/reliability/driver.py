"""Materialise several selections one after another in one process, as real runs of the instance
at ``$DAGSTER_HOME`` (what ``dagster asset materialize`` does, without paying its start-up per step).

    python -m tests.reliability.driver '[{"select": "raw_documents,synthesized_queries", "partition": "tiny"},
                                         {"select": "sft_dataset", "config": {"sft_dataset": {...}}}]'

Prints one ``DRIVER {"select": ..., "success": ..., "run_id": ...}`` line per step and exits 1 at
the first failed step.
"""

from __future__ import annotations

import json
import sys


def main(steps: list[dict]) -> int:
    import dagster as dg

    from reer_assets.definitions import defs

    assets = {key.to_user_string(): defs.get_assets_def(key) for key in defs.resolve_all_asset_keys()}
    with dg.DagsterInstance.get() as instance:
        for step in steps:
            names = step["select"].split(",")
            result = dg.materialize(
                [assets[n] for n in names], selection=names, partition_key=step.get("partition"),
                instance=instance, resources=defs.resources,
                run_config={"ops": {k: {"config": v} for k, v in (step.get("config") or {}).items()}},
                raise_on_error=False)
            print("DRIVER " + json.dumps({"select": step["select"], "success": result.success,
                                          "run_id": result.run_id}), flush=True)
            if not result.success:
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
