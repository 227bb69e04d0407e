"""transformers backend: a sampling Generator and a batched, padding-safe Scorer.

Works on CPU (float32) and CUDA (bfloat16). The scorer projects hidden states to
vocabulary logits only at the positions that predict scored tokens, which is what
the objective needs and far less memory than full-sequence logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from reer_assets.core.protocols import Completion, GenerationRequest, Message, ScoreRequest, ScoreResult


class PromptTooLongError(ValueError):
    """The prompt does not fit the model's context: retrying cannot help."""


def pick_device(device: str | None = None) -> str:
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(device: str, dtype: str | None = None) -> torch.dtype:
    if dtype:
        return getattr(torch, dtype)
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


@dataclass
class LoadedModel:
    """A tokenizer and a causal LM loaded once and shared by a generator and a scorer."""

    path: str
    tokenizer: PreTrainedTokenizerBase
    model: torch.nn.Module
    device: str

    @classmethod
    def load(cls, path: str | Path, device: str | None = None, dtype: str | None = None) -> "LoadedModel":
        device = pick_device(device)
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=pick_dtype(device, dtype))
        model.to(device).eval()
        return cls(str(path), tokenizer, model, device)

    @property
    def context_length(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 4096))

    def render(self, messages: list[Message], assistant_text: str = "") -> str:
        """Chat-template text for ``messages`` with an open assistant turn, plus ``assistant_text``."""
        prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return prompt + assistant_text

    def encode(self, text: str, **kwargs):
        return self.tokenizer(text, add_special_tokens=False, **kwargs)


class HFGenerator:
    """Samples ``n`` continuations of a chat prompt with an optional assistant prefill."""

    def __init__(self, loaded: LoadedModel, model_id: str | None = None):
        self.loaded = loaded
        self.model_id = model_id or loaded.path

    @torch.inference_mode()
    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        return [self._generate_one(request) for request in requests]

    def _generate_one(self, request: GenerationRequest) -> list[Completion]:
        lm, tok = self.loaded, self.loaded.tokenizer
        input_ids = torch.tensor([lm.encode(lm.render(request.messages, request.prefill))["input_ids"]], device=lm.device)
        prompt_len = input_ids.shape[1]
        room = lm.context_length - prompt_len
        if room <= 0:
            raise PromptTooLongError(f"prompt of {prompt_len} tokens exceeds the context of {lm.context_length}")
        s = request.sampling
        torch.manual_seed(request.seed)
        kwargs = dict(
            max_new_tokens=min(s.max_tokens, room),
            num_return_sequences=request.n,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
            eos_token_id=tok.eos_token_id,
        )
        if s.temperature > 0:
            kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)
        else:
            kwargs.update(do_sample=False)
        if s.stop:
            kwargs.update(stop_strings=list(s.stop), tokenizer=tok)
        output = lm.model.generate(input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
        completions = []
        for row in output[:, prompt_len:].tolist():
            finish = "length"
            if tok.eos_token_id in row:
                row = row[: row.index(tok.eos_token_id)]
                finish = "stop"
            text = tok.decode(row, skip_special_tokens=False)
            if s.stop:
                for stop in s.stop:
                    if stop in text:
                        text, finish = text[: text.index(stop)], "stop"
            completions.append(Completion(text, len(row), prompt_len, finish))
        return completions


class HFScorer:
    """Log-probs of each request's continuation tokens, batched with right padding."""

    def __init__(self, loaded: LoadedModel, model_id: str | None = None, batch_size: int = 4, span_only: bool = True):
        self.loaded = loaded
        self.model_id = model_id or loaded.path
        self.batch_size = batch_size
        self.span_only = span_only

    def tokenize(self, request: ScoreRequest) -> tuple[list[int], int]:
        """Token ids of the whole text and the index of the first scored token.

        A token is scored when its first character lies inside the continuation, found
        through the tokenizer's offset mapping.
        """
        context = self.loaded.render(request.messages, request.prefix)
        enc = self.loaded.encode(context + request.continuation, return_offsets_mapping=True)
        boundary = len(context)
        first = next((i for i, (start, _) in enumerate(enc["offset_mapping"]) if start >= boundary), len(enc["input_ids"]))
        return enc["input_ids"], max(first, 1)

    @torch.inference_mode()
    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        encoded = [self.tokenize(r) for r in requests]
        for ids, _ in encoded:
            if len(ids) > self.loaded.context_length:
                raise PromptTooLongError(f"scoring text of {len(ids)} tokens exceeds the context of {self.loaded.context_length}")
        results: list[ScoreResult | None] = [None] * len(requests)
        order = sorted(range(len(requests)), key=lambda i: len(encoded[i][0]))
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            for i, logprobs in zip(batch, self._score_batch([encoded[i] for i in batch])):
                results[i] = ScoreResult(token_logprobs=logprobs, context_tokens=encoded[i][1])
        return results  # type: ignore[return-value]

    def _score_batch(self, batch: list[tuple[list[int], int]]) -> list[list[float]]:
        lm = self.loaded
        width = max(len(ids) for ids, _ in batch)
        pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, _) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
        input_ids, attention = input_ids.to(lm.device), attention.to(lm.device)
        if self.span_only:
            decoder = getattr(lm.model, lm.model.base_model_prefix)
            hidden = decoder(input_ids=input_ids, attention_mask=attention).last_hidden_state
            head = lm.model.get_output_embeddings()
        else:
            logits_full = lm.model(input_ids=input_ids, attention_mask=attention).logits
        out = []
        for row, (ids, first) in enumerate(batch):
            targets = input_ids[row, first : len(ids)]
            if self.span_only:
                logits = head(hidden[row, first - 1 : len(ids) - 1]).float()
            else:
                logits = logits_full[row, first - 1 : len(ids) - 1].float()
            logprobs = torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None]).squeeze(-1)
            out.append(logprobs.tolist())
        return out
