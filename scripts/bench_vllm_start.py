"""How long vLLM on the CPU takes to start with its default executor (``mp``) and with
``REER_VLLM_CPU_EXECUTOR=uni`` (docs/performance.md, "Starting vLLM on the CPU"). A benchmark, not a test.

    .venv/bin/python scripts/bench_vllm_start.py [--repeats 2] [--json]

Side by side in one run, alternating the two settings each repeat, on the embedded generator:

* **server**: the OpenAI server as the tests and ``reer serve`` start it (``vllm_server.start_vllm_server``),
  timed until ``/v1/models`` answers;
* **engine**: an in-process ``vllm.LLM`` (``vllm_engine.VLLMEngine``), timed around its construction, each in
  a fresh interpreter so that no import is shared between the two settings.

Each start then answers one 8-token greedy request, whose text is printed so the two settings can be seen to
agree, and is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENGINE_CHILD = """
import json, sys, time
from reer_assets.backends.vllm_engine import EngineSettings, VLLMEngine
from vllm import SamplingParams
def main():
    began = time.monotonic()
    engine = VLLMEngine(EngineSettings(sys.argv[1]))
    seconds = time.monotonic() - began
    text = engine.llm.generate(["Hello"], SamplingParams(max_tokens=8, temperature=0.0), use_tqdm=False)[0].outputs[0].text
    engine.close()
    print(json.dumps({"seconds": seconds, "text": text}))
if __name__ == "__main__":
    main()
"""


def _server(model: str, executor: str) -> dict:
    import urllib.request

    from reer_assets.backends.vllm_server import start_vllm_server

    os.environ["REER_VLLM_CPU_EXECUTOR"] = executor
    with tempfile.TemporaryDirectory() as folder:
        began = time.monotonic()
        server = start_vllm_server(model, None, Path(folder) / "server.log", timeout_s=600)
        seconds = time.monotonic() - began
        try:
            body = json.dumps({"model": model, "prompt": "Hello", "max_tokens": 8, "temperature": 0.0}).encode()
            request = urllib.request.Request(f"{server.base_url}/completions", data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=120) as response:
                text = json.loads(response.read())["choices"][0]["text"]
        finally:
            server.stop()
    return {"seconds": seconds, "text": text}


def _engine(model: str, executor: str) -> dict:
    env = {**os.environ, "REER_VLLM_CPU_EXECUTOR": executor, "VLLM_LOGGING_LEVEL": "WARNING"}
    out = subprocess.run([sys.executable, "-c", ENGINE_CHILD, model], capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"the engine child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args()
    from reer_assets.backends.embedded import ensure_embedded_model

    model = str(ensure_embedded_model())
    rows = []
    for repeat in range(args.repeats):
        for kind, start in (("server", _server), ("engine", _engine)):
            for executor in ("mp", "uni"):
                result = start(model, executor)
                rows.append({"kind": kind, "executor": executor, "repeat": repeat, **result})
                if not args.json:
                    print(f"{kind:<7} {executor:<4} repeat {repeat}: {result['seconds']:6.1f} s  "
                          f"answer {result['text']!r}", flush=True)
    summary = {}
    for kind in ("server", "engine"):
        mean = {e: sum(r["seconds"] for r in rows if r["kind"] == kind and r["executor"] == e) / args.repeats
                for e in ("mp", "uni")}
        summary[kind] = {"mp_s": round(mean["mp"], 1), "uni_s": round(mean["uni"], 1),
                         "uni_over_mp": round(mean["uni"] / mean["mp"], 2),
                         "same_answers": len({r["text"] for r in rows if r["kind"] == kind}) == 1}
    if args.json:
        print(json.dumps({"rows": rows, "summary": summary}, indent=2))
        return
    for kind, s in summary.items():
        print(f"{kind}: mp {s['mp_s']} s, uni {s['uni_s']} s, uni/mp {s['uni_over_mp']}×, "
              f"same answers: {s['same_answers']}")


if __name__ == "__main__":
    main()
