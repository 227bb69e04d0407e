"""`reer model`: build the embedded generator and scorer, or check a configured model (format rates, the
scorer's positive control)."""

from __future__ import annotations

import argparse
import json

from reer_assets.cli.common import backends, err


def cmd_model_build(args: argparse.Namespace) -> int:
    from reer_assets.backends.embedded import ensure_embedded_model
    from reer_assets.backends.embedded_scorer import ensure_scorer_model

    for name, ensure in (("embedded model", ensure_embedded_model), ("embedded scorer", ensure_scorer_model)):
        path = ensure(log=err)
        report = json.loads((path / "build.json").read_text())
        err(f"{name}: {report['parameters']:,} parameters, final loss {report['final_loss']:.3f}, "
            f"trained in {report['train_seconds']}s")
        print(path, flush=True)
    return 0


def cmd_model_check(args: argparse.Namespace) -> int:
    if args.scorer:
        from reer_assets import data
        from reer_assets.backends.config import BackendSpec, load_scorer
        from reer_assets.core.scorer_control import bundled_items, run_control

        report = run_control(load_scorer(BackendSpec.from_env("scorer")), bundled_items(data.corpus()), limit=args.limit)
        err(f"scorer positive control ({report['scorer_model']}): outline better on "
            f"{report['share_outline_better']:.0%} of {report['items']} items, mean gap {report['mean_gap']:+.3f}")
        print(json.dumps(report, indent=None if args.json else 2, ensure_ascii=False))
        return 0
    from reer_assets.backends.format_check import check_formats

    generator, scorer = backends()
    report = check_formats(generator, scorer, max_tokens=args.max_tokens, limit=args.limit, seed=args.seed)
    print(json.dumps(report.as_dict(), indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``model build`` and ``model check``."""
    model = subparsers.add_parser("model", help="the embedded default model").add_subparsers(dest="action", required=True)
    model.add_parser("build", help="build or reuse the embedded generator and scorer; prints both paths "
                     "(generator first)").set_defaults(func=cmd_model_build)

    check = model.add_parser("check", help="format rates of the configured generator on the bundled items, or "
                             "with --scorer the scorer's positive control (outline vs unrelated thinking)")
    check.add_argument("--scorer", action="store_true",
                       help="run the positive control on the configured scorer; one JSON document on stdout")
    check.add_argument("--json", action="store_true", help="the JSON on one line")
    check.add_argument("--limit", type=int)
    check.add_argument("--max-tokens", type=int, default=768)
    check.add_argument("--seed", type=int, default=0)
    check.set_defaults(func=cmd_model_check)
