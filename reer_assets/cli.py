"""The `reer` command: build the embedded model, ingest sources, synthesize a request, segment, score and
search without Dagster."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

from reer_assets.eval_commands import add_eval_parser
from reer_assets.experiment_commands import add_experiment_parser
from reer_assets.plan_commands import add_plan_parser
from reer_assets.import_commands import add_import_parser


def _read(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def _err(message: str) -> None:
    print(message, file=sys.stderr)


def cmd_model_build(args: argparse.Namespace) -> int:
    from reer_assets.backends.embedded import ensure_embedded_model
    from reer_assets.backends.embedded_scorer import ensure_scorer_model

    for name, ensure in (("embedded model", ensure_embedded_model), ("embedded scorer", ensure_scorer_model)):
        path = ensure(log=_err)
        report = json.loads((path / "build.json").read_text())
        _err(f"{name}: {report['parameters']:,} parameters, final loss {report['final_loss']:.3f}, "
             f"trained in {report['train_seconds']}s")
        print(path, flush=True)
    return 0


def cmd_model_check(args: argparse.Namespace) -> int:
    if args.scorer:
        from reer_assets import data
        from reer_assets.backends.config import BackendSpec, load_scorer
        from reer_assets.core.scorer_control import bundled_items, run_control

        report = run_control(load_scorer(BackendSpec.from_env("scorer")), bundled_items(data.corpus()), limit=args.limit)
        _err(f"scorer positive control ({report['scorer_model']}): outline better on "
             f"{report['share_outline_better']:.0%} of {report['items']} items, mean gap {report['mean_gap']:+.3f}")
        print(json.dumps(report, indent=None if args.json else 2, ensure_ascii=False))
        return 0
    from reer_assets.backends.format_check import check_formats

    generator, scorer = _backends()
    report = check_formats(generator, scorer, max_tokens=args.max_tokens, limit=args.limit, seed=args.seed)
    print(json.dumps(report.as_dict(), indent=2))
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    from reer_assets.core.segment import segment

    segments = segment(_read(args.file)).segments
    if args.json:
        print(json.dumps(segments, ensure_ascii=False, indent=2))
    else:
        print("\n\n----\n\n".join(segments))
    return 0


def _backends():
    from reer_assets.backends.config import BackendSpec, load_generator, load_scorer

    return load_generator(BackendSpec.from_env("generator")), load_scorer(BackendSpec.from_env("scorer"))


def cmd_score(args: argparse.Namespace) -> int:
    from reer_assets.backends.config import BackendSpec, load_scorer
    from reer_assets.core.objective import build_score_request, score_of
    from reer_assets.core.segment import segment

    scorer = load_scorer(BackendSpec.from_env("scorer"))
    request = build_score_request(args.query, _read(args.thinking).strip(), segment(_read(args.reference)))
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
        initial = _read(args.initial_thinking) if args.initial_thinking else None
        return [SearchItem(item_id=args.item_id, query=args.query, reference=_read(args.reference),
                           initial_thinking=initial)]
    if args.query is not None or args.reference is not None or args.initial_thinking is not None:
        raise ValueError("--items cannot be combined with --query/--reference/--initial-thinking "
                         "(give an item's own thinking as 'initial_thinking' in its line)")
    items = []
    for number, line in enumerate(_read(args.items).splitlines(), 1):
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


def rejection_advice(trace, config) -> str:
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
    if reason == "initial_rollout_unsegmentable":  # a lower token floor cannot make one segment into two
        lower = f"--min-segment-chars {max(1, config.min_segment_chars // 2)} (close segments at shorter paragraphs)"
    else:
        lower = f"--min-rollout-tokens {max(1, config.min_rollout_tokens // 2)} (accept shorter thinkings)"
    return (f"reer: item {trace.item_id!r}: the initial thinking was rejected ({reason}): {why}.\n"
            f"  try: {lower}; another --seed (e.g. --seed "
            f"{trace.seed + 1}); or a stronger generator: REER_GENERATOR_BACKEND=openai with REER_GENERATOR_BASE_URL "
            f"and REER_GENERATOR_MODEL (or REER_GENERATOR_BACKEND=hf|vllm with REER_GENERATOR_MODEL=PATH)")


def _profile_search(name: str | None) -> dict:
    """The search settings of a profile (--profile, else REER_PROFILE, else default), as the assets use them."""
    from dataclasses import fields

    from reer_assets.core.refinement import SearchConfig
    from reer_assets.lib.profiles import profile

    known = {f.name for f in fields(SearchConfig)}
    return {k: v for k, v in profile(name)["search"].items() if k in known}


def cmd_search(args: argparse.Namespace) -> int:
    from reer_assets import progress
    from reer_assets.core.refinement import ReerSearch, SearchConfig

    items = _search_items(args)
    generator, scorer = _backends()
    overrides = {k: v for k, v in {
        "max_step": args.max_step, "num_expansion": args.num_expansion, "stop_thresh": args.stop_thresh,
        "max_tokens": args.max_tokens, "min_rollout_tokens": args.min_rollout_tokens,
        "min_segment_chars": args.min_segment_chars,
    }.items() if v is not None}
    config = SearchConfig(**{**_profile_search(args.profile), **overrides})
    search = ReerSearch(generator, scorer, config, seed=args.seed)
    traces = []
    for item in progress.iterate(items, f"searching {len(items)} item{'s' * (len(items) > 1)}"):
        started = time.perf_counter()
        trace = search.run(item)
        traces.append(trace)
        _err(f"{item.item_id}: search took {time.perf_counter() - started:.1f}s: {trace.status}, "
             f"score {trace.initial_score} -> {trace.final_score}")
        if trace.status != "ok":
            _err(rejection_advice(trace, config))
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


def _key_values(items: list[str]) -> dict:
    """``key=value`` pairs with YAML values (``min_score=10``, ``strip=true``, ``languages=[en, zh]``)."""
    import yaml

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--option expects key=value, got {item!r}")
        try:
            options[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            options[key.strip()] = value
    return options


def cmd_ingest(args: argparse.Namespace) -> int:
    from reer_assets import progress
    from reer_assets.core.ingest.pipeline import ingest_path, ingest_summary, public_record
    from reer_assets.lib.domains import load_domains

    try:  # a domain of domains.yaml brings its languages and cleaning; any other name (adhoc) none
        spec = load_domains().get(args.domain) or {}
    except (OSError, ValueError):
        spec = {}

    def printed(rows):
        with progress.bar(f"ingesting {args.path}") as advance:
            for row in rows:
                if args.jsonl:
                    print(json.dumps(public_record(row), ensure_ascii=False), flush=True)
                advance(1, f"ingesting {args.path}: {row.get('status', 'read')} {row.get('id', '')}"[:100])
                yield row

    summary = ingest_summary(printed(ingest_path(args.reader, args.path, args.domain, _key_values(args.option), spec)))
    if args.jsonl:
        _err(json.dumps(summary))
    else:
        print(json.dumps(summary, indent=2))
    return 0


def cmd_synthesize_query(args: argparse.Namespace) -> int:
    from reer_assets.core.ingest.cleaning import detect_language, normalize_text
    from reer_assets.core.protocols import Sampling
    from reer_assets.core.synthesis import QueryQC, query_reasons
    from reer_assets.lib.profiles import profile

    text = normalize_text(_read(args.reference))
    language = detect_language(text)
    out: dict = {"language": language}
    if args.query is not None:  # a given request: passes through unchanged, still checked
        out.update(query=args.query, raw_output=None, model=None, synthesized=False)
    else:
        from reer_assets.backends.config import BackendSpec, load_generator
        from reer_assets.core.synthesis import synthesize_query

        settings = {**profile(args.profile)["synthesis"],
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
        _err(f"{out['status']} {reasons or ''}".strip())
    return 0


def _print_table(frame) -> None:
    import polars as pl

    with pl.Config(tbl_rows=200, tbl_cols=30, fmt_str_lengths=60, tbl_width_chars=200):
        print(frame)


def cmd_lineage_sql(args: argparse.Namespace) -> int:
    import duckdb

    from reer_assets.lib.duckdb_store import query

    try:
        frame = query(args.sql)
    except duckdb.Error as exc:
        _err(f"reer: SQL error: {exc}")
        return 2
    if args.json:
        print(frame.write_json())
    else:
        _print_table(frame)
    return 0


def cmd_lineage_trace(args: argparse.Namespace) -> int:
    from reer_assets.lib.duckdb_store import named_query, query

    frame = query(named_query("trace_row"), [args.row_id])
    if frame.is_empty():
        _err(f"no dataset row {args.row_id!r} in the lineage database")
        return 1
    row = frame.row(0, named=True)
    if args.json:
        print(json.dumps(row, default=str, ensure_ascii=False, indent=2))
        return 0
    chain = [
        ("dataset row", f"{row['dataset_row_id']} [{row['row_status']}] {row['reject_reasons'] or ''}".strip()),
        ("trajectory", f"{row['trajectory_id']} score {row['initial_score']} -> {row['final_score']} "
                       f"({row['num_steps']} steps; generator {row['generator_model']}, scorer {row['scorer_model']})"),
        ("query", f"{row['query_id']} ({'synthesized' if row['synthesized'] else 'given'}): {str(row['query'])[:100]}"),
        ("document", f"{row['document_id']} {row['title']!r} [{row['language']}] domain {row['domain']}"),
        ("source", f"{row['source_uri']}"),
    ]
    for label, text in chain:
        print(f"{label:>12}  {text}")
    return 0


def cmd_lineage_report(args: argparse.Namespace) -> int:
    import polars as pl

    from reer_assets.lib.duckdb_store import report

    sections = report(args.name)
    if args.json:
        print(json.dumps({"report": args.name, "sections": sections}, default=str, ensure_ascii=False))
        return 0
    for section in sections:
        print(f"## {section['name']}\n{section['description']}")
        _print_table(pl.DataFrame(section["rows"]) if section["rows"] else pl.DataFrame({"(no rows)": []}))
        print()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reer", description="REverse-Engineered Reasoning data engine",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    model = sub.add_parser("model", help="the embedded default model").add_subparsers(dest="action", required=True)
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

    ingest = sub.add_parser("ingest", help="read a file or folder with one source reader, clean it, print the records")
    ingest.add_argument("--reader", required=True, choices=["pairs", "book", "reer", "deepwriting", "generic", "inbox"])
    ingest.add_argument("path", help="a file, a folder, a glob or an fsspec URL")
    ingest.add_argument("--domain", default="adhoc", help="a domain of domains.yaml brings its languages and cleaning")
    ingest.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a reader option or cleaning setting (repeatable), e.g. prompt_field=title min_units=20")
    ingest.add_argument("--jsonl", action="store_true", help="one JSON object per record (summary on stderr)")
    ingest.set_defaults(func=cmd_ingest)

    synth = sub.add_parser("synthesize-query", help="write the request behind a text with the generator, and check it")
    synth.add_argument("--reference", required=True, help="file with the text")
    synth.add_argument("--query", help="check this given request instead of synthesizing one")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--profile", help="run profile for the sampling settings (default: REER_PROFILE or default)")
    synth.add_argument("--max-tokens", type=int)
    synth.add_argument("--max-chars", type=int, default=600, help="longest acceptable request")
    synth.add_argument("--max-copy-chars", type=int, default=60, help="longest span the request may copy from the text")
    synth.add_argument("--json", action="store_true")
    synth.set_defaults(func=cmd_synthesize_query)

    seg = sub.add_parser("segment", help="segment a text file by the REER rule")
    seg.add_argument("file")
    seg.add_argument("--json", action="store_true")
    seg.set_defaults(func=cmd_segment)

    score = sub.add_parser("score", help="clipped NLL of a reference given a query and a thinking")
    score.add_argument("--query", required=True)
    score.add_argument("--thinking", required=True, help="file with the thinking text")
    score.add_argument("--reference", required=True, help="file with the reference text")
    score.add_argument("--json", action="store_true")
    score.set_defaults(func=cmd_score)

    search = sub.add_parser("search", help="run the REER search on one item (or a JSONL file of items) and print "
                            "its trace", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    search.add_argument("--query")
    search.add_argument("--reference", help="file with the reference text")
    search.add_argument("--items", help="JSONL file, one item a line: query (or request), reference (or text), "
                        "optional item_id; --json prints one document with every trace")
    search.add_argument("--item-id", default="cli-item")
    search.add_argument("--seed", type=int, default=0)
    search.add_argument("--initial-thinking", help="file with a thinking to start from instead of sampling one "
                        "(it is segmented and searched as a sampled one)")
    search.add_argument("--profile", help="the profile whose search settings are the defaults (default: "
                        "REER_PROFILE, else 'default'); the flags below override them")
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
    lineage = sub.add_parser("lineage", help="query the lineage database").add_subparsers(dest="action", required=True)
    lsql = lineage.add_parser("sql", help="run a read-only SQL query and print a table")
    lsql.add_argument("sql")
    lsql.add_argument("--json", action="store_true")
    lsql.set_defaults(func=cmd_lineage_sql)
    ltrace = lineage.add_parser("trace", help="print the chain behind a dataset row")
    ltrace.add_argument("row_id")
    ltrace.add_argument("--json", action="store_true")
    ltrace.set_defaults(func=cmd_lineage_trace)
    lreport = lineage.add_parser("report", help="a named report: the SQL files under sql/queries/<name>/")
    lreport.add_argument("name", choices=["search"])
    lreport.add_argument("--json", action="store_true")
    lreport.set_defaults(func=cmd_lineage_report)
    serve = sub.add_parser("serve", help="start a vLLM OpenAI-compatible server for a role and print its settings")
    serve.add_argument("--model", default="embedded", help="a local model folder (default: the role's embedded model)")
    serve.add_argument("--checkpoint", help="a checkpoint id (lineage table checkpoints) or folder, full or a peft "
                       "LoRA adapter (served on its base with --enable-lora); served under its id (else folder name)")
    serve.add_argument("--role", default="generator", choices=["generator", "scorer", "judge"])
    serve.add_argument("--port", type=int, help="default: a free port")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    serve.add_argument("--log", help="server log file (default: a temporary folder)")
    serve.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the server to come up")
    serve.add_argument("--json", action="store_true", help="print one JSON document (with the settings) once it is up")
    serve.set_defaults(func=cmd_serve)
    export = sub.add_parser("export", help="write the current SFT dataset for TRL, LLaMA-Factory or "
                            "DeepWriting-20K (verl) tools, with a dataset card")
    export.add_argument("--format", required=True, choices=["trl", "sharegpt", "deepwriting", "reer-official"])
    export.add_argument("--domain", action="append", help="reer-official: a domain whose refined_trajectories "
                        "to write (repeatable; default every materialised one)")
    export.add_argument("--out", required=True, help="folder to write")
    export.add_argument("--tokenizer", help="tokenizer folder (or tokenizer.json) for the card's token statistics")
    export.add_argument("--json", action="store_true")
    export.set_defaults(func=cmd_export)
    recover = sub.add_parser("recover", help="mark runs whose worker died as failed and free their pool slots")
    recover.add_argument("--json", action="store_true", help="print one JSON document")
    recover.add_argument("--dry-run", action="store_true", help="only list the dead runs and what they hold")
    recover.add_argument("--run", action="append", metavar="RUN_ID",
                         help="reclaim this run too, even if its worker cannot be seen as dead (repeatable)")
    recover.set_defaults(func=cmd_recover)
    bench = sub.add_parser("bench", help="throughput benchmarks, measured side by side in one process")
    bench.add_argument("which", choices=["scoring", "search"])
    bench.add_argument("options", nargs=argparse.REMAINDER, help="options of the benchmark (see `reer bench X -h`)")
    bench.set_defaults(func=cmd_bench)
    add_eval_parser(sub)
    add_experiment_parser(sub)
    add_plan_parser(sub)
    add_import_parser(sub)
    return parser


def _checkpoint_server(ref: str) -> tuple[str, str, list[str], dict]:
    """(model folder to serve, served name, extra server flags, what was found) for a checkpoint id or folder.
    A full checkpoint is served as it is; a LoRA adapter (a peft folder) on its base with ``--enable-lora``,
    under the served name (the base under ``<name>-base``)."""
    from reer_assets.workloads.answering import LORA_RANKS, adapter_base, adapter_rank, find_checkpoint

    path, checkpoint_id = find_checkpoint(ref)
    served = checkpoint_id or Path(path).name
    base = adapter_base(path)
    found = {"id": checkpoint_id, "path": path, "adapter": "lora" if base else None, "base": base,
             "tokenizer": path if (Path(path) / "tokenizer_config.json").exists() else base or path}
    if not base:
        return path, served, [], found
    rank = next((r for r in LORA_RANKS if r >= adapter_rank(path)), LORA_RANKS[-1])
    return base, served, ["--enable-lora", "--max-lora-rank", str(rank), "--lora-modules", f"{served}={path}"], found


def cmd_serve(args: argparse.Namespace) -> int:
    """A vLLM OpenAI-compatible server for one role, with this machine's flags; prints the settings to use it."""
    import signal
    import tempfile

    from reer_assets.backends.vllm_server import on_cpu, start_vllm_server

    model = args.model
    if model == "embedded":
        from reer_assets.backends.config import BackendSpec, resolve_model_path

        model = resolve_model_path(BackendSpec(), args.role)[0]  # the judge, like the generator, is the generator build
    served, extra, checkpoint = args.role, [], None
    if args.checkpoint:
        model, served, extra, checkpoint = _checkpoint_server(args.checkpoint)
    cpu = on_cpu()
    log_path = Path(args.log or Path(tempfile.mkdtemp(prefix="reer-serve-")) / "vllm.log")
    _err(f"starting vLLM ({'CPU build: float32, eager, whole prefills' if cpu else 'GPU'}) for {model} "
         f"on {args.host}:{args.port or 'a free port'}; log {log_path}")
    server = start_vllm_server(model, args.port, log_path, host=args.host, cpu=cpu,
                               served_name=f"{served}-base" if checkpoint and checkpoint["adapter"] else served,
                               timeout_s=args.timeout, extra=extra)
    prefix = f"REER_{args.role.upper()}_"
    settings = {prefix + "BACKEND": "openai", prefix + "BASE_URL": server.base_url, prefix + "MODEL": served,
                prefix + "TOKENIZER": (checkpoint or {}).get("tokenizer") or model}
    if args.json:
        print(json.dumps({"role": args.role, "model": model, "base_url": server.base_url, "pid": server.process.pid,
                          "log": str(log_path), "env": settings,
                          **({"checkpoint": checkpoint, "served_model": served,
                              "server": f"{server.base_url}#{served}"} if checkpoint else {})}), flush=True)
    else:
        print("\n".join(f"export {k}={v}" for k, v in settings.items()), flush=True)
        _err("serving; Ctrl-C stops the server")
    stop = {"now": False}

    def _stop(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop["now"] and server.process.poll() is None:
            time.sleep(0.5)
    finally:
        server.stop()
    if server.process.returncode not in (0, -signal.SIGTERM, None) and not stop["now"]:
        _err(f"reer: the vLLM server exited with {server.process.returncode}:\n{server.log_tail(2000)}")
        return 1
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from reer_assets.lib.export import export

    written = export(args.format, Path(args.out), args.tokenizer, args.domain)
    if args.json:
        print(json.dumps(written, ensure_ascii=False))
    else:
        print(f"{written['rows']} rows of {written['version']} as {args.format} in {written['out']}: "
              f"{', '.join(written['files'])}")
    return 0


def cmd_recover(args: argparse.Namespace) -> int:
    from reer_assets.runtime.recovery import cmd_recover as recover

    return recover(args)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.which == "scoring":
        from reer_assets.perf.scoring import main as bench_main
    else:
        from reer_assets.perf.search import main as bench_main
    return bench_main(args.options)


EPILOG = """exit codes:
  0    done (with --json: one JSON document on stdout; logs and progress on stderr)
  1    the command ran but found nothing or its server died (no such dataset row or experiment;
       reer serve: the vLLM server exited)
  2    usage or configuration error (a bad option, an unknown backend, a missing file, bad SQL,
       DAGSTER_HOME not set)
  3    reer search: the item was rejected (with --items: every item); stderr says why and what to try
  130  interrupted (Ctrl-C)
"""


@contextlib.contextmanager
def _output_only_on_stdout():
    """With --json the document is all that reaches stdout: file descriptor 1 (where C libraries,
    engine processes and their children write) is pointed at stderr for the command's duration, and
    ``sys.stdout`` writes to the real stdout."""
    sys.stdout.flush()
    real = os.dup(1)
    os.dup2(2, 1)
    saved, sys.stdout = sys.stdout, open(real, "w", encoding="utf-8", closefd=False)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stdout.close()
        sys.stdout = saved
        os.dup2(real, 1)
        os.close(real)


def _close_engines() -> None:
    """Shut down in-process vLLM engines before the interpreter does (which can abort the process)."""
    engines = sys.modules.get("reer_assets.backends.vllm_engine")
    if engines is not None:
        engines.close_all()


def main(argv: list[str] | None = None) -> int:
    from reer_assets import progress

    args = build_parser().parse_args(argv)
    machine = bool(getattr(args, "json", False))
    # vLLM logs to stdout by default; the CLI's stdout is for results only
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    progress.enable(not machine)
    try:
        with _output_only_on_stdout() if machine else contextlib.nullcontext():
            try:
                return args.func(args)
            finally:
                _close_engines()
    except (FileNotFoundError, ValueError, NotImplementedError) as exc:
        _err(f"reer: error: {exc}")
        return 2
    except KeyboardInterrupt:
        _err("reer: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
