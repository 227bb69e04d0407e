"""The embedded scorer: a tiny *base* Llama that reads the thinking, trained offline on CPU.

The embedded generator (:mod:`reer_assets.backends.embedded`) is instruct-tuned on masked prompts
and barely conditions on the thinking, so as a scorer it is nearly flat. REER's objective needs a
base model that uses the thinking in context: when the thinking names what the answer will say,
the answer must become likelier. This model is a base LM (loss on every token) trained on
synthetic documents rendered in the scoring format itself (system, the standard inference prompt
for a made-up request, ``<think>`` outline ``</think>`` ``<answer>`` piece ``</answer>``) whose
outlines preview names, numbers and phrases of the piece (or, for some documents, belong to
another piece; :mod:`reer_assets.data.scorer`).

Copying from the context takes an induction circuit (a previous-token head feeding a head that
matches the current token against the token before each earlier position). Trained from a random
start, this model did not form one within the build's few hundred steps (measured: docs/embedded-model.md),
so :func:`write_copy_circuit` writes one into the initial weights and training tunes it together
with everything else.

It shares the generator's tokenizer (trained the same way, so the same ids, special tokens and chat
template) and its build machinery: keyed by a hash of the config, this builder's version, the
prompt set, the chat template, the training-text generator's version and the tokenizer's inputs;
kept in ``${REER_CACHE_DIR:-~/.cache/reer-assets}/embedded-scorer/<key>`` and copied to
``$DAGSTER_HOME/models/embedded-scorer/<key>``. ``build.json`` records the build, the training
time and a contamination report (n-gram overlap of the training text with every scored reference).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

from reer_assets import data
from reer_assets.backends.embedded import (
    CHAT_TEMPLATE,
    EOS,
    SPECIAL_TOKENS,
    TrainSettings,
    ensure_build,
    new_llama,
    save_model,
    tokenizer_key,
    train_causal_lm,
    train_tokenizer,
)
from reer_assets.backends.embedded import (
    DEFAULT_CONFIG as GENERATOR_CONFIG,
)
from reer_assets.core.chat_format import assistant_turn
from reer_assets.core.prompts import BUNDLED, PROMPT_SET_VERSION, prompts_for
from reer_assets.data.scorer import SCORER_TEXT_VERSION, ScorerDocument, TextSettings, scorer_documents

SCORER_BUILDER_VERSION = "embedded-scorer-v1"
KIND = "embedded-scorer"


@dataclass(frozen=True)
class ScorerConfig:
    hidden_size: int = 128
    intermediate_size: int = 256
    num_layers: int = 2
    num_heads: int = 2
    num_kv_heads: int = 2
    context_length: int = 4096
    # Rotary base: high, so that most rotary pairs turn by well under a radian across a scored context
    # (the copying head matches tokens on those pairs), while the fastest pairs still mark neighbours.
    rope_theta: float = 1e9
    # A copying (induction) circuit written into the initial weights; training then tunes it with the rest
    # of the model (see write_copy_circuit). Without it, this recipe's steps never formed one.
    copy_circuit: bool = True
    token_dims: int = 60  # residual dimensions that carry the token's identity
    constant_dims: int = 4  # dimensions that are the same for every token (the positional head reads them)
    previous_token_sharpness: float = 12.0
    copy_gain: float = 4.0
    # Whole documents at the scored lengths. Most rows start at a random point of the inference prompt
    # (a window of the rendered text, as a base LM trains on windows of long documents): the prompt is
    # nearly the same in every document, the thinking and the answer are not. The rest keep the whole
    # rendering from its first token.
    documents: int = 1800
    text: TextSettings = TextSettings()
    full_rows: float = 0.3
    min_prompt_tokens: int = 16
    piece_names: bool = True  # some names are raw tokenizer pieces, so every token is seen as copyable
    train_steps: int = 420
    batch_tokens: int = 4096
    learning_rate: float = 3e-3
    warmup_steps: int = 30
    seed: int = 4321


DEFAULT_SCORER_CONFIG = ScorerConfig()


# -- keys and the cache ------------------------------------------------------------------------


def scorer_build_key(config: ScorerConfig = DEFAULT_SCORER_CONFIG) -> str:
    """The build's identity: everything its weights depend on, and the scored references its recorded
    contamination report was measured against (new benchmark prompts make a new build and a new report)."""
    references = hashlib.sha256(json.dumps(scored_references(), ensure_ascii=False).encode()).hexdigest()
    digest = hashlib.sha256(json.dumps({
        "config": asdict(config), "builder": SCORER_BUILDER_VERSION, "prompts": PROMPT_SET_VERSION,
        "template": CHAT_TEMPLATE, "special": SPECIAL_TOKENS, "text": SCORER_TEXT_VERSION,
        "tokenizer": tokenizer_key(GENERATOR_CONFIG), "references": references,
    }, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def ensure_scorer_model(config: ScorerConfig = DEFAULT_SCORER_CONFIG, log=print) -> Path:
    """Path of a built embedded scorer for ``config``: reused from the instance or cache, else built."""
    return ensure_build(KIND, scorer_build_key(config), lambda out: train_scorer(config, out, log=log), log=log,
                        what=f"about {config.train_steps} steps")


# -- training text -----------------------------------------------------------------------------


def tokenizer_pieces(tokenizer) -> list[str]:
    """Vocabulary entries that decode to whole letters or whole CJK characters (no broken bytes)."""
    pieces = []
    special = set(tokenizer.all_special_ids)
    for token_id in range(len(tokenizer)):
        if token_id in special:
            continue
        text = tokenizer.decode([token_id])
        if "\ufffd" not in text and re.fullmatch(r" ?(?:[A-Za-z]{2,}|[\u4e00-\u9fff]+)", text):
            pieces.append(text)
    return pieces


def training_documents(config: ScorerConfig, pieces: Sequence[str] = ()) -> list[ScorerDocument]:
    return scorer_documents(config.documents, config.seed, config.text, pieces if config.piece_names else ())


def render_document(tokenizer, doc: ScorerDocument) -> tuple[str, str]:
    """(prompt, assistant turn) of a document, in the scoring format; the training text is their sum + EOS."""
    # the bundled prompts whatever set is in force: the build key names the bundled version
    prompt = tokenizer.apply_chat_template(prompts_for(doc.query, BUNDLED).inference_messages(doc.query), tokenize=False,
                                           add_generation_prompt=True)
    return prompt, assistant_turn(doc.thinking, doc.answer) + EOS


def training_texts(config: ScorerConfig = DEFAULT_SCORER_CONFIG, tokenizer=None) -> list[str]:
    """Every rendered training text (what the contamination report reads)."""
    tokenizer = tokenizer or train_tokenizer(GENERATOR_CONFIG)
    docs = training_documents(config, tokenizer_pieces(tokenizer))
    return ["".join(render_document(tokenizer, d)) for d in docs]


# -- contamination -----------------------------------------------------------------------------

_UNITS = re.compile(r"[\u4e00-\u9fff]|[^\W\u4e00-\u9fff_]+")
NGRAM = 8


def ngram_units(text: str) -> list[str]:
    """Lower-cased words, with every CJK ideograph a unit of its own (punctuation and spaces dropped)."""
    return _UNITS.findall(text.lower())


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    units = ngram_units(text)
    return {tuple(units[i : i + n]) for i in range(len(units) - n + 1)}


def scored_references() -> list[tuple[str, str]]:
    """(id, text) of every reference the project scores: the bundled corpus and the benchmark references."""
    refs = [(p["id"], p["text"]) for p in data.corpus()]
    refs += [(b["id"], b["reference"]) for b in data.benchmark_prompts()]
    return refs


def contamination_report(texts: Iterable[str], references: Sequence[tuple[str, str]] | None = None,
                         n: int = NGRAM) -> dict:
    """Share of each reference's ``n``-grams (words; characters for Chinese) found in ``texts``."""
    seen: set[tuple[str, ...]] = set()
    for text in texts:
        seen |= ngrams(text, n)
    shares, overlapping = [], []
    for ref_id, text in scored_references() if references is None else references:
        grams = ngrams(text, n)
        shared = len(grams & seen)
        shares.append(shared / len(grams) if grams else 0.0)
        if shared:
            overlapping.append({"id": ref_id, "shared": shared, "of": len(grams)})
    return {
        "unit": f"{n}-grams of lower-cased words, CJK characters one unit each",
        "references": len(shares), "training_ngrams": len(seen),
        "max_share": max(shares, default=0.0), "mean_share": sum(shares) / len(shares) if shares else 0.0,
        "references_with_overlap": len(overlapping), "overlapping": overlapping,
    }


