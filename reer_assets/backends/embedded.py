"""The embedded default model: a tiny Llama the project trains itself, offline, on CPU.

It exists so that every code path (loading, sampling, scoring, fine-tuning, serving
through vLLM) runs for real without a download. It learns the engine's exact prompt
formats from the bundled worked examples; its prose is not good writing.

Builds are keyed by a hash of the bundled data, the prompt set and the config, kept in
a per-user cache (``REER_CACHE_DIR``, default ``~/.cache/reer-assets``) and copied to
``$DAGSTER_HOME/models/embedded/<key>``; an existing build is reused.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

from reer_assets import data, settings
from reer_assets.core.chat_format import THINK_OPEN, assistant_turn
from reer_assets.core.file_lock import file_lock
from reer_assets.core.prompts import BUNDLED, PROMPT_SET_VERSION, prompts_for
from reer_assets.core.refinement import RECOMPOSE_SEPARATOR, is_draft
from reer_assets.core.segment import segment

BUILDER_VERSION = "embedded-v5"
EOS = "<|im_end|>"
PAD = "<|endoftext|>"
SPECIAL_TOKENS = [PAD, "<|im_start|>", EOS, "<think>", "</think>", "<answer>", "</answer>",
                  "<analyze>", "</analyze>", "<refine>", "</refine>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class EmbeddedConfig:
    vocab_size: int = 4096
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    context_length: int = 4096
    train_steps: int = 750
    batch_tokens: int = 2048
    learning_rate: float = 4e-3
    warmup_steps: int = 20
    inference_examples: int = 10  # worked (query, thinking, answer) examples in the inference format
    # Training keeps only the last N prompt tokens (the instructions and the text nearest the answer):
    # several times more epochs in the same minutes; the model still sees full prompts at inference.
    max_prompt_tokens: int = 384
    seed: int = 1234


DEFAULT_CONFIG = EmbeddedConfig()


@dataclass(frozen=True)
class TrainingExample:
    kind: str  # initial_thinking | segment_edit | query_synthesis | inference
    messages: list[dict[str, str]]
    completion: str  # the assistant turn, starting where the engine's prefill starts


# -- worked examples rendered in the engine's exact prompt formats -------------------------------


def training_examples(inference_examples: int | None = None) -> list[TrainingExample]:
    inference_examples = DEFAULT_CONFIG.inference_examples if inference_examples is None else inference_examples
    pieces = data.pieces_by_id()
    thinking = {row["id"]: row for row in data.initial_thinking_examples()}
    examples: list[TrainingExample] = []
    spread = list(range(0, len(thinking), 3)) + [k for k in range(len(thinking)) if k % 3]
    with_inference = set(spread[:inference_examples])  # every third example first: all domains, both languages
    for k, row in enumerate(thinking.values()):
        piece = pieces[row["piece_id"]]
        prompts = prompts_for(row["query"], BUNDLED)
        examples.append(TrainingExample(
            "initial_thinking",
            prompts.initial_thinking_messages(row["query"], piece["text"]),
            THINK_OPEN + row["thinking"] + "\n</think>",
        ))
        if k in with_inference:
            examples.append(TrainingExample(
            "inference",
            prompts.inference_messages(row["query"]),
            assistant_turn(row["thinking"], piece["text"]),
            ))
    for row in data.segment_edit_examples():
        source = thinking[row["thinking_id"]]
        examples.append(_edit_example(row, source, pieces[source["piece_id"]]))
    for piece in pieces.values():
        if piece.get("request_given") and piece.get("request"):
            examples.append(TrainingExample(
                "query_synthesis", prompts_for(piece["text"], BUNDLED).query_synthesis_messages(piece["text"]), piece["request"]
            ))
    return examples


def _edit_example(row: dict, source: dict, piece: dict) -> TrainingExample:
    """A segment edit as the search sends it: the weak paragraph marked, the good one as answer."""
    paragraphs = source["thinking"].split("\n\n")
    original = paragraphs[row["segment_index"]]
    paragraphs[row["segment_index"]] = row["weak_segment"]
    weak = [s.strip() for s in segment("\n\n".join(paragraphs)).segments]
    target = next(i for i, s in enumerate(weak) if row["weak_segment"] in s)
    refined = weak[target].replace(row["weak_segment"], row["refined"] or original)
    after = [s.strip() for s in segment(source["thinking"]).segments][target + 1 :]
    prompts = prompts_for(source["query"], BUNDLED)
    messages = prompts.segment_edit_messages(
        source["query"], piece["text"], weak[:target], weak[target], after,
        is_draft(weak, target), RECOMPOSE_SEPARATOR,
    )
    completion = f"{prompts.edit_prefill}{row['analysis']}\n</analyze>\n<refine>\n{refined}\n</refine>"
    return TrainingExample("segment_edit", messages, completion)


def tokenizer_texts() -> Iterator[str]:
    for example in training_examples():
        for message in example.messages:
            yield message["content"]
        yield example.completion
    for piece in data.corpus():
        yield piece["text"]


# -- cache keys and locations ------------------------------------------------------------------


def build_key(config: EmbeddedConfig = DEFAULT_CONFIG) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"config": asdict(config), "prompts": PROMPT_SET_VERSION, "builder": BUILDER_VERSION,
                              "template": CHAT_TEMPLATE, "special": SPECIAL_TOKENS}, sort_keys=True).encode())
    for path in data.data_files():
        if "benchmark" in path.parts:
            continue  # held out: the model never sees benchmark references
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_root() -> Path:
    return settings.cache_dir()


def instance_root(kind: str = "embedded") -> Path:
    return settings.dagster_home() / "models" / kind


def _copy_atomically(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}."))
    shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    os.replace(tmp, dst)


def ensure_build(kind: str, key: str, build: Callable[[Path], object], log=print, what: str = "") -> Path:
    """Path of build ``kind/key``: reused from the instance or the per-user cache, else built.

    ``build(out_dir)`` writes the model and a ``build.json`` into a fresh temporary folder beside
    the cached one, which is then renamed into place (atomic); a file lock keeps two processes
    from building the same key at once. The cached build is copied to the instance the same way.
    """
    target = instance_root(kind) / key
    if (target / "build.json").exists():
        return target
    cached = cache_root() / kind / key
    with file_lock(cache_root() / kind / f".{key}.lock"):
        if not (cached / "build.json").exists():
            log(f"building {kind} model {key}{f' ({what})' if what else ''} ...")
            tmp = Path(tempfile.mkdtemp(dir=cached.parent, prefix=f".{key}."))
            build(tmp)
            os.replace(tmp, cached)
        if not (target / "build.json").exists():
            _copy_atomically(cached, target)
    return target


def ensure_embedded_model(config: EmbeddedConfig = DEFAULT_CONFIG, log=print) -> Path:
    """Path of a built embedded model for ``config``: reused from the instance or cache, else built."""
    return ensure_build("embedded", build_key(config), lambda out: train_embedded(config, out, log=log), log=log,
                        what=f"about {config.train_steps} steps")


# -- the build itself ---------------------------------------------------------------------------


def train_tokenizer(config: EmbeddedConfig = DEFAULT_CONFIG):
    """The byte-level BPE tokenizer with the chat markers and REER tags as special tokens (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(tokenizer_texts(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=PAD,
        additional_special_tokens=SPECIAL_TOKENS[3:], chat_template=CHAT_TEMPLATE,
        model_max_length=config.context_length, clean_up_tokenization_spaces=False,
    )


def tokenizer_key(config: EmbeddedConfig = DEFAULT_CONFIG) -> str:
    """A hash of everything :func:`train_tokenizer` depends on (another builder sharing it puts it in its key)."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"vocab_size": config.vocab_size, "context_length": config.context_length,
                              "prompts": PROMPT_SET_VERSION, "template": CHAT_TEMPLATE, "special": SPECIAL_TOKENS,
                              "builder": BUILDER_VERSION}, sort_keys=True).encode())
    for path in data.data_files():
        if "benchmark" in path.parts:
            continue
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _batches(lengths: list[int], batch_tokens: int, rng: random.Random) -> list[list[int]]:
    """Length-bucketed batches under a padded-token budget, in a seeded random order."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, current = [], []
    for i in order:
        if current and lengths[i] * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


@dataclass(frozen=True)
class TrainSettings:
    """What :func:`train_causal_lm` needs besides the model and the data."""

    train_steps: int
    batch_tokens: int
    learning_rate: float
    warmup_steps: int
    seed: int
    min_lr_ratio: float = 0.1  # cosine decay from the peak down to this share of it
    # False: no padding mask (rows are right-padded, so the causal mask alone keeps real tokens from
    # seeing padding, and its outputs are never in the loss); SDPA then takes its faster causal kernel
    padding_mask: bool = True


def new_llama(tokenizer, hidden_size: int, intermediate_size: int, num_layers: int, num_heads: int,
              num_kv_heads: int, context_length: int, rope_theta: float | None = None):
    """A randomly initialised Llama (tied embeddings) for ``tokenizer``; draws from torch's global RNG."""
    from transformers import LlamaConfig, LlamaForCausalLM

    extra = {} if rope_theta is None else {"rope_theta": rope_theta}
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads, max_position_embeddings=context_length,
        tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None, **extra,
    ))


