"""Loading a prompt set other than the bundled one (``REER_PROMPTS``; docs/algorithm.md, "Scoring with the
official prompts").

* ``REER_PROMPTS=PATH``: a YAML or JSON file in the engine's own schema, one mapping per language
  (``en``, ``zh``), each with every field of :data:`reer_assets.core.prompts.PROMPT_FIELDS`. Identity
  ``file:<sha>``.
* ``REER_PROMPTS=official:PATH``: the official REER ``synthesize.py``; its module-level ``templates`` dict
  and ``default_sys`` are read with :mod:`ast` (literal values only). The file is never imported or run.
  Identity ``official:<sha>``.

The identity (``<source>:<content sha>``, or the bundled version) goes into the config hash and
fingerprint of every stage whose output depends on prompt text, and into each trace's
``prompt_set_version``. Workloads get the whole set in their extras (:func:`extras`) and put it in force
with :func:`applied`, so a remote worker needs no copy of the file.

``python -m reer_assets.lib.prompt_sets > prompts.yaml`` writes the bundled set in this schema, a start
for one's own.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import json
import string
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from reer_assets import settings
from reer_assets.core.language import EN, ZH
from reer_assets.core.prompts import (
    BUNDLED,
    PROMPT_FIELDS,
    TEMPLATE_PLACEHOLDERS,
    PromptCatalogue,
    PromptSet,
    content_hash,
    set_content,
    use_prompts,
)

OFFICIAL_PREFIX = "official:"
EXTRAS_KEY = "prompt_set"
LANGUAGES = (EN, ZH)
# official template key stem -> (our field, the names of its positional arguments, in the order
# synthesize.py passes them: ``template.format(*inp)``)
OFFICIAL_TEMPLATES = {
    "standard_inference": ("inference_template", ("query",)),
    "initial_thinking": ("initial_template", ("query", "reference")),
    # (q, ref, before, current, after, current): _refine_one_step's prompt_args
    "segment_edits": ("edit_template", ("query", "reference", "before", "target", "after", "target")),
}
OFFICIAL_SUFFIX = {EN: "en", ZH: "cn"}
# optional keys a file may add to ``templates``; otherwise the lead-in stays ours
OFFICIAL_OPTIONAL = {"edit_lead_in": "edit_lead_in"}


class PromptSetError(ValueError):
    """A prompt set file that cannot be used; the message names the file and every problem."""


def _fail(where: str, problems: list[str]) -> None:
    if problems:
        raise PromptSetError(f"prompt set {where}: " + "; ".join(problems))


def _template_problems(name: str, text: str) -> list[str]:
    """What is wrong with one template's placeholders (unknown, positional, required but absent)."""
    allowed, required = TEMPLATE_PLACEHOLDERS[name]
    try:
        used = {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}
    except ValueError as exc:
        return [f"{name} is not a valid format string ({exc}); write literal braces as {{{{ and }}}}"]
    problems = []
    unknown = sorted(u for u in used if u not in allowed)
    if unknown:
        problems.append(f"{name} uses unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}"
                        f" (allowed: {', '.join('{' + a + '}' for a in sorted(allowed))})")
    missing = sorted(required - used)
    if missing:
        problems.append(f"{name} lacks placeholder(s) {', '.join('{' + m + '}' for m in missing)}")
    return problems


def _prompt_set(language: str, content: Any, where: str, identity: str = "") -> tuple[PromptSet | None, list[str]]:
    """A validated :class:`PromptSet` from one language's mapping, or the problems found."""
    if not isinstance(content, dict):
        return None, [f"{language} must be a mapping of fields, not {type(content).__name__}"]
    problems = []
    unknown = sorted(set(content) - set(PROMPT_FIELDS))
    missing = [f for f in PROMPT_FIELDS if f not in content]
    if unknown:
        problems.append(f"unknown field(s) {', '.join(f'{language}.{u}' for u in unknown)}")
    if missing:
        problems.append(f"missing field(s) {', '.join(f'{language}.{m}' for m in missing)}")
    for name in PROMPT_FIELDS:
        if name == "openers" or name not in content:
            continue
        if not isinstance(content[name], str):
            problems.append(f"{language}.{name} must be a string, not {type(content[name]).__name__}")
        elif name in TEMPLATE_PLACEHOLDERS:
            problems.extend(f"{language}.{p}" for p in _template_problems(name, content[name]))
    openers = content.get("openers")
    pairs: list[tuple[str, float]] = []
    if "openers" in content:
        ok = isinstance(openers, list) and openers
        for entry in openers if ok else []:
            if (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str)
                    and isinstance(entry[1], (int, float)) and not isinstance(entry[1], bool) and entry[1] > 0):
                pairs.append((entry[0], float(entry[1])))
            else:
                ok = False
        if not ok:
            problems.append(f"{language}.openers must be a non-empty list of [text, positive weight] pairs")
    if problems:
        return None, problems
    fields = {**{k: content[k] for k in PROMPT_FIELDS}, "openers": tuple(pairs)}
    return PromptSet(language=language, version=identity, **fields), []


