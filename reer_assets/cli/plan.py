"""`reer plan`: what a run will cost before it starts, and how that compared with a run (docs/cost.md).

    reer plan [--domains D ...] [--profile NAME] [--items N] [--throughput FILE] [--prices FILE] [--json]
    reer plan --compare RUN_ID|latest [--compare RUN_ID ...] [--json]

Prints the plan of :func:`reer_assets.runtime.plan.build_plan` (the ``run_plan`` asset records the same plan)
with ``--throughput`` / ``REER_THROUGHPUT_FILE`` and ``--prices`` / ``REER_PRICES_FILE``; ``--compare`` prints
predicted against what lineage recorded for those runs (:func:`~reer_assets.runtime.plan.compare_runs`).
"""

from __future__ import annotations

import argparse
import json

from reer_assets.cli.common import add_profile_arg
from reer_assets.core import plan as P
from reer_assets.runtime.plan import build_plan, compare_runs


def _fmt(r: dict, digits: int = 0) -> str:
    return f"{r['expected']:,.{digits}f} [{r['low']:,.{digits}f} – {r['high']:,.{digits}f}]"


def print_plan(plan: P.Plan) -> None:
    i = plan.inputs
    print(f"plan: profile {i['profile']}, domains {', '.join(i['domains'])}: {i['items']} items "
          f"({i['documents_without_request']} need a synthesized request), {i['rollouts']} rollouts")
    print(f"search: {json.dumps(i['search'])}")
    print(f"roles: " + ", ".join(f"{r} {s['backend'] or '-'} {s['model_id']}" for r, s in i["roles"].items()))
    print(f"tokens counted with: generator {i['tokenizers']['generator']}; scorer {i['tokenizers']['scorer']}")
    print(f"expected-bound behaviour: {i['behaviour']['source']}\n")
    print(plan.markdown())
    print("\nassumptions behind each bound:\n")
    print(plan.assumptions_markdown())
    h = plan.headline()
    print(f"\ntotal tokens: {_fmt(h['tokens'])}")
    print("device-hours: " + (_fmt(h["device_hours"], 3) if h["device_hours"] else "null")
          + (f" (no throughput for: {', '.join(h['device_hours_missing'])})" if h["device_hours_missing"] else ""))
    print("USD: " + (_fmt(h["cost_usd"], 2) if h["cost_usd"] else "null (no API role with a price)")
          + (f" (no price for: {', '.join(h['cost_missing'])})" if h["cost_missing"] else ""))


def cmd_plan(args: argparse.Namespace) -> int:
    if args.compare:
        result = compare_runs(args.compare, args.domains, args.profile)
        if args.json:
            print(json.dumps(result, ensure_ascii=False))
        else:
            print(f"runs {', '.join(result['runs'])}: domains {', '.join(result['domains'])}, profile {result['profile']}")
            print(P.compare_markdown(result["rows"]))
        return 0
    plan = build_plan(args.domains, args.profile, args.items, args.throughput, args.prices)
    if args.json:
        print(json.dumps(plan.to_dict(), ensure_ascii=False))
    else:
        print_plan(plan)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``plan``."""
    p = subparsers.add_parser("plan", help="calls, tokens, device-hours and money a run will take, per stage and role "
                       "(docs/cost.md); --compare RUN_ID against what lineage recorded")
    p.add_argument("--domains", nargs="+", help="domains of domains.yaml (default: all)")
    add_profile_arg(p, "search, synthesis, training and evaluation settings")
    p.add_argument("--items", type=int, help="plan for this many items of the domains' mix instead of their count")
    p.add_argument("--throughput", help="throughput.yaml (default: REER_THROUGHPUT_FILE)")
    p.add_argument("--prices", help="prices.yaml (default: REER_PRICES_FILE)")
    p.add_argument("--compare", action="append", metavar="RUN_ID",
                   help="a Dagster run id in lineage, or 'latest' (every domain's latest synthesis and refinement runs)")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.set_defaults(func=cmd_plan)