def train_causal_lm(model, sequences: list[list[int]], loss_starts: list[int], settings: TrainSettings,
                    pad_token_id: int, started: float, log=print) -> tuple[int, list[float]]:
    """AdamW with warmup and cosine decay over length-bucketed batches; returns (tokens seen, batch losses).

    The loss covers the tokens of each sequence from ``loss_starts[i]`` on (0: every token, a base
    LM; the prompt length: the assistant turn only), and the vocabulary logits are computed only
    at the positions that predict a token of the loss.
    """
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.01, betas=(0.9, 0.95))

    def lr_at(step: int) -> float:
        if step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        progress = (step - settings.warmup_steps) / max(1, settings.train_steps - settings.warmup_steps)
        return settings.min_lr_ratio + (1 - settings.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    rng = random.Random(settings.seed)
    lengths = [len(s) for s in sequences]
    queue: list[list[int]] = []
    tokens_seen, losses = 0, []
    model.train()
    from reer_assets import progress

    for step in progress.iterate(range(settings.train_steps), "training the embedded model"):
        if not queue:
            queue = _batches(lengths, settings.batch_tokens, rng)
        picked = queue.pop()
        batch = [sequences[i] for i in picked]
        width = max(len(s) for s in batch)
        ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (i, seq) in enumerate(zip(picked, batch)):
            ids[row, : len(seq)] = torch.tensor(seq)
            labels[row, loss_starts[i] : len(seq)] = torch.tensor(seq[loss_starts[i] :])
            mask[row, : len(seq)] = 1
        hidden = model.model(input_ids=ids, attention_mask=mask if settings.padding_mask else None).last_hidden_state
        hidden = hidden[:, :-1]
        targets = labels[:, 1:]
        scored = targets != -100
        logits = model.lm_head(hidden[scored]).float()
        token_loss = torch.nn.functional.cross_entropy(logits, targets[scored], reduction="none")
        loss = token_loss.sum() / token_loss.numel()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        tokens_seen += int(mask.sum())
        losses.append(loss.item())
        if step % 50 == 0 or step == settings.train_steps - 1:
            log(f"  step {step:4d}/{settings.train_steps} loss {loss.item():.3f} "
                f"({tokens_seen / (time.perf_counter() - started):.0f} tok/s)")
    model.eval()
    return tokens_seen, losses


def save_model(model, tokenizer, out_dir: Path) -> None:
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def train_embedded(config: EmbeddedConfig, out_dir: Path, log=print) -> dict:
    import torch

    started = time.perf_counter()
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    tokenizer = train_tokenizer(config)
    examples = training_examples(config.inference_examples)
    sequences, prompt_lengths, full_lengths = [], [], []
    for ex in examples:
        prompt = tokenizer(tokenizer.apply_chat_template(ex.messages, tokenize=False, add_generation_prompt=True),
                           add_special_tokens=False)["input_ids"]
        completion = tokenizer(ex.completion + EOS, add_special_tokens=False)["input_ids"]
        if len(prompt) + len(completion) > config.context_length:
            raise ValueError(f"a {ex.kind} example has {len(prompt) + len(completion)} tokens, "
                             f"over the context of {config.context_length}")
        full_lengths.append(len(prompt) + len(completion))
        prompt = prompt[-config.max_prompt_tokens :]
        sequences.append(prompt + completion)
        prompt_lengths.append(len(prompt))
    model = new_llama(tokenizer, config.hidden_size, config.intermediate_size, config.num_layers, config.num_heads,
                      config.num_kv_heads, config.context_length)
    params = sum(p.numel() for p in model.parameters())
    # loss on the assistant turn only: the model must answer prompts, not recite them
    settings = TrainSettings(config.train_steps, config.batch_tokens, config.learning_rate, config.warmup_steps,
                             config.seed)
    tokens_seen, losses = train_causal_lm(model, sequences, prompt_lengths, settings, tokenizer.pad_token_id,
                                          started, log=log)
    save_model(model, tokenizer, out_dir)
    seconds = time.perf_counter() - started
    tail = losses[-20:]
    report = {
        "key": build_key(config), "config": asdict(config), "parameters": params,
        "examples": {k: sum(1 for e in examples if e.kind == k) for k in sorted({e.kind for e in examples})},
        "longest_example_tokens": max(full_lengths), "tokens_seen": tokens_seen,
        "final_loss": sum(tail) / len(tail), "train_seconds": round(seconds, 1),
        "prompt_set_version": PROMPT_SET_VERSION, "builder": BUILDER_VERSION,
    }
    (out_dir / "build.json").write_text(json.dumps(report, indent=2))
    log(f"built in {seconds:.0f}s: {params:,} parameters, final loss {report['final_loss']:.3f}")
    return report
