"""A served model's tokenizer read from its files with ``tokenizers`` and ``jinja2``, without transformers.

The HTTP backends only tokenize locally (a scored span's token ids, a completions prompt), yet
``transformers.AutoTokenizer`` imports torch and much of transformers first: about 4 s of CPU and
several hundred MB in every workload process that only talks to a vLLM server. :class:`LightTokenizer`
does the same two things from the same files: the chat template rendered as transformers renders it
(a sandboxed jinja2 environment with ``trim_blocks`` and ``lstrip_blocks``, its ``tojson`` filter and
its ``raise_exception`` and ``strftime_now`` globals, the special tokens as template variables), and
``tokenizer.json`` encoded with its offsets.

It is used only where it is sure to agree with transformers: a generic fast tokenizer (the
``tokenizer_class`` is absent, ``TokenizersBackend`` or ``PreTrainedTokenizerFast``, which transformers
loads from ``tokenizer.json`` as it is), one chat template, and every special token named in the
configuration already an added token of ``tokenizer.json``. For anything else :func:`load` says why
not and the caller loads ``AutoTokenizer``: a model-specific class can change how ``tokenizer.json``
encodes (the embedded tokenizer's files, relabelled ``LlamaTokenizer``, give other ids under
transformers 5). tests/unit/test_light_tokenizer.py checks the agreement.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

GENERIC_CLASSES = (None, "TokenizersBackend", "PreTrainedTokenizerFast")
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
LIST_KEYS = ("extra_special_tokens", "additional_special_tokens")


class NotLight(Exception):
    """Why a tokenizer folder needs transformers (the reason is logged by the caller, never an error)."""


def _content(token: Any) -> str | None:
    """A special token as a string (configurations store a string or an AddedToken's dict)."""
    if token is None or isinstance(token, str):
        return token
    if isinstance(token, dict) and isinstance(token.get("content"), str):
        return token["content"]
    raise NotLight(f"a special token written as {type(token).__name__}")


def _chat_template(folder: Path, config: dict) -> str:
    """The one chat template of a folder: ``chat_template.jinja``, ``chat_template.json`` or the config's."""
    found = []
    if (folder / "chat_template.jinja").is_file():
        found.append((folder / "chat_template.jinja").read_text(encoding="utf-8"))
    if (folder / "chat_template.json").is_file():
        found.append(json.loads((folder / "chat_template.json").read_text(encoding="utf-8")).get("chat_template"))
    if "chat_template" in config:
        found.append(config["chat_template"])
    templates = {t for t in found if t is not None}
    if not templates:
        raise NotLight("no chat template")
    if len(templates) > 1:
        raise NotLight("more than one chat template")
    template = templates.pop()
    if not isinstance(template, str):
        raise NotLight("named chat templates")
    return template


def _compile(template: str):
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # not jinja's own filter, which escapes HTML characters: transformers' choice, so the same text
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as exc:  # e.g. transformers' {% generation %} tag
        raise NotLight(f"the chat template needs transformers' jinja extensions ({exc.message})") from exc


class LightTokenizer:
    """The subset of a transformers tokenizer the HTTP backends call: ``apply_chat_template`` (text only)
    and ``__call__`` without special tokens (ids, optionally offsets)."""

    def __init__(self, folder: Path, backend: Any, chat_template: str, special_tokens: dict[str, Any]):
        self.name_or_path = str(folder)
        self.chat_template = chat_template
        self.special_tokens_map = special_tokens
        self._backend = backend

    @cached_property
    def _template(self):
        return _compile(self.chat_template)

    def apply_chat_template(self, messages: list[dict], tokenize: bool = False, add_generation_prompt: bool = False,
                            **kwargs: Any) -> str:
        if tokenize:
            raise NotImplementedError("LightTokenizer renders text; encode it with __call__")
        if not messages:
            raise ValueError("Cannot apply chat template to an empty conversation. Provide at least one message.")
        return self._template.render(messages=messages, tools=None, documents=None,
                                     add_generation_prompt=add_generation_prompt,
                                     **{**self.special_tokens_map, **kwargs})

    def __call__(self, text: str, add_special_tokens: bool = True, return_offsets_mapping: bool = False) -> dict:
        encoding = self._backend.encode(text, add_special_tokens=add_special_tokens)
        out: dict[str, Any] = {"input_ids": list(encoding.ids)}
        if return_offsets_mapping:
            out["offset_mapping"] = [tuple(o) for o in encoding.offsets]
        return out


def load(folder: str | Path) -> LightTokenizer:
    """The tokenizer of a local model folder, or :class:`NotLight` with the reason to use transformers."""
    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file() or not (folder / "tokenizer_config.json").is_file():
        raise NotLight("not a local folder with tokenizer.json and tokenizer_config.json")
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NotLight(f"tokenizer_config.json: {exc}") from exc
    if config.get("tokenizer_class") not in GENERIC_CLASSES:
        raise NotLight(f"tokenizer class {config['tokenizer_class']}")
    if (folder / "special_tokens_map.json").is_file():
        raise NotLight("a special_tokens_map.json beside the configuration")
    special: dict[str, Any] = {key: _content(config.get(key)) for key in SPECIAL_TOKEN_KEYS}
    special = {key: value for key, value in special.items() if value is not None}
    listed: list[str] = []
    for key in LIST_KEYS:
        values = config.get(key) or []
        if not isinstance(values, list):
            raise NotLight(f"{key} written as {type(values).__name__}")
        listed += [_content(v) for v in values]
    from tokenizers import Tokenizer

    try:
        backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception as exc:  # noqa: BLE001 (tokenizers raises its own Exception; transformers then says why)
        raise NotLight(f"tokenizer.json: {exc}") from exc
    backend.no_truncation()
    backend.no_padding()
    added = backend.get_added_tokens_decoder()
    missing = sorted({*special.values(), *listed} - {t.content for t in added.values() if t.special})
    if missing:
        raise NotLight(f"special tokens that are not added tokens of tokenizer.json: {missing}")
    known = {str(i): t.content for i, t in added.items()}
    configured = config.get("added_tokens_decoder") or {}
    if any(known.get(i) != (t.get("content") if isinstance(t, dict) else None) for i, t in configured.items()):
        raise NotLight("added tokens of the configuration that tokenizer.json does not hold")
    tokenizer = LightTokenizer(folder, backend, _chat_template(folder, config), special)
    tokenizer._template  # noqa: B018 (compiled now: a template jinja cannot parse falls back at load time)
    return tokenizer
