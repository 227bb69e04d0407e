"""A run of one tiny asset in a pool, on the instance at ``$DAGSTER_HOME``: it writes its pid to
``marker`` once its step holds the pool slot, sleeps ``seconds``, and prints
``POOL_JOB {"run_id": ..., "success": ...}``.

    python -m tests.reliability.pool_job duckdb /tmp/held 60               # dg.materialize (in process)
    python -m tests.reliability.pool_job duckdb /tmp/held 60 multiprocess  # the step in its own process

Used by ``test_pool_reclaim.py`` to hold a slot (and be SIGKILLed holding it) or to wait for one.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def _hold_asset():
    import dagster as dg

    pool, marker, seconds = os.environ["POOL_JOB_POOL"], os.environ["POOL_JOB_MARKER"], float(os.environ["POOL_JOB_S"])

    @dg.asset(pool=pool, name=f"hold_{pool}")
    def hold() -> None:
        staged = Path(f"{marker}.tmp")
        staged.write_text(str(os.getpid()))
        staged.replace(marker)  # atomic: a test polling for the marker never reads it empty
        time.sleep(seconds)  # wait: the held slot's work itself; the tests kill it, they never wait for it to end

    return hold


def multiprocess_job():
    """The job for ``dg.reconstructable`` (step processes rebuild it from the same environment)."""
    import dagster as dg

    return dg.Definitions(assets=[_hold_asset()], jobs=[dg.define_asset_job(
        "hold_job", executor_def=dg.multiprocess_executor)]).resolve_job_def("hold_job")


def main(pool: str, marker: str, seconds: str, mode: str = "in_process") -> int:
    import dagster as dg

    os.environ.update({"POOL_JOB_POOL": pool, "POOL_JOB_MARKER": marker, "POOL_JOB_S": seconds})
    with dg.DagsterInstance.get() as instance:
        if mode == "multiprocess":
            with dg.execute_job(dg.reconstructable(multiprocess_job), instance=instance) as result:
                run_id, success = result.run_id, result.success
        else:
            result = dg.materialize([_hold_asset()], instance=instance, raise_on_error=False)
            run_id, success = result.run_id, result.success
    print("POOL_JOB " + json.dumps({"run_id": run_id, "success": success}), flush=True)
    return 0 if success else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
