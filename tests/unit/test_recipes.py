"""Every fine-tuning recipe, and both ways of masking the loss, run through ``train()`` on the embedded model.

The budgets are a few optimizer steps on four rows of the one chat format, so each run takes
seconds on two cores; what each test asserts is what a broken recipe would get wrong (issue 23 §2).
"""

from __future__ import annotations

import hashlib
import random
import shutil
from pathlib import Path

import pytest

from reer_assets import data
from reer_assets.core.chat_format import conversation

pytestmark = [pytest.mark.model, pytest.mark.timeout(240)]  # a few seconds each; headroom for busy cores

ROWS = 4
# The embedded template with the assistant turn marked for TRL's assistant_only_loss (the embedded
# template itself has no marks); the generation block is what a prompt/completion split trains on.
MARKED_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}<|im_end|>\n{% endgeneration %}"
    "{% else %}{{ message['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def rows() -> list[list[dict[str, str]]]:
    """SFT rows built the way the pipeline builds them: bundled request, worked thinking, the piece as answer."""
    pieces = data.pieces_by_id()
    examples = data.initial_thinking_examples()[:ROWS]
    return [conversation(e["query"], e["thinking"], pieces[e["piece_id"]]["text"]) for e in examples]


@pytest.fixture(scope="module")
def base_nll(embedded_path, rows) -> float:
    from reer_assets.backends.training import assistant_nll

    return assistant_nll(str(embedded_path), rows)


def _copy_base(embedded_path: Path, to: Path, chat_template: str | None = None) -> Path:
    """A private copy of the embedded build, so nothing a test does can touch the shared cache."""
    shutil.copytree(embedded_path, to)
    if chat_template is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(to)
        tokenizer.chat_template = chat_template
        tokenizer.save_pretrained(to)
    return to


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _card(out: Path, report: dict) -> str:
    from reer_assets.core.training import render_checkpoint_card

    record = {"checkpoint_id": "ckpt-test", "path": str(out), "base_model": "reer-embedded", "dataset": "ds-test"}
    return render_checkpoint_card(record, report)


def test_embedded_recipe_lowers_the_loss_on_its_rows(tmp_path, embedded_path, rows, base_nll):
    from reer_assets.backends.training import assistant_nll, train
    from reer_assets.core.training import RECIPES, recipe

    report = train(str(embedded_path), rows, tmp_path / "out", recipe("embedded"), log=lambda _: None)
    assert report["recipe"] == RECIPES["embedded"].to_dict()  # run as the demo and test profiles run it
    assert report["steps"] == 2  # 2 epochs of one batch of 4
    # the first step sees the untrained weights: its loss is the base model's NLL on the assistant turns
    assert report["epoch_losses"][0] == pytest.approx(base_nll, abs=1e-4)
    assert assistant_nll(str(tmp_path / "out"), rows) < base_nll - 0.05


def test_paper_recipe_keeps_its_hyper_parameters_and_lowers_the_loss(tmp_path, embedded_path, rows, base_nll):
    from reer_assets.backends.training import assistant_nll, train
    from reer_assets.core.training import RECIPES, recipe

    budget = {"max_steps": 4, "per_device_batch": ROWS, "global_batch": ROWS}  # the paper's 96 cut to the 4 rows
    out = tmp_path / "out"
    report = train(str(embedded_path), rows, out, recipe("paper", **budget), log=lambda _: None)
    paper = RECIPES["paper"]
    assert report["recipe"] == paper.with_overrides(**budget).to_dict()  # only the budget differs from the paper
    assert (paper.method, paper.learning_rate, paper.epochs, paper.global_batch) == ("full", 2e-5, 3, 96)
    assert report["steps"] == 4 and report["gradient_accumulation"] == 1
    assert not (out / "adapter").exists()
    card = _card(out, report)
    assert "| recipe | `paper`: full fine-tuning, lr 2e-05," in card
    # lr 2e-5 barely moves a one-million-parameter model, but three steps past the warmup step do move it
    assert assistant_nll(str(out), rows) < base_nll


