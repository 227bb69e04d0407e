"""A minimal stage on the real skeleton (``defs/stage.run_stage``), for the reuse tests.

``probe`` writes one row per config ``variant`` and can fail its check or stop inside it (after its
outputs are written, before its fingerprint is saved) until it is killed; ``probe_reader`` is a
downstream stage that copies what it reads under the upstream fingerprint it was given. Run as a
script (``python -m tests.support.reuse_probe VARIANT HALT_FILE``), it materialises ``probe`` and
halts in its check: the SIGKILL test kills it there.
"""


import os
import sys
import threading
from pathlib import Path

import dagster as dg
import polars as pl

from reer_assets.defs.stage import run_stage, upstream
from reer_assets.lib import storage

storage.OUTPUTS.setdefault("probe", {"rows": "rows.parquet"})
storage.OUTPUTS.setdefault("probe_reader", {"rows": "rows.parquet"})


class ProbeConfig(dg.Config):
    variant: str = "A"
    fail_check: bool = False
    halt_file: str = ""  # when set: create it in the check, then wait forever (to be killed)


def make_probe(code_version: str = "1") -> dg.AssetsDefinition:
    @dg.asset(name="probe", code_version=code_version)
    def probe(context: dg.AssetExecutionContext, config: ProbeConfig) -> dg.MaterializeResult:
        def produce(paths):
            storage.write_parquet(pl.DataFrame({"variant": [config.variant] * 3}), paths["rows"])
            return {"variant": config.variant}

        def check(run):
            if config.halt_file:
                Path(config.halt_file).write_text(str(os.getpid()))
                threading.Event().wait()
            if config.fail_check:
                raise dg.Failure(f"variant {config.variant} fails its check")

        run = run_stage(context, "probe", (config.variant,), produce, check=check)
        return run.result(3, {"variant": config.variant})

    return probe


@dg.asset(name="probe_reader", deps=["probe"], code_version="1")
def probe_reader(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    def produce(paths):
        storage.write_parquet(storage.read_output("probe", "rows"), paths["rows"])

    run = run_stage(context, "probe_reader", (upstream("probe"),), produce)
    return run.result(3, {"read": run.read("rows")["variant"].unique().to_list()})


def materialize(asset: dg.AssetsDefinition, instance: dg.DagsterInstance, **config) -> dg.ExecuteInProcessResult:
    return dg.materialize([asset], instance=instance, raise_on_error=False,
                          run_config={"ops": {asset.op.name: {"config": config}}} if config else None)


if __name__ == "__main__":
    variant, halt = sys.argv[1], sys.argv[2]
    materialize(make_probe(), dg.DagsterInstance.ephemeral(), variant=variant, halt_file=halt)
