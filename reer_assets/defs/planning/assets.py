"""run_plan: the domain's plan (calls, tokens, device-hours, money per stage and role), before the stages run."""


import json
from typing import Optional

import dagster as dg

from reer_assets.defs.partitions import domain_partitions
from reer_assets.defs.resources import ModelBackendResource
from reer_assets.defs.stage import run_stage
from reer_assets.lib import storage
from reer_assets.lib.profiles import profile_name
from reer_assets.lib.run_config import ProfileConfig


class PlanConfig(ProfileConfig):
    """The profile to plan for (default REER_PROFILE) and, optionally, an item count instead of the sources'."""

    items: Optional[int] = None
    throughput_file: Optional[str] = None  # default REER_THROUGHPUT_FILE
    prices_file: Optional[str] = None  # default REER_PRICES_FILE


@dg.asset(
    code_version="1",
    partitions_def=domain_partitions,
    group_name="planning",
    kinds={"python"},
)
def run_plan(context: dg.AssetExecutionContext, config: PlanConfig, generator: ModelBackendResource,
             scorer: ModelBackendResource, judge: ModelBackendResource) -> dg.MaterializeResult:
    """The plan of ``reer plan`` for this domain (docs/cost.md): expected calls, prompt, completion and
    scored tokens per stage and role as (low, expected, high), with device-hours and money where a
    throughput or price is known. Reads the domain's sources and the profile; calls no model.
    ``domain_pipeline_job`` starts with it. Parquet-free: ``reer/assets/run_plan/<domain>/plan.json``.
    """
    from reer_assets.runtime.plan import build_plan

    domain = context.partition_key
    backends = {"generator": generator.spec(), "scorer": scorer.spec(),
                "judge": judge.spec() if judge.configured else None}
    plan = build_plan([domain], config.profile, config.items, config.throughput_file, config.prices_file,
                      backends=backends)
    document = plan.to_dict()

    def write(paths):
        storage.write_json(paths["plan"], document, indent=1)
        return document["headline"]

    run = run_stage(context, "run_plan", (json.dumps(document, sort_keys=True, default=str),), write)
    head = document["headline"]
    stages = document["stages"]
    context.log.info(f"[{domain}] plan ({profile_name(config.profile)}): {head['tokens']['expected']:,.0f} tokens expected")
    return run.result(len(plan.lines), {
        "profile": document["inputs"]["profile"],
        "items": head["items"],
        "rollouts": head["rollouts"],
        "expected_tokens": head["tokens"]["expected"],
        "tokens_low": head["tokens"]["low"],
        "tokens_high": head["tokens"]["high"],
        **{f"{s}_tokens": v["tokens"]["expected"] for s, v in stages.items()},
        "device_hours": head["device_hours"]["expected"] if head["device_hours"] else None,
        "device_hours_missing": ", ".join(head["device_hours_missing"]) or "none",
        "cost_usd": head["cost_usd"]["expected"] if head["cost_usd"] else None,
        "plan": dg.MetadataValue.md(plan.markdown()),
        "assumptions": dg.MetadataValue.md(plan.assumptions_markdown()),
        "behaviour": document["inputs"]["behaviour"]["source"],
    })