def catalogue_from_document(document: Any, where: str, source: str) -> PromptCatalogue:
    """A catalogue from a parsed document in the engine's schema (``{en: {...}, zh: {...}}``)."""
    if not isinstance(document, dict):
        _fail(where, [f"the top level must be a mapping with {' and '.join(LANGUAGES)}, "
                      f"not {type(document).__name__}"])
    problems = []
    unknown = sorted(str(k) for k in document if k not in LANGUAGES)
    missing = [lang for lang in LANGUAGES if lang not in document]
    if unknown:
        problems.append(f"unknown field(s) {', '.join(unknown)} (the top level holds {', '.join(LANGUAGES)})")
    if missing:
        problems.append(f"missing language(s) {', '.join(missing)}")
    sets: dict[str, PromptSet] = {}
    for lang in LANGUAGES:
        if lang in document:
            _add_set(sets, problems, lang, document[lang], where)
    return _catalogue(sets, problems, where, source)



def _add_set(sets: dict[str, PromptSet], problems: list[str], lang: str, content: Any, where: str) -> None:
    """Validate one language's prompts: its set into ``sets``, or what is wrong with it into ``problems``."""
    prompt_set, found = _prompt_set(lang, content, where)
    problems.extend(found)
    if prompt_set is not None:
        sets[lang] = prompt_set


def _catalogue(sets: dict[str, PromptSet], problems: list[str], where: str, source: str) -> PromptCatalogue:
    """The catalogue of ``sets`` named by its source and content, once nothing is wrong (else a clear error)."""
    _fail(where, problems)
    return PromptCatalogue("", sets).with_identity(f"{source}:{content_hash(sets)}")


