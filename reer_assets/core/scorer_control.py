"""Positive control for a scorer: does a thinking that outlines the reference make it likelier?

REER's objective only works if the scorer reads the thinking: a thinking that says what the
reference will say must score better (lower) than one that does not. For each item (a request
and a reference the scorer never saw) this builds

* an **outline** thinking, from the item's own reference by the rule of :func:`outline_items`
  (its names, its numbers and one key phrase per sentence), wrapped in planning sentences; and
* an **unrelated** thinking of similar length: the same construction applied to another item's
  reference of the same language (and, when that is too short, the next one's), trimmed at an
  item boundary to the outline's length in characters,

scores both through :func:`reer_assets.core.objective.build_score_request` with any
:class:`~reer_assets.core.protocols.Scorer`, and reports the share of items whose outline scores
lower and the mean gap (unrelated − outline, in score units). Pure Python: no model imports.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

from reer_assets.core.language import ZH, prompt_language
from reer_assets.core.objective import ObjectiveSettings, build_score_request, score_of
from reer_assets.core.protocols import Scorer
from reer_assets.core.segment import segment

# -- the outline rule ------------------------------------------------------------------------------

# Function words that never count towards a key phrase's weight (English).
_EN_STOP = frozenset("""
a an the and or but if so of to in on at by for with from into onto over under up down out off as is are was
were be been being am it its it's this that these those there here then than too very just not no nor do does
did done have has had having i me my we us our you your he him his she her they them their what which who whom
whose when where why how all any both each few more most other some such only own same can will would should
could may might must shall about after again against before below between during through until while once
""".split())
_EN_NUMBER_WORDS = frozenset("""
one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen
eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million half dozen
""".split())
_EN_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’\-.,%/°]*[A-Za-z0-9%°]|[A-Za-z0-9]")
_EN_SENTENCE = re.compile(r"(?<=[.!?])[\"”’)]*\s+|\n+")
_ZH_SENTENCE = re.compile(r"[。！？；\n]+")
_ZH_CLAUSE = re.compile(r"[，、：,:“”‘’《》「」（）()—…\s]+")
_ZH_QUOTED = re.compile(r"[“「《]([^”」》]{1,16})[”」》]")
_ZH_NUMBER = re.compile(r"[0-9０-９.％%]+[^\s，。、：；！？“”]?|[零一二两三四五六七八九十百千万]{2,}[^\s，。、：；！？“”]?")
KEY_PHRASE_WORDS = 4  # English key phrase: this many consecutive words
KEY_PHRASE_CHARS = 8  # Chinese key phrase: at most this many characters


@dataclass(frozen=True)
class OutlineItems:
    names: list[str]
    numbers: list[str]
    phrases: list[str]


def _unique(values: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for v in values:
        v = v.strip()
        if v and v not in seen:
            seen[v] = None
    return list(seen)


def _strip_word(word: str) -> str:
    return word.strip(".,;:!?\"“”‘’'()")


def _en_items(text: str) -> OutlineItems:
    names, numbers, phrases = [], [], []
    for sentence in _EN_SENTENCE.split(text):
        raw = sentence.split()  # words as written: a run of them is a substring of the reference
        words = [_strip_word(w) for w in raw]
        k = 0
        while k < len(words):
            word = words[k]
            # a name: a capitalised word that does not open the sentence, with the capitalised words after it
            if k > 0 and word[:1].isupper() and word.lower() not in _EN_STOP:
                run = [word]
                while k + 1 < len(words) and words[k + 1][:1].isupper() and raw[k][-1:].isalnum():
                    k += 1
                    run.append(words[k])
                names.append(" ".join(run))
            # a number: a word with a digit, or a number word, together with the word after it
            elif any(c.isdigit() for c in word) or word.lower() in _EN_NUMBER_WORDS:
                span = raw[k : k + 2] if raw[k][-1:].isalnum() else raw[k : k + 1]
                numbers.append(_strip_word(" ".join(span)))
            k += 1
        # a key phrase: the window of KEY_PHRASE_WORDS words with the most letters outside function words
        if len(words) >= KEY_PHRASE_WORDS:
            def weight(start: int) -> int:
                return sum(len(w) for w in words[start : start + KEY_PHRASE_WORDS] if w.lower() not in _EN_STOP)
            best = max(range(len(words) - KEY_PHRASE_WORDS + 1), key=lambda s: (weight(s), -s))
            phrases.append(_strip_word(" ".join(raw[best : best + KEY_PHRASE_WORDS])))
        elif words:
            phrases.append(_strip_word(" ".join(raw)))
    return OutlineItems(_unique(names), _unique(numbers), _unique(phrases))


def _zh_items(text: str) -> OutlineItems:
    names = _unique(_ZH_QUOTED.findall(text))
    numbers = _unique(m.group(0) for m in _ZH_NUMBER.finditer(text))
    phrases = []
    for sentence in _ZH_SENTENCE.split(text):
        clauses = [c for c in _ZH_CLAUSE.split(sentence) if c]
        clauses = [c for c in clauses if re.search(r"[\u4e00-\u9fff0-9A-Za-z]", c)]
        if clauses:
            longest = max(clauses, key=len)  # the first of the longest
            phrases.append(longest[:KEY_PHRASE_CHARS])
    return OutlineItems(names, numbers, _unique(phrases))


def outline_items(reference: str) -> OutlineItems:
    """Names, numbers and key phrases of ``reference``, each list in order of first appearance.

    English (split into sentences at ``.!?`` and line breaks, words as written):
      * names: a capitalised word that is not a sentence's first word and not a function word,
        joined with the capitalised words right after it ("Fulton Street");
      * numbers: a word holding a digit, or a number word ("three", "hundred"), with the word
        after it ("2016", "three in", "48-metre steel");
      * key phrases: from every sentence, the run of four consecutive words with the most letters
        outside function words (the earliest such run on a tie); a shorter sentence whole.
    Chinese (sentences end at 。！？； and line breaks; clauses at commas and quotes):
      * names: text inside “”, 「」 or 《》, up to 16 characters;
      * numbers: a run of digits, or of two or more Chinese numerals, with the character after it;
      * key phrases: from every sentence, the first of its longest clauses, cut to 8 characters.
    The language is the prompt language of the reference (any CJK ideograph: Chinese).
    """
    return _zh_items(reference) if prompt_language(reference) == ZH else _en_items(reference)


def _en_join(values: Sequence[str]) -> str:
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1]


def _outline_parts(items: OutlineItems, language: str) -> list[str]:
    """The outline thinking as a list of parts (whole sentences or draft lines), in order."""
    parts: list[str] = []
    if language == ZH:
        parts.append("我先想清楚这篇东西里会出现什么。")
        if items.names:
            parts.append("要提到的名字和说法有：" + "、".join(items.names) + "。")
        if items.numbers:
            parts.append("要写准的数字是：" + "、".join(items.numbers) + "。")
        parts.append("\n\n---\n\n提纲大致如下。")
        parts.extend(f"\n{phrase}……" for phrase in items.phrases)
    else:
        parts.append("Let me pin down what the piece has to contain before I write it.")
        if items.names:
            parts.append(" The names that come up: " + _en_join(items.names) + ".")
        if items.numbers:
            parts.append(" The figures I must get right: " + _en_join(items.numbers) + ".")
        parts.append("\n\n---\n\nA rough outline, in order.")
        parts.extend(f"\n{phrase} ..." for phrase in items.phrases)
    return parts


def outline_thinking(reference: str) -> str:
    """A planning monologue that names the reference's items (see :func:`outline_items`)."""
    language = prompt_language(reference)
    return "".join(_outline_parts(outline_items(reference), language))