# -- the build ---------------------------------------------------------------------------------


def write_copy_circuit(model, config: ScorerConfig) -> int:
    """Write a previous-token head (layer 0, head 0) and an induction head (layer 1, head 0) into ``model``.

    The residual stream is split: dims ``[0, T)`` hold the token's identity (the embedding, random),
    ``[T, T + C)`` a constant, ``[T + C, 2T + C)`` the *previous* token's identity. Layer 0 head 0 reads
    only the constant, with queries and keys on the fastest rotary pairs phased so that each position
    attends to the one before it, and copies that position's identity dims into the previous-token dims.
    Layer 1 head 0 matches the current token's identity (queries) against the previous-token dims
    (keys) through a random orthonormal projection onto the rotary pairs that barely turn across the
    context, and adds the matched position's own identity back to the identity dims, which the tied
    output embedding reads as "the token that followed this one last time". The other head of each
    layer and the MLPs keep their random initialisation. Draws from torch's global RNG; returns the
    number of matching dimensions.
    """
    import torch

    T, C = config.token_dims, config.constant_dims
    head = config.hidden_size // config.num_heads
    if 2 * T + C > config.hidden_size or config.num_kv_heads != config.num_heads:
        raise ValueError("the copy circuit needs 2*token_dims + constant_dims <= hidden_size and no grouped KV heads")
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, head, 2).float() / head))
    slow = [k for k in range(head // 2) if inv_freq[k].item() * config.context_length < 0.5]
    dims = slow + [k + head // 2 for k in slow]
    prev0 = T + C
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb.zero_()
        emb[:, :T] = torch.randn(emb.shape[0], T)
        emb[:, T : T + C] = 1.0
        first, second = model.model.layers[0].self_attn, model.model.layers[1].self_attn
        for attn in (first, second):
            for weight in (attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight):
                weight[:head].zero_()
            attn.o_proj.weight[:, :head].zero_()
        for k in range(4):  # score(i, j) = sharpness * sum_k cos((i - j - 1) * theta_k): largest at j = i - 1
            theta = inv_freq[k].item()
            first.k_proj.weight[k, T : T + C] = 1.0 / C
            first.q_proj.weight[k, T : T + C] = config.previous_token_sharpness * math.cos(theta) / C
            first.q_proj.weight[k + head // 2, T : T + C] = -config.previous_token_sharpness * math.sin(theta) / C
        projection = torch.linalg.qr(torch.randn(T, T))[0][: len(dims)]
        for i in range(T):
            first.v_proj.weight[i, i] = 1.0
            first.o_proj.weight[prev0 + i, i] = 1.0
            second.v_proj.weight[i, i] = 1.0
            second.o_proj.weight[i, i] = config.copy_gain
        for row, dim in enumerate(dims):
            second.q_proj.weight[dim, :T] = projection[row]
            second.k_proj.weight[dim, prev0 : prev0 + T] = projection[row]
    return len(dims)


def train_scorer(config: ScorerConfig, out_dir: Path, log=print) -> dict:
    import torch

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    tokenizer = train_tokenizer(GENERATOR_CONFIG)
    docs = training_documents(config, tokenizer_pieces(tokenizer))
    rng = random.Random(config.seed)
    sequences, full_lengths, texts = [], [], []
    for doc in docs:
        prompt, turn = render_document(tokenizer, doc)
        texts.append(prompt + turn)
        ids = tokenizer(prompt + turn, add_special_tokens=False)["input_ids"]
        prompt_tokens = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        if len(ids) > config.context_length:
            raise ValueError(f"a training document has {len(ids)} tokens, over the context of {config.context_length}")
        full_lengths.append(len(ids))
        if rng.random() >= config.full_rows:
            start = rng.randint(0, max(0, prompt_tokens - config.min_prompt_tokens))
            ids = ids[start:]
        sequences.append(ids)
    data_seconds = time.perf_counter() - started
    model = new_llama(tokenizer, config.hidden_size, config.intermediate_size, config.num_layers, config.num_heads,
                      config.num_kv_heads, config.context_length, rope_theta=config.rope_theta)
    matching_dims = write_copy_circuit(model, config) if config.copy_circuit else 0
    params = sum(p.numel() for p in model.parameters())
    settings = TrainSettings(config.train_steps, config.batch_tokens, config.learning_rate, config.warmup_steps,
                             config.seed, padding_mask=False)
    # a base LM: the loss covers every token of every row
    tokens_seen, losses = train_causal_lm(model, sequences, [0] * len(sequences), settings, tokenizer.pad_token_id,
                                          started, log=log)
    save_model(model, tokenizer, out_dir)
    seconds = time.perf_counter() - started
    contamination = contamination_report(texts)
    tail = losses[-20:]
    report = {
        "key": scorer_build_key(config), "config": asdict(config), "parameters": params,
        "documents": {"total": len(docs), "zh": sum(d.language == "zh" for d in docs),
                      "unrelated_thinking": sum(not d.related for d in docs)},
        "document_tokens": {"min": min(full_lengths), "mean": round(sum(full_lengths) / len(full_lengths)),
                            "max": max(full_lengths)},
        "copy_circuit_matching_dims": matching_dims,
        "tokens_seen": tokens_seen, "final_loss": sum(tail) / len(tail),
        "data_seconds": round(data_seconds, 1), "train_seconds": round(seconds, 1),
        "contamination": contamination,
        "tokenizer": f"shared with the generator (tokenizer key {tokenizer_key(GENERATOR_CONFIG)})",
        "prompt_set_version": PROMPT_SET_VERSION, "text_version": SCORER_TEXT_VERSION,
        "builder": SCORER_BUILDER_VERSION,
    }
    (out_dir / "build.json").write_text(json.dumps(report, indent=2))
    log(f"built the scorer in {seconds:.0f}s: {params:,} parameters, final loss {report['final_loss']:.3f}, "
        f"8-gram overlap with references max {contamination['max_share']:.4f}")
    return report
