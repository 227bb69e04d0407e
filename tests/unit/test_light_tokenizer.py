"""The HTTP backends' tokenizer without transformers (backends/light_tokenizer.py) renders and encodes
exactly as ``AutoTokenizer`` does on the same files, falls back to it where it could not be sure, and
keeps torch and transformers out of a workload that only talks to a server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest

from reer_assets.backends import light_tokenizer
from reer_assets.backends.scored_span import encode, render, score_tokens
from reer_assets.core.protocols import ScoreRequest

pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]

CORPUS = Path(__file__).resolve().parents[2] / "reer_assets" / "data" / "corpus"
TRICKY = ["", " ", "\n\n", "  two leading spaces", "tabs\tand\r\nCRLF", "Écrire un poème sur la pluie.",
          "日本語のテキストと emoji 🌧️", "<think>a thought</think>\n<answer>x</answer>", "<|im_end|> inside a turn",
          "<|im_start|>user\nforged", "trailing space ", "a" * 300, "1,234.5 — en dash – and quotes “like this”"]


def _texts() -> list[str]:
    """Requests and opening passages of every bundled document, and strings that stress a tokenizer."""
    out = list(TRICKY)
    for path in sorted(CORPUS.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines()[:4]:
            row = json.loads(line)
            out += [row["request"], row["text"][:1500]]
    return out


def _pair(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder)), light_tokenizer.load(folder)


def _copy(source: Path, to: Path) -> Path:
    """The tokenizer files of a model folder (no weights), to edit."""
    to.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(source / name, to / name)
    return to


@pytest.mark.parametrize("which", ["generator", "scorer"])
def test_renders_encodes_and_scores_as_transformers(which, embedded_path, scorer_path):
    full, light = _pair(embedded_path if which == "generator" else scorer_path)
    assert light.special_tokens_map == full.special_tokens_map
    texts = _texts()
    assert len(texts) > 30
    for k, text in enumerate(texts):
        messages = [{"role": "system", "content": texts[(k + 1) % len(texts)]}, {"role": "user", "content": text}]
        assert render(light, messages) == render(full, messages), text
        assert render(light, messages, text) == render(full, messages, text), text
        assert encode(light, text) == encode(full, text), text
        got = light(text, add_special_tokens=False, return_offsets_mapping=True)
        want = full(text, add_special_tokens=False, return_offsets_mapping=True)
        assert got["offset_mapping"] == [tuple(o) for o in want["offset_mapping"]], text
        request = ScoreRequest(messages[1:], prefix=text[:40], continuation=texts[(k + 2) % len(texts)])
        assert score_tokens(light, request) == score_tokens(full, request), text


def test_template_features_render_as_transformers(embedded_path, tmp_path):
    """tojson (unescaped, with options), the special tokens as variables, loop controls, strftime_now and
    raise_exception, in a template of the kind real models ship."""
    folder = _copy(embedded_path, tmp_path / "tok")
    (folder / "chat_template.jinja").write_text(
        "{{ eos_token }}{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tools here') }}"
        "{% endif %}{% if loop.index > 3 %}{% break %}{% endif %}"
        "<|im_start|>{{ m.role }}\n{{ m | tojson }}|{{ m.content | tojson(indent=2, sort_keys=true) }}<|im_end|>\n"
        # strftime_now with a format that names no field: the call is checked, not the clock
        "{% endfor %}{{ strftime_now('%%Y') }}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        encoding="utf-8")
    full, light = _pair(folder)
    messages = [{"role": "user", "content": c} for c in ("<b>&amp;</b> é", "two", "three", "four")]
    assert render(light, messages) == render(full, messages)
    assert "<b>&amp;</b> é" in render(light, messages) and "%Y" in render(light, messages)  # unescaped; strftime ran
    with pytest.raises(jinja2.exceptions.TemplateError, match="no tools here") as raised:
        light.apply_chat_template([{"role": "tool", "content": "x"}], add_generation_prompt=True)
    with pytest.raises(type(raised.value), match="no tools here"):
        full.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize("change, reason", [
    (lambda f: _edit_config(f, tokenizer_class="Qwen2Tokenizer"), "tokenizer class Qwen2Tokenizer"),
    (lambda f: _edit_config(f, bos_token="<|not-a-token|>"), "not added tokens of tokenizer.json"),
    (lambda f: _edit_config(f, chat_template="{{ messages }}"), "more than one chat template"),
    (lambda f: (f / "chat_template.jinja").write_text("{% generation %}x{% endgeneration %}"), "jinja extensions"),
    (lambda f: (f / "special_tokens_map.json").write_text("{}"), "special_tokens_map.json"),
    (lambda f: (f / "tokenizer.json").unlink(), "tokenizer.json and tokenizer_config.json"),
], ids=["class", "special-token", "two-templates", "generation-tag", "special-tokens-map", "no-tokenizer-json"])
def test_what_it_cannot_be_sure_of_goes_to_transformers(change, reason, embedded_path, tmp_path):
    from reer_assets.backends.openai_compat import _load_tokenizer
    from reer_assets.backends.spec import BackendSpec

    folder = _copy(embedded_path, tmp_path / "tok")
    change(folder)
    with pytest.raises(light_tokenizer.NotLight, match=reason):
        light_tokenizer.load(folder)
    if (folder / "tokenizer.json").exists():  # transformers loads it (without tokenizer.json it cannot either)
        loaded = _load_tokenizer(BackendSpec(backend="openai", base_url="http://127.0.0.1:9/v1", tokenizer=str(folder)), "scorer")
        assert not isinstance(loaded, light_tokenizer.LightTokenizer)


def test_a_hub_name_goes_to_transformers():
    with pytest.raises(light_tokenizer.NotLight, match="not a local folder"):
        light_tokenizer.load("some-org/some-model")


def _edit_config(folder: Path, **changes) -> None:
    path = folder / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_a_workload_on_http_backends_never_imports_torch_or_transformers(embedded_path):
    """Generator (completions prefill: the template rendered locally) and scorer over HTTP, built the way a
    workload builds them, score a request: no torch, no transformers in the process."""
    from tests.reliability.conftest import fault_server_env
    from tests.support.fault_server import FaultServer

    server = FaultServer(seeded=True).start()
    try:
        env = {**fault_server_env(server, embedded_path), "REER_GENERATOR_PREFILL_MODE": "completions"}
        code = ("import json, sys\n"
                "from reer_assets.backends.config import BackendSpec, load_generator, load_scorer\n"
                "from reer_assets.core.protocols import ScoreRequest\n"
                "gen = load_generator(BackendSpec.from_env('generator'))\n"
                "scorer = load_scorer(BackendSpec.from_env('scorer'))\n"
                "[result] = scorer.score([ScoreRequest([{'role': 'user', 'content': 'Rain?'}], '', 'It rains.')])\n"
                "print(json.dumps({'tokenizers': [type(gen._tokenizer).__name__, type(scorer.tokenizer).__name__],\n"
                "                  'scored': len(result.token_logprobs),\n"
                "                  'loaded': [m for m in ('torch', 'transformers') if m in sys.modules]}))\n")
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True,
                             text=True, timeout=120)
    finally:
        server.stop()
    assert out.returncode == 0, out.stderr
    ids, first = score_tokens(light_tokenizer.load(embedded_path),
                              ScoreRequest([{"role": "user", "content": "Rain?"}], "", "It rains."))
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "tokenizers": ["LightTokenizer", "LightTokenizer"], "scored": len(ids) - first, "loaded": []}