def unrelated_thinking(others: Sequence[str], target_chars: int, language: str) -> str:
    """The outline construction applied to ``others`` (other references, in turn) until it reaches
    ``target_chars`` characters: whole parts while they fit, then the start of the next part, cut
    at a space in English, so that the result is at most ``target_chars`` long and only a word shorter."""
    parts: list[str] = []
    for reference in others:
        if parts:
            parts.append("\n\n")
        parts.extend(_outline_parts(outline_items(reference), language))
        if sum(len(p) for p in parts) >= target_chars:
            break
    text = ""
    for part in parts:
        if len(text) + len(part) > target_chars:
            room = part[: target_chars - len(text)]
            if language != ZH and " " in room:
                room = room[: room.rindex(" ")]
            text += room
            break
        text += part
    return text.rstrip()


# -- the control -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ControlItem:
    item_id: str
    query: str
    reference: str

    @property
    def language(self) -> str:
        return prompt_language(self.reference)


@dataclass(frozen=True)
class ControlRow:
    item_id: str
    language: str
    outline_score: float
    unrelated_score: float
    gap: float  # unrelated − outline: positive when the outline helps
    outline_chars: int
    unrelated_chars: int
    scored_tokens: int


def bundled_items(pieces: Iterable[dict]) -> list[ControlItem]:
    """The bundled corpus pieces (both languages: ``reer_assets.data.corpus()``), with their requests."""
    return [ControlItem(p["id"], p["request"], p["text"]) for p in pieces]


