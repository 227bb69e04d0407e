"""`reer serve`: a vLLM OpenAI-compatible server for one role (or a checkpoint), with the settings to use it."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from reer_assets.cli.common import err


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
    err(f"starting vLLM ({'CPU build: float32, eager, whole prefills' if cpu else 'GPU'}) for {model} "
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
        err("serving; Ctrl-C stops the server")
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
        err(f"reer: the vLLM server exited with {server.process.returncode}:\n{server.log_tail(2000)}")
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve``."""
    serve = subparsers.add_parser("serve", help="start a vLLM OpenAI-compatible server for a role and print its settings")
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