def test_lora_recipe_saves_a_loadable_adapter_that_changes_the_output(tmp_path, embedded_path, rows):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reer_assets.backends.training import encode_chat, train
    from reer_assets.core.training import recipe

    base = _copy_base(embedded_path, tmp_path / "base")
    before = _hashes(base)
    out = tmp_path / "out"
    report = train(str(base), rows, out, recipe("lora", max_steps=3, per_device_batch=ROWS, global_batch=ROWS),
                   log=lambda _: None)
    assert _hashes(base) == before  # the base folder, weights included, is byte for byte what it was
    assert report["recipe"]["method"] == "lora" and report["steps"] == 3
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (out / "adapter").iterdir()}
    assert "`lora`: lora fine-tuning" in _card(out, report) and "adapter/" in _card(out, report)

    ids = torch.tensor([encode_chat(AutoTokenizer.from_pretrained(base), rows[0])[0]])
    with torch.inference_mode():
        plain = AutoModelForCausalLM.from_pretrained(base).eval()
        linear = {n for n, m in plain.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"}
        base_logits = plain(ids).logits
        adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out / "adapter").eval()
        config = adapted.peft_config["default"]
        assert (config.r, config.lora_alpha, config.lora_dropout) == (16, 32, 0.05)
        assert set(config.target_modules) == linear  # "all-linear": every projection of every layer
        adapter_logits = adapted(ids).logits
        merged_logits = AutoModelForCausalLM.from_pretrained(out).eval()(ids).logits
    assert (adapter_logits - base_logits).abs().max() > 1e-3  # the adapter was trained, not left at B = 0
    torch.testing.assert_close(merged_logits, adapter_logits, atol=1e-4, rtol=1e-4)  # the folder is the merge


def _garbage_prompt(row: list[dict[str, str]], seed: int) -> list[dict[str, str]]:
    """The same assistant turn after a system and user turn of random characters (costly tokens to predict)."""
    rng = random.Random(seed)
    noise = lambda n: "".join(rng.choice("qzxjvkw#@%&0123456789 ") for _ in range(n))  # noqa: E731
    return [{"role": "system", "content": noise(300)}, {"role": "user", "content": noise(600)}, row[-1]]


def _token_nll(model, ids: list[int], trained: list[bool]) -> tuple[float, int]:
    """Summed NLL of the tokens flagged ``trained`` (each predicted from all tokens before it), and their count."""
    import torch

    labels = torch.tensor([[t if keep else -100 for t, keep in zip(ids, trained)]])
    n = int((labels[0, 1:] != -100).sum())
    with torch.inference_mode():
        loss = model(input_ids=torch.tensor([ids]), labels=labels).loss.item()
    return loss * n, n


@pytest.mark.parametrize("mode", ["completion_only", "assistant_only"])
def test_the_loss_counts_the_assistant_turn_and_no_prompt_token(mode, tmp_path, embedded_path, rows):
    """The trainer's first-step loss is the base model's NLL on exactly the assistant tokens.

    The prompts are random characters, so one prompt token more in the loss (or one assistant token
    less, or the whole sequence) moves the mean by far more than the tolerance; the test checks that
    those neighbouring masks are indeed that far off before it trusts the match.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reer_assets.backends.training import encode_chat, loss_mode, train
    from reer_assets.core.training import recipe

    base = embedded_path if mode == "completion_only" else _copy_base(embedded_path, tmp_path / "base", MARKED_TEMPLATE)
    tokenizer = AutoTokenizer.from_pretrained(base)
    assert loss_mode(tokenizer) == mode  # the embedded template has no generation markers
    garbage = [_garbage_prompt(r, seed=i) for i, r in enumerate(rows)]

    # the reference mask: every prompt token out, every assistant token (and its end of turn) in
    masks = {"assistant": [], "plus last prompt token": [], "minus first assistant token": [], "all tokens": []}
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    for row in garbage:
        ids, labels = encode_chat(tokenizer, row)
        trained = [label != -100 for label in labels]
        start = trained.index(True)
        assert not any(trained[:start]) and all(trained[start:])
        assert tokenizer.decode(ids[:start]) == tokenizer.apply_chat_template(row[:-1], tokenize=False,
                                                                              add_generation_prompt=True)
        assert tokenizer.decode(ids[start:]) == row[-1]["content"] + "<|im_end|>\n"
        variants = {"assistant": trained, "all tokens": [True] * len(ids),
                    "plus last prompt token": [i >= start - 1 for i in range(len(ids))],
                    "minus first assistant token": [i > start for i in range(len(ids))]}
        for name, flags in variants.items():
            masks[name].append(_token_nll(model, ids, flags))
    nll = {name: sum(s for s, _ in parts) / sum(n for _, n in parts) for name, parts in masks.items()}
    for name in ("plus last prompt token", "minus first assistant token", "all tokens"):
        assert abs(nll[name] - nll["assistant"]) > 1e-3, (name, nll)

    report = train(str(base), garbage, tmp_path / "out",
                   recipe("embedded", max_steps=1, per_device_batch=ROWS, global_batch=ROWS), log=lambda _: None)
    assert report["loss_mode"] == mode and report["steps"] == 1
    assert report["epoch_losses"][0] == pytest.approx(nll["assistant"], abs=2e-4), nll