def control_thinkings(items: Sequence[ControlItem]) -> list[tuple[str, str]]:
    """(outline, unrelated) thinking per item. The unrelated one comes from the items of the same
    language half-way round the list (sorted by id), then the ones after it."""
    out = []
    by_language: dict[str, list[ControlItem]] = {}
    for item in sorted(items, key=lambda i: i.item_id):
        by_language.setdefault(item.language, []).append(item)
    for item in items:
        peers = by_language[item.language]
        k = peers.index(item)
        rotation = [peers[(k + len(peers) // 2 + j) % len(peers)] for j in range(len(peers))]
        others = [p.reference for p in rotation if p.item_id != item.item_id]
        outline = outline_thinking(item.reference)
        out.append((outline, unrelated_thinking(others, len(outline), item.language)))
    return out


def run_control(scorer: Scorer, items: Sequence[ControlItem], limit: int | None = None,
                settings: ObjectiveSettings = ObjectiveSettings()) -> dict:
    """Score each item's outline and unrelated thinking (``items``: :func:`bundled_items`); the report as a
    JSON-ready dict."""
    items = list(items)
    thinkings = control_thinkings(items)  # built on all items, so a limit does not change the pairs
    if limit is not None:
        items, thinkings = items[:limit], thinkings[:limit]
    rows = []
    for item, (outline, unrelated) in zip(items, thinkings):
        reference = segment(item.reference)
        results = scorer.score([build_score_request(item.query, outline, reference),
                                build_score_request(item.query, unrelated, reference)])
        good, bad = (score_of(r, settings) for r in results)
        rows.append(ControlRow(item.item_id, item.language, round(good, 4), round(bad, 4), round(bad - good, 4),
                               len(outline), len(unrelated), len(results[0].token_logprobs)))
    return control_report(rows, getattr(scorer, "model_id", "?"))


def _summary(rows: Sequence[ControlRow]) -> dict:
    n = len(rows)
    if not n:
        return {"items": 0, "share_outline_better": None, "mean_gap": None}
    return {
        "items": n,
        "share_outline_better": round(sum(r.outline_score < r.unrelated_score for r in rows) / n, 4),
        "mean_gap": round(sum(r.gap for r in rows) / n, 4),
        "mean_outline_score": round(sum(r.outline_score for r in rows) / n, 4),
        "mean_unrelated_score": round(sum(r.unrelated_score for r in rows) / n, 4),
    }


def control_report(rows: Sequence[ControlRow], model_id: str) -> dict:
    languages = sorted({r.language for r in rows})
    return {
        "scorer_model": model_id,
        **_summary(rows),
        "by_language": {lang: _summary([r for r in rows if r.language == lang]) for lang in languages},
        "rows": [asdict(r) for r in rows],
    }
