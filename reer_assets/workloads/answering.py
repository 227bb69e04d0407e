"""Benchmark answers through the run's backend: the one answering path of ``benchmark_scores``,
``ablation_results`` and ``reer eval answer``.

Backends (an answering spec is a :class:`BackendSpec`'s fields; default: the generator role's):

* ``hf`` (also ``embedded``): transformers in process, one request at a time;
* ``vllm``: the engine in process, ``max_in_flight`` requests in it at once; a full checkpoint folder is
  loaded as it is, a LoRA checkpoint (a peft folder with ``adapter_config.json``) runs as an adapter on an
  engine over its base started with ``enable_lora``, so the base and every adapter of it share one engine
  (docs/evaluation.md, "Answering": why adapter and not merge);
* ``openai``: an OpenAI-compatible server per checkpoint (``servers``: a checkpoint's label, id, model id
  or path, or ``*``, maps to ``{base_url, model}``; ``reer serve --checkpoint`` starts one), with
  ``max_in_flight`` requests in flight.

A checkpoint is loaded once for all its items. The held-out NLL (items with a reference) is scored on
the same loaded model for ``hf`` and for ``vllm`` with a full checkpoint (prompt log-probs on the same
engine); otherwise (an engine with LoRA, whose prompt log-probs vLLM 0.32 cannot compute on the CPU, or a
server) in process with transformers on the checkpoint's local folder (an adapter merged in memory).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from reer_assets.backends.config import ENV_FIELDS, BackendSpec
from reer_assets.core.chat_format import THINK_OPEN, inference_messages
from reer_assets.core.evaluation import benchmarks as bench
from reer_assets.core.evaluation.metrics import check_format, length_score
from reer_assets.core.ids import stable_id
from reer_assets.core.language import length_units
from reer_assets.core.objective import build_score_request, score_of
from reer_assets.core.protocols import GenerationRequest, Sampling
from reer_assets.core.refinement import derive_seed
from reer_assets.core.segment import segment

ANSWER_BACKENDS = ("hf", "vllm", "openai")
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # what vLLM's max_lora_rank accepts (1 too)


def answer_backend(fields: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """An answering spec: BackendSpec fields (the generator role's, from the defs' extras) with this run's
    overrides. ``embedded`` answers as ``hf``: every checkpoint is a model of its own. The key's variable
    is named, never its value."""
    values = {k: v for k, v in (fields or {}).items() if k in ENV_FIELDS and v is not None}
    values.update({k: v for k, v in overrides.items() if k in ENV_FIELDS and v is not None})
    backend = values.get("backend") or "hf"
    values["backend"] = "hf" if backend == "embedded" else backend
    if values["backend"] not in ANSWER_BACKENDS:
        raise ValueError(f"unknown answering backend {values['backend']!r}: choose one of {', '.join(ANSWER_BACKENDS)}")
    values.pop("model", None)  # the model is each checkpoint's own
    values.pop("tokenizer", None)
    return values


def adapter_base(path: str | Path) -> str | None:
    """The base model of a peft adapter folder (LoRA), or None for a full checkpoint."""
    config = Path(path) / "adapter_config.json"
    if not config.exists():
        return None
    base = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{config} names no base_model_name_or_path")
    return str(base)


def adapter_rank(path: str | Path) -> int:
    raw = json.loads((Path(path) / "adapter_config.json").read_text(encoding="utf-8"))
    ranks = [int(raw.get("r") or 8), *(int(r) for r in (raw.get("rank_pattern") or {}).values())]
    return max(ranks)


def find_checkpoint(ref: str, db: str | None = None) -> tuple[str, str | None]:
    """(folder, checkpoint id) of ``ref``: a local folder, or a checkpoint id in the lineage ``checkpoints``
    table (fine-tuned and ablation checkpoints). Raises FileNotFoundError naming both places."""
    if Path(ref).is_dir():
        return str(Path(ref).resolve()), None
    import duckdb

    from reer_assets.lib.duckdb_store import query

    try:
        frame = query("SELECT id, path FROM checkpoints WHERE id = ? ORDER BY recorded_at DESC LIMIT 1", [ref],
                      path=Path(db) if db else None)
    except (duckdb.Error, FileNotFoundError) as exc:
        raise FileNotFoundError(f"{ref!r} is not a folder and the lineage database could not be read ({exc})") from exc
    if not frame.height:
        raise FileNotFoundError(f"{ref!r} is neither a model folder nor a checkpoint id in the lineage table checkpoints")
    path = frame["path"][0]
    if not path or not Path(path).is_dir():
        raise FileNotFoundError(f"checkpoint {ref} points at {path!r}, which is not a folder here")
    return str(path), ref


def load_bundled(path: str | Path) -> list[dict[str, Any]]:
    """A file in the bundled prompts' layout (``{id, prompt, domain?, language?, required_length?,
    reference?}`` per line), normalised like the other adapters; bad lines are rejected with reasons."""
    rows, seen = [], set()
    for line, obj, error in bench._lines(path):
        if error or not isinstance(obj, dict):
            rows.append(bench._row("bundled", line, id=f"bundled-{line:04d}", reasons=[error or "not_an_object"]))
            continue
        reasons: list[str] = []
        item_id = obj.get("id")
        if item_id in (None, ""):
            reasons.append("missing_field:id")
        elif str(item_id) in seen:
            reasons.append(f"duplicate_id:{item_id}")
        prompt = bench._text(obj, "prompt", reasons)
        length = obj.get("required_length")
        if length is not None and (length := bench._positive_int(length)) is None:
            reasons.append("bad_field:required_length")
        reference = obj.get("reference")
        if reference is not None and not isinstance(reference, str):
            reasons.append("bad_field:reference")
        seen.add(str(item_id))
        rows.append(bench._row("bundled", line, id=str(item_id if item_id not in (None, "") else f"bundled-{line:04d}"),
                               language=bench._language(obj.get("language"), prompt), prompt=prompt,
                               required_length=length, reasons=reasons, reference=reference or None,
                               meta={"domain": obj.get("domain")}))
    return rows


def load_file(fmt: str, path: str | Path) -> list[dict[str, Any]]:
    return load_bundled(path) if fmt == "bundled" else bench.load_benchmark(fmt, path)


@dataclasses.dataclass
class Opened:
    """One checkpoint on the answering backend: its generator, a scorer made on first use, the id it
    is recorded under, and how it is served."""

    generator: Any
    model_id: str
    how: dict[str, Any]
    make_scorer: Any
    _scorer: Any = None

    def scorer(self) -> Any:
        if self._scorer is None:
            self._scorer = self.make_scorer()
        return self._scorer


class Answerer:
    """Opens checkpoints on one answering backend, one at a time; an engine or loaded model is kept while
    the next checkpoint can use it (a vLLM engine over a base serves that base and its adapters).

    ``models``: every checkpoint this run will open (``{path, ...}``), so that an engine over a base is
    started with ``enable_lora`` (and a rank large enough) when an adapter of it will follow.
    """

    def __init__(self, backend: dict[str, Any] | None = None, servers: dict[str, dict[str, Any]] | None = None,
                 models: list[dict[str, Any]] | None = None):
        self.backend = answer_backend(backend)
        self.servers = servers or {}
        self._lora_ranks: dict[str, int] = {}
        for model in models or []:
            base = model.get("base") or adapter_base(model["path"])
            if base:
                self._lora_ranks[base] = max(self._lora_ranks.get(base, 0), adapter_rank(model["path"]))
        self._engine: Any = None
        self._engine_key: tuple | None = None
        self._loaded: Any = None
        self._loaded_path: str | None = None

    @property
    def kind(self) -> str:
        return self.backend["backend"]

    @property
    def max_in_flight(self) -> int:
        return int(self.backend.get("max_in_flight") or BackendSpec.max_in_flight)

    def open(self, model: dict[str, Any]) -> Opened:
        path = str(model["path"])
        base = model.get("base") or (adapter_base(path) if Path(path).is_dir() else None)
        if self.kind == "vllm":
            return self._open_vllm(path, base)
        if self.kind == "openai":
            return self._open_openai(model, path, base)
        loaded = self._hf(path, base)
        from reer_assets.backends.hf import HFGenerator, HFScorer

        ident = f"hf:{path}"
        return Opened(HFGenerator(loaded, ident), ident, {"backend": "hf", "adapter": "merged in memory" if base else None,
                                                          "in_flight": 1}, lambda: HFScorer(loaded, ident))

    def _hf(self, path: str, base: str | None):
        """transformers, one model at a time; a LoRA adapter merged into its base in memory."""
        if self._loaded_path != path:
            self._loaded = None  # free the previous one first
            self._loaded = load_hf(path, base, self.backend.get("device"))
            self._loaded_path = path
        return self._loaded

    def _open_vllm(self, path: str, base: str | None) -> Opened:
        from reer_assets.backends.vllm_engine import EngineSettings, VLLMEngine, VLLMGenerator, VLLMScorer

        engine_path = base or path
        rank = self._lora_ranks.get(engine_path) or (adapter_rank(path) if base else 0)
        key = (engine_path, bool(rank))
        if self._engine_key != key:
            self.close()
            self._engine = VLLMEngine(EngineSettings(
                engine_path, gpu_memory_utilization=self.backend.get("gpu_memory_utilization"), enable_lora=bool(rank),
                max_lora_rank=next((r for r in LORA_RANKS if r >= rank), LORA_RANKS[-1]) if rank else 16))
            self._engine_key = key
        engine, adapter = self._engine, path if base else None
        ident = f"vllm:{path}"

        def scorer():
            if not engine.settings.enable_lora:
                return VLLMScorer(engine, ident)
            # vLLM 0.32's LoRA logits processor fails on prompt log-probs on the CPU (a shape error in
            # bgmv_shrink, then EngineDeadError): an engine with LoRA scores nothing; transformers does
            from reer_assets.backends.hf import HFScorer

            return HFScorer(self._hf(path, base), f"hf:{path}")

        return Opened(VLLMGenerator(engine, ident, adapter=adapter, max_in_flight=self.max_in_flight), ident,
                      {"backend": "vllm", "engine": engine_path, "adapter": "lora" if adapter else None,
                       "in_flight": self.max_in_flight}, scorer)

    def server_of(self, model: dict[str, Any]) -> dict[str, Any]:
        for key in (model.get("label"), model.get("checkpoint_id"), model.get("model_id"), model.get("path"), "*"):
            if key is not None and str(key) in self.servers:
                server = self.servers[str(key)]
                if isinstance(server, str):  # "URL" or "URL#served name"
                    url, _, name = server.partition("#")
                    return {"base_url": url, "model": name or None}
                return dict(server)
        raise ValueError(f"no server for {model.get('label') or model.get('path')}: map its label, checkpoint id or "
                         "path to {base_url, model} in the run's servers (`reer serve --checkpoint ID` starts one), "
                         "or answer with backend vllm or hf")

    def _open_openai(self, model: dict[str, Any], path: str, base: str | None) -> Opened:
        from reer_assets.backends.openai_compat import OpenAIClient, OpenAIGenerator

        server = self.server_of(model)
        local = Path(path).is_dir()
        fields = {k: v for k, v in self.backend.items() if k != "backend"}
        spec = BackendSpec(**{**fields, "backend": "openai", "base_url": server["base_url"], "model": server.get("model"),
                              "tokenizer": (base if base and not (Path(path) / "tokenizer.json").exists() else path)
                              if local else None})
        client = OpenAIClient(spec)
        ident = f"openai:{client.model}"

        def scorer():
            if not local:
                return None  # nothing local to score with: heldout NLL stays empty
            from reer_assets.backends.hf import HFScorer  # torch only when held-out NLL is scored

            loaded = self._hf(path, base)
            return HFScorer(loaded, f"hf:{path}")

        return Opened(OpenAIGenerator(client, ident), ident, {"backend": "openai", "base_url": server["base_url"],
                                                              "served_model": client.model, "in_flight": self.max_in_flight},
                      scorer)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
        self._engine, self._engine_key = None, None

    def __enter__(self) -> "Answerer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
        self._loaded, self._loaded_path = None, None


def load_hf(path: str, base: str | None = None, device: str | None = None):
    """A LoadedModel of a full checkpoint, or of a LoRA adapter merged into its base (in memory only)."""
    from reer_assets.backends.hf import LoadedModel

    if base is None:
        return LoadedModel.load(path, device=device)
    from peft import PeftModel
    from transformers import AutoTokenizer

    loaded = LoadedModel.load(base, device=device)
    merged = PeftModel.from_pretrained(loaded.model, path).merge_and_unload().eval()
    tokenizer = AutoTokenizer.from_pretrained(path) if (Path(path) / "tokenizer_config.json").exists() else loaded.tokenizer
    return LoadedModel(path, tokenizer, merged, loaded.device)


def domain_of(item: dict[str, Any]) -> str:
    meta = item.get("meta") or {}
    return str(meta.get("domain") or meta.get("domain1") or meta.get("category") or item["benchmark"])


def answer_items(spec: dict[str, Any], items: list[dict[str, Any]], cfg: dict[str, Any], log: Any,
                 answerer: Answerer | None = None) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """One model's answers to every item (all requests handed to the backend at once, so it keeps
    ``max_in_flight`` busy), the metrics that need no judge, its token counts per benchmark, and how it
    was answered (backend model id, requests in flight, seconds, answers/min, completion tokens/s)."""
    own = answerer is None
    answerer = answerer or Answerer()
    try:
        opened = answerer.open(spec)
        sampling = Sampling(cfg["temperature"], cfg.get("top_p", 1.0), cfg.get("top_k", 0), cfg["max_tokens"])
        requests = [GenerationRequest(inference_messages(item["prompt"]), prefill=THINK_OPEN, n=1, sampling=sampling,
                                      seed=derive_seed(cfg["seed"], item["id"], "bench")) for item in items]
        started = time.perf_counter()
        completions = [c[0] for c in opened.generator.generate(requests)] if requests else []
        seconds = time.perf_counter() - started
        rows, tokens, scored = [], {}, []
        for item, completion in zip(items, completions):
            output = THINK_OPEN + completion.text
            fmt = check_format(output)
            produced = length_units(fmt.answer, item["language"] or "en")
            used = tokens.setdefault(item["benchmark"], {"prompt": 0, "completion": 0, "scored": 0})
            used["prompt"] += completion.prompt_tokens
            used["completion"] += completion.completion_tokens
            required = item.get("required_length")
            rows.append({
                "id": stable_id("bench", spec["model_id"], item["benchmark"], item["id"], cfg),
                "checkpoint_id": spec.get("checkpoint_id"), "model_label": spec["label"], "model": spec["model_id"],
                "benchmark": item["benchmark"], "prompt_id": str(item["id"]), "domain": domain_of(item),
                "language": item["language"], "required_length": required, "output_length": produced,
                "length_score": length_score(required, produced) if required else None, "format_ok": fmt.adherent,
                "heldout_nll": None, "heldout_nll_own_thinking": None, "output": output,
            })
            if item.get("reference"):
                reference = segment(item["reference"])
                # no thinking, then the model's own (its text up to </think>, or all of it when unclosed)
                scored.append((len(rows) - 1, [build_score_request(item["prompt"], "", reference),
                                               build_score_request(item["prompt"], fmt.thinking.removeprefix("\n"),
                                                                   reference)]))
        scorer = opened.scorer() if scored else None
        if scorer is not None:
            for k, pair in scored:
                results = scorer.score(pair)
                rows[k]["heldout_nll"], rows[k]["heldout_nll_own_thinking"] = (score_of(r) for r in results)
                tokens[rows[k]["benchmark"]]["scored"] += sum(len(r.token_logprobs) for r in results)
        completion_tokens = sum(c.completion_tokens for c in completions)
        answering = {**opened.how, "model": opened.model_id, "answers": len(completions),
                                "seconds": round(seconds, 2), "completion_tokens": completion_tokens,
                                "answers_per_min": round(60 * len(completions) / seconds, 2) if seconds else None,
                                "completion_tokens_per_s": round(completion_tokens / seconds, 1) if seconds else None}
        log(f"{spec['label']}: {len(items)} items answered by {opened.model_id} in {seconds:.1f}s "
            f"({opened.how.get('in_flight')} in flight)")
        return rows, tokens, answering
    finally:
        if own:
            answerer.__exit__(None, None, None)
