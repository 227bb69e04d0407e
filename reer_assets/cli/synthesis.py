"""`reer synthesize-query`: the request behind a text, written by the generator (or given), and checked."""

from __future__ import annotations

import argparse
import json

from reer_assets.cli.common import add_profile_arg, err, read, run_profile


def cmd_synthesize_query(args: argparse.Namespace) -> int:
    from reer_assets.core.ingest.cleaning import detect_language, normalize_text
    from reer_assets.core.protocols import Sampling
    from reer_assets.core.synthesis import QueryQC, query_reasons

    text = normalize_text(read(args.reference))
    language = detect_language(text)
    out: dict = {"language": language}
    if args.query is not None:  # a given request: passes through unchanged, still checked
        out.update(query=args.query, raw_output=None, model=None, synthesized=False)
    else:
        from reer_assets.backends.config import BackendSpec, load_generator
        from reer_assets.core.synthesis import synthesize_query

        settings = {**run_profile(args)["synthesis"],
                    **({"max_tokens": args.max_tokens} if args.max_tokens is not None else {})}
        sampling = Sampling(settings["temperature"], settings["top_p"], settings["top_k"], settings["max_tokens"])
        made = synthesize_query(load_generator(BackendSpec.from_env("generator")), text, sampling, seed=args.seed)
        out.update(made.to_dict(), synthesized=True, seed=args.seed)
    reasons = query_reasons(out["query"], text, language, QueryQC(max_chars=args.max_chars, max_copy_chars=args.max_copy_chars))
    out.update(status="rejected" if reasons else "accepted", reasons=reasons)
    if args.json:
        print(json.dumps(out, ensure_ascii=False, indent=2))
    else:
        print(out["query"])
        err(f"{out['status']} {reasons or ''}".strip())
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``synthesize-query``."""
    synth = subparsers.add_parser("synthesize-query", help="write the request behind a text with the generator, and check it")
    synth.add_argument("--reference", required=True, help="file with the text")
    synth.add_argument("--query", help="check this given request instead of synthesizing one")
    synth.add_argument("--seed", type=int, default=0)
    add_profile_arg(synth, "sampling settings")
    synth.add_argument("--max-tokens", type=int)
    synth.add_argument("--max-chars", type=int, default=600, help="longest acceptable request")
    synth.add_argument("--max-copy-chars", type=int, default=60, help="longest span the request may copy from the text")
    synth.add_argument("--json", action="store_true")
    synth.set_defaults(func=cmd_synthesize_query)
