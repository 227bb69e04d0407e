"""`reer segment`, `reer score`, `reer search`: the REER search and its parts on one item (or a JSONL file of
items), without Dagster."""

from __future__ import annotations

import argparse
import json
import time

from reer_assets.cli.common import EPILOG, add_profile_arg, backends, err, read, run_profile


def cmd_segment(args: argparse.Namespace) -> int:
    from reer_assets.core.segment import segment

    segments = segment(read(args.file)).segments
    if args.json:
        print(json.dumps(segments, ensure_ascii=False, indent=2))
    else:
        print("\n\n----\n\n".join(segments))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from reer_assets.backends.config import BackendSpec, load_scorer
    from reer_assets.core.objective import build_score_request, score_of
    from reer_assets.core.segment import segment

    scorer = load_scorer(BackendSpec.from_env("scorer"))
    request = build_score_request(args.query, read(args.thinking).strip(), segment(read(args.reference)))
    result = scorer.score([request])[0]
    out = {"score": score_of(result), "scored_tokens": len(result.token_logprobs), "scorer_model": scorer.model_id}
    print(json.dumps(out) if args.json else f"score {out['score']:.4f} over {out['scored_tokens']} tokens")
    return 0


def _search_items(args: argparse.Namespace) -> list:
    """The one item of --query/--reference, or every line of --items (JSONL: query or request, reference or
    text, optional item_id or id)."""
    from reer_assets.core.refinement import SearchItem

    if args.items is None:
        if args.query is None or args.reference is None:
            raise ValueError("reer search needs --query and --reference, or --items FILE.jsonl")
        initial = read(args.initial_thinking) if args.initial_thinking else None
        return [SearchItem(item_id=args.item_id, query=args.query, reference=read(args.reference),
                           initial_thinking=initial)]
    if args.query is not None or args.reference is not None or args.initial_thinking is not None:
        raise ValueError("--items cannot be combined with --query/--reference/--initial-thinking "
                         "(give an item's own thinking as 'initial_thinking' in its line)")
    items = []
    for number, line in enumerate(read(args.items).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            query, reference = row.get("query", row.get("request")), row.get("reference", row.get("text"))
        except (json.JSONDecodeError, AttributeError) as exc:
            raise ValueError(f"{args.items}:{number}: not a JSON object ({exc})") from exc
        if not query or not reference:
            raise ValueError(f"{args.items}:{number}: needs 'query' (or 'request') and 'reference' (or 'text')")
        items.append(SearchItem(item_id=str(row.get("item_id", row.get("id", f"item-{number}"))), query=query,
                                reference=reference, initial_thinking=row.get("initial_thinking")))
    if not items:
        raise ValueError(f"{args.items}: no items")
    return items


def rejection_hints(reason: str, config, seed: int, given_thinking: bool = False) -> list[str]:
    """What can help with an item the search rejected for ``reason``, what fits that reason first. A thinking
    the user gave is not sampled: another seed or generator cannot change it."""
    if reason == "initial_rollout_unsegmentable":  # a lower token floor cannot make one segment into two
        hints = [f"--min-segment-chars {max(1, config.min_segment_chars // 2)} (close segments at shorter paragraphs)"]
        if given_thinking:
            return hints + ["a thinking of two or more paragraphs (a blank line between them)"]
    elif reason == "initial_rollout_too_short":
        hints = [f"--min-rollout-tokens {max(1, config.min_rollout_tokens // 2)} (accept shorter thinkings)",
                 f"--max-tokens above {config.max_tokens} if the thinking was cut off"]
    else:
        hints = []
    return hints + [f"another --seed (e.g. --seed {seed + 1})",
                    "a stronger generator: REER_GENERATOR_BACKEND=openai with REER_GENERATOR_BASE_URL and "
                    "REER_GENERATOR_MODEL (or REER_GENERATOR_BACKEND=hf|vllm with REER_GENERATOR_MODEL=PATH)"]


def rejection_advice(trace, config, given_thinking: bool = False) -> str:
    """Why the search rejected an item's initial thinking, and what to try."""
    reason = trace.reject_reason or "rejected"
    if reason == "initial_rollout_too_short":
        why = (f"the initial thinking has {trace.initial_tokens} completion tokens, fewer than "
               f"--min-rollout-tokens {config.min_rollout_tokens}")
    elif reason == "initial_rollout_unsegmentable":
        why = (f"the initial thinking ({trace.initial_tokens} tokens) is one segment: the search needs at least two "
               f"paragraphs of {config.min_segment_chars}+ characters to rewrite")
    else:
        why = reason
    return (f"reer: item {trace.item_id!r}: the initial thinking was rejected ({reason}): {why}.\n"
            f"  try: {'; or '.join(rejection_hints(reason, config, trace.seed, given_thinking))}")


def cmd_search(args: argparse.Namespace) -> int:
    from reer_assets import progress
    from reer_assets.core.refinement import ReerSearch, SearchConfig

    items = _search_items(args)
    generator, scorer = backends()
    overrides = {k: v for k, v in {
        "max_step": args.max_step, "num_expansion": args.num_expansion, "stop_thresh": args.stop_thresh,
        "max_tokens": args.max_tokens, "min_rollout_tokens": args.min_rollout_tokens,
        "min_segment_chars": args.min_segment_chars,
    }.items() if v is not None}
    config = SearchConfig(**{**run_profile(args)["search"], **overrides})
    search = ReerSearch(generator, scorer, config, seed=args.seed)
    traces = []
    for item in progress.iterate(items, f"searching {len(items)} item{'s' * (len(items) > 1)}"):
        started = time.perf_counter()
        trace = search.run(item)
        traces.append(trace)
        err(f"{item.item_id}: search took {time.perf_counter() - started:.1f}s: {trace.status}, "
            f"score {trace.initial_score} -> {trace.final_score}")
        if trace.status != "ok":
            err(rejection_advice(trace, config, given_thinking=item.initial_thinking is not None))
    ok = sum(t.status == "ok" for t in traces)
    if args.items is None:
        print(traces[0].to_json(indent=2) if args.json else traces[0].final_thinking)
    elif args.json:
        print(json.dumps({"items": len(traces), "ok": ok, "rejected": len(traces) - ok,
                          "traces": [json.loads(t.to_json()) for t in traces]}, ensure_ascii=False))
    else:
        for t in traces:
            print(f"{t.item_id}\t{t.status}\t{t.reject_reason or ''}\t{t.initial_score}\t{t.final_score}")
    return 0 if ok else 3


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``segment``, ``score`` and ``search``."""
    seg = subparsers.add_parser("segment", help="segment a text file by the REER rule")
    seg.add_argument("file")
    seg.add_argument("--json", action="store_true")
    seg.set_defaults(func=cmd_segment)

    score = subparsers.add_parser("score", help="clipped NLL of a reference given a query and a thinking")
    score.add_argument("--query", required=True)
    score.add_argument("--thinking", required=True, help="file with the thinking text")
    score.add_argument("--reference", required=True, help="file with the reference text")
    score.add_argument("--json", action="store_true")
    score.set_defaults(func=cmd_score)

    search = subparsers.add_parser("search", help="run the REER search on one item (or a JSONL file of items) and print "
                            "its trace", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    search.add_argument("--query")
    search.add_argument("--reference", help="file with the reference text")
    search.add_argument("--items", help="JSONL file, one item a line: query (or request), reference (or text), "
                        "optional item_id; --json prints one document with every trace")
    search.add_argument("--item-id", default="cli-item")
    search.add_argument("--seed", type=int, default=0)
    search.add_argument("--initial-thinking", help="file with a thinking to start from instead of sampling one "
                        "(it is segmented and searched as a sampled one)")
    add_profile_arg(search, "search settings")
    search.add_argument("--min-segment-chars", type=int,
                        help="a paragraph closes a segment from this many characters (official: 100)")
    search.add_argument("--max-step", type=int)
    search.add_argument("--num-expansion", type=int)
    search.add_argument("--stop-thresh", type=float)
    search.add_argument("--max-tokens", type=int)
    search.add_argument("--min-rollout-tokens", type=int,
                        help="shortest initial thinking (completion tokens) the search accepts (default 100)")
    search.add_argument("--json", action="store_true", help="one JSON document on stdout (logs on stderr)")
    search.set_defaults(func=cmd_search)