def load_file(path: str | Path) -> PromptCatalogue:
    """A prompt set file in the engine's schema (YAML, or JSON, which YAML reads too)."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        _fail(where, ["no such file"])
    text = path.read_text(encoding="utf-8")
    try:
        document = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        _fail(where, [f"cannot be parsed: {exc}"])
    return catalogue_from_document(document, where, "file")


# --- the official synthesize.py ----------------------------------------------------------------------

def _literal(node: ast.AST, what: str, where: str) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        _fail(where, [f"{what} (line {getattr(node, 'lineno', '?')}) is not a literal value; only literals are read"])


def read_official(source: str, where: str) -> tuple[dict[str, Any], str]:
    """The module-level ``templates`` dict and ``default_sys`` string of an official ``synthesize.py`` text.

    Parsed with :mod:`ast`: ``templates = {...}``, ``templates["key"] = "..."`` and ``default_sys = "..."``
    at module level are read as literals (the last assignment wins); nothing is executed.
    """
    try:
        tree = ast.parse(source, filename=where)
    except SyntaxError as exc:
        _fail(where, [f"is not valid Python ({exc.msg}, line {exc.lineno})"])
    templates: dict[str, Any] | None = None
    default_sys: Any = None
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name) and target.id == "templates":
                templates = _literal(value, "templates", where)
                if not isinstance(templates, dict):
                    _fail(where, [f"templates is a {type(templates).__name__}, not a dict"])
            elif isinstance(target, ast.Name) and target.id == "default_sys":
                default_sys = _literal(value, "default_sys", where)
            elif (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
                  and target.value.id == "templates" and templates is not None):
                key = _literal(target.slice, "a templates key", where)
                templates[key] = _literal(value, f"templates[{key!r}]", where)
    problems = []
    if templates is None:
        problems.append("no module-level `templates = {...}` assignment")
    if default_sys is None:
        problems.append("no module-level `default_sys = \"...\"` assignment")
    elif not isinstance(default_sys, str):
        problems.append(f"default_sys is a {type(default_sys).__name__}, not a string")
    _fail(where, problems)
    return templates, default_sys  # type: ignore[return-value]


def _named(template: str, names: tuple[str, ...]) -> tuple[str, list[str]]:
    """A positional ``str.format`` template with its ``{}`` fields renamed to ``names`` (literal braces kept)."""
    out, auto, problems = [], 0, []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        return "", [f"is not a valid format string ({exc})"]
    for literal, field, spec, conversion in parsed:
        out.append(literal.replace("{", "{{").replace("}", "}}"))
        if field is None:
            continue
        if field == "":
            index, auto = auto, auto + 1
        elif field.isdigit():
            index = int(field)
        else:
            problems.append(f"has the named field {{{field}}}; synthesize.py fills positional fields only")
            continue
        if index >= len(names):
            problems.append(f"has {index + 1} or more fields; synthesize.py passes {len(names)}")
            continue
        out.append("{" + names[index] + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}")
    return "".join(out), problems


def catalogue_from_official(source: str, where: str) -> PromptCatalogue:
    """Our catalogue with the official texts in place: system prompt, inference, initial-thinking and edit
    templates (and an edit lead-in where ``templates`` gives ``edit_lead_in_<en|cn>``). The rest stays
    ours: the query-synthesis template, the openers, the edit lead-in otherwise. As synthesize.py does, an
    empty before/after is passed as an empty string and the edit prompt has no draft note."""
    templates, default_sys = read_official(source, where)
    problems, sets = [], {}
    for lang in LANGUAGES:
        suffix = OFFICIAL_SUFFIX[lang]
        content = {**set_content(BUNDLED.sets[lang]), "system_prompt": default_sys, "draft_note": "", "empty_marker": ""}
        for stem, (field, names) in OFFICIAL_TEMPLATES.items():
            key = f"{stem}_{suffix}"
            if key not in templates:
                problems.append(f"templates has no {key!r}")
            elif not isinstance(templates[key], str):
                problems.append(f"templates[{key!r}] is not a string")
            else:
                content[field], found = _named(templates[key], names)
                problems.extend(f"templates[{key!r}] {p}" for p in found)
        for stem, field in OFFICIAL_OPTIONAL.items():
            key = f"{stem}_{suffix}"
            if key in templates:
                if isinstance(templates[key], str):
                    content[field] = templates[key]
                else:
                    problems.append(f"templates[{key!r}] is not a string")
        if not problems:
            _add_set(sets, problems, lang, content, where)
    return _catalogue(sets, problems, where, "official")


def load_official(path: str | Path) -> PromptCatalogue:
    """The prompts of an official ``synthesize.py`` checkout, read as text (never imported)."""
    path = Path(path)
    if not path.is_file():
        _fail(f"{OFFICIAL_PREFIX}{path}", ["no such file"])
    return catalogue_from_official(path.read_text(encoding="utf-8"), str(path))


# --- the setting, stages and workloads ---------------------------------------------------------------

def load(spec: str | None) -> PromptCatalogue:
    """The catalogue a ``REER_PROMPTS`` value names: None or empty is the bundled set."""
    if not spec:
        return BUNDLED
    if spec.startswith(OFFICIAL_PREFIX):
        return load_official(Path(spec[len(OFFICIAL_PREFIX):]).expanduser())
    return load_file(Path(spec).expanduser())


def from_settings() -> PromptCatalogue:
    """The catalogue ``REER_PROMPTS`` names (read now, so a changed variable takes effect)."""
    return load(settings.prompts_spec())


def identity() -> str:
    """The identity of the prompt set in the settings: what stage config hashes include."""
    return from_settings().identity


def extras(catalogue: PromptCatalogue | None = None) -> dict[str, Any]:
    """The workload extras entry carrying the whole prompt set (``{"prompt_set": {...}}``)."""
    return {EXTRAS_KEY: (catalogue or from_settings()).to_payload()}


@contextlib.contextmanager
def in_force(catalogue: PromptCatalogue | None = None) -> Iterator[PromptCatalogue]:
    """Put the settings' prompt set (or ``catalogue``) in force for a block of in-process rendering."""
    with use_prompts(catalogue or from_settings()) as active:
        yield active


def applied(run: Callable[[dict, Callable[[str], None]], dict]) -> Callable[[dict, Callable[[str], None]], dict]:
    """Decorate a workload's ``run(extras, log)``: the prompt set of ``extras["prompt_set"]`` is in force
    while it runs (the bundled one when the extras carry none)."""

    @functools.wraps(run)
    def wrapper(extras: dict, log: Callable[[str], None]) -> dict:
        payload = extras.get(EXTRAS_KEY)
        with use_prompts(PromptCatalogue.from_payload(payload) if payload else BUNDLED):
            return run(extras, log)

    return wrapper


def document(catalogue: PromptCatalogue = BUNDLED) -> dict[str, dict]:
    """A catalogue in the engine's file schema (what :func:`load_file` reads back)."""
    return {lang: set_content(catalogue.sets[lang]) for lang in LANGUAGES}


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings as ``|`` blocks, so a dumped set is easy to edit."""


_BlockDumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def dump_yaml(catalogue: PromptCatalogue = BUNDLED) -> str:
    """A catalogue as YAML in the engine's schema."""
    return yaml.dump(document(catalogue), Dumper=_BlockDumper, allow_unicode=True, sort_keys=False, width=10_000)


if __name__ == "__main__":
    print(dump_yaml(), end="")
