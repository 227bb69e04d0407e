"""Synthetic training text for the embedded scorer: documents whose thinking previews them.

Each :class:`ScorerDocument` is a made-up request, a planning monologue (the thinking) and a piece
(the answer), in English or Chinese, generated from the word lists and frames of
:mod:`reer_assets.data.scorer.words` by a seeded random generator. The piece is a small invented
world (people, places, groups, objects, numbers, dates) told in short sentences. The thinking of a
*related* document names many of the piece's items (names, number phrases, verbatim word runs) in a
shuffled order, wrapped in planning talk, often followed by a ``---`` draft (most sentences of
the piece as they will stand) or a sketch (the first words of each paragraph); the thinking of an
*unrelated* document is the thinking of another,
independent world. So a model trained on this text learns to reuse what the thinking names when the
names recur in the piece, and not to trust a thinking blindly.

Nothing here comes from the bundled corpus or the benchmark references
(:func:`reer_assets.backends.embedded_scorer.contamination_report` measures it at every build).
``pieces`` may add names made of raw tokenizer pieces (sub-word strings), so that every token of the
vocabulary is seen as something that can be copied, not only the words of these lists.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Sequence

from reer_assets.data.scorer import words as W

SCORER_TEXT_VERSION = "scorer-text-v1"


@dataclass(frozen=True)
class ScorerDocument:
    language: str  # en | zh
    query: str
    thinking: str
    answer: str
    related: bool  # the thinking was built from this answer


@dataclass
class _World:
    language: str
    people: list[str]
    places: list[str]
    groups: list[str]
    objects: list[str]
    numbers: list[str]
    times: list[str]
    used: dict[str, list[str]] = field(default_factory=dict)


# -- English worlds --------------------------------------------------------------------------------


def _syllables(rng: random.Random, count: int) -> str:
    return "".join(rng.choice(W.EN_ONSETS) + rng.choice(W.EN_VOWELS) + rng.choice(W.EN_CODAS) for _ in range(count))


def _piece_word(rng: random.Random, pieces: Sequence[str], latin: bool) -> str:
    word = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 2))).strip()
    return word[:1].upper() + word[1:] if latin else word


def _en_name(rng: random.Random, pieces: Sequence[str], share: float) -> str:
    if pieces and rng.random() < share:
        word = _piece_word(rng, pieces, latin=True)
        if word:
            return word
    return _syllables(rng, rng.randint(1, 3)).capitalize()


def _en_number(rng: random.Random) -> str:
    kind = rng.random()
    unit = rng.choice(W.EN_UNITS)
    if kind < 0.35:
        return f"{rng.randint(2, 999)} {unit}"
    if kind < 0.55:
        return f"{rng.choice(W.EN_NUMBER_WORDS)} {unit}"
    if kind < 0.7:
        return f"{rng.randint(1, 99)}.{rng.randint(1, 9)} {unit}"
    if kind < 0.85:
        return f"{rng.randint(1, 9)},{rng.randint(0, 999):03d} {unit}"
    return f"{rng.randint(2, 97)} percent"


def _en_time(rng: random.Random) -> str:
    frame = rng.choice(W.EN_TIME_FRAMES)
    return frame.format(day=rng.choice(W.EN_DAYS), month=rng.choice(W.EN_MONTHS), d=rng.randint(1, 28),
                        h=rng.randint(1, 12), m2=f"{rng.choice((0, 10, 15, 20, 30, 40, 45, 50)):02d}",
                        year=rng.randint(1890, 2049), num=rng.choice(W.EN_NUMBER_WORDS[:12]),
                        unit=rng.choice(("days", "weeks", "months", "years", "hours")))


def _en_world(rng: random.Random, pieces: Sequence[str], share: float) -> _World:
    people = []
    for _ in range(rng.randint(2, 4)):
        first = _en_name(rng, pieces, share)
        people.append(first if rng.random() < 0.4 else f"{first} {_en_name(rng, pieces, share)}")
    places = [(_syllables(rng, rng.randint(1, 2)).capitalize() + rng.choice(W.EN_PLACE_TAILS))
              for _ in range(rng.randint(1, 3))]
    # no article: every frame puts its own before {g}
    groups = [f"{_en_name(rng, pieces, share)} {rng.choice(W.EN_GROUP_TAILS)}" if rng.random() < 0.5
              else rng.choice(W.EN_GROUPS_PLAIN) for _ in range(rng.randint(1, 2))]
    objects = []
    for _ in range(rng.randint(2, 5)):
        noun = rng.choice(W.EN_NOUNS)
        form = rng.random()
        if form < 0.45:
            noun = f"{rng.choice(W.EN_ADJECTIVES)} {noun}"
        elif form < 0.6:
            noun = f"{noun} of {rng.choice(people).split()[0]}"
        elif form < 0.7:
            noun = f"{rng.choice(W.EN_ADJECTIVES)} {rng.choice(W.EN_NOUNS)} {noun}"
        objects.append(noun)
    numbers = [_en_number(rng) for _ in range(rng.randint(3, 6))]
    times = [_en_time(rng) for _ in range(rng.randint(2, 4))]
    return _World("en", people, places, groups, objects, numbers, times)


def _fill(frame: str, world: _World, rng: random.Random) -> str:
    en = world.language == "en"
    slots = {
        "p": world.people, "q": world.people, "l": world.places, "g": world.groups, "o": world.objects,
        "n": world.numbers, "t": world.times,
    }

    def value(match: re.Match) -> str:
        slot = match.group(1)
        if slot in slots:
            chosen = rng.choice(slots[slot])
            world.used.setdefault(slot, []).append(chosen)
            return chosen
        if slot == "a":
            return rng.choice(W.EN_ADJECTIVES if en else W.ZH_ADJECTIVES)
        if slot == "v":
            return rng.choice(W.EN_VERBS if en else W.ZH_VERBS)
        return rng.choice(W.EN_PLAIN_NOUNS if en else W.ZH_PLAIN_NOUNS)

    text = re.sub(r"\{(\w)\}", value, frame)
    return text[:1].upper() + text[1:] if en else text


_EN_LOWER_AFTER_OPENER = {"The", "A", "It", "Our", "Each", "Every", "Half", "Inside", "Behind", "Near", "Nobody",
                          "Then", "First", "When", "Ask", "You", "We", "On", "In", "By", "At", "Before",
                          "Since", "After", "Last"}


def _paragraphs(world: _World, rng: random.Random, target_units: int) -> list[str]:
    en = world.language == "en"
    frames = W.EN_SENTENCES if en else W.ZH_SENTENCES
    openers = W.EN_PARAGRAPH_OPENERS if en else W.ZH_PARAGRAPH_OPENERS
    paragraphs, units = [], 0
    while units < target_units or len(paragraphs) < 2:
        sentences = [_fill(rng.choice(frames), world, rng) for _ in range(rng.randint(1, 5))]
        opener = rng.choice(openers)
        if opener and en:
            first, _, rest = sentences[0].partition(" ")
            sentences[0] = opener + (first.lower() if first in _EN_LOWER_AFTER_OPENER else first) + " " + rest
        elif opener:
            sentences[0] = opener + sentences[0]
        paragraph = (" " if en else "").join(sentences)
        paragraphs.append(paragraph)
        units += len(paragraph.split()) if en else len(paragraph)
    return paragraphs


# -- Chinese worlds --------------------------------------------------------------------------------


def _zh_number_word(value: int) -> str:
    if value < 10:
        return W.ZH_DIGITS[value]
    tens, ones = divmod(value, 10)
    return ("" if tens == 1 else W.ZH_DIGITS[tens]) + "十" + (W.ZH_DIGITS[ones] if ones else "")


def _zh_name(rng: random.Random, pieces: Sequence[str], share: float) -> str:
    if pieces and rng.random() < share:
        word = _piece_word(rng, pieces, latin=False)
        if word:
            return rng.choice(W.ZH_SURNAMES) + word
    form = rng.random()
    given = "".join(rng.choice(W.ZH_GIVEN) for _ in range(rng.randint(1, 2)))
    if form < 0.15:
        return "老" + rng.choice(W.ZH_SURNAMES)
    if form < 0.25:
        return "小" + given[0]
    return rng.choice(W.ZH_SURNAMES) + given


def _zh_number(rng: random.Random) -> str:
    kind = rng.random()
    unit = rng.choice(W.ZH_UNITS)
    if kind < 0.4:
        return f"{rng.randint(2, 999)}{unit}"
    if kind < 0.75:
        return f"{_zh_number_word(rng.randint(2, 99))}{unit}"
    if kind < 0.9:
        return f"{rng.randint(1, 99)}.{rng.randint(1, 9)}{unit}"
    return f"百分之{_zh_number_word(rng.randint(2, 99))}"


def _zh_time(rng: random.Random) -> str:
    frame = rng.choice(W.ZH_TIME_FRAMES)
    return frame.format(y=rng.randint(1890, 2049), mo=rng.randint(1, 12), d=rng.randint(1, 28),
                        wd=rng.choice("一二三四五六日"), h=_zh_number_word(rng.randint(1, 12)),
                        k=_zh_number_word(rng.randint(2, 30)))


def _zh_world(rng: random.Random, pieces: Sequence[str], share: float) -> _World:
    people = [_zh_name(rng, pieces, share) for _ in range(rng.randint(2, 4))]
    places = [rng.choice(W.ZH_PLACE_HEADS) + rng.choice(W.ZH_PLACE_MIDS) + rng.choice(W.ZH_PLACE_TAILS)
              for _ in range(rng.randint(1, 3))]
    groups = [rng.choice(W.ZH_PLACE_HEADS) + rng.choice(W.ZH_PLACE_MIDS) + rng.choice(W.ZH_GROUP_TAILS)
              if rng.random() < 0.5 else rng.choice(W.ZH_GROUPS_PLAIN) for _ in range(rng.randint(1, 2))]
    objects = []
    for _ in range(rng.randint(2, 5)):
        noun = rng.choice(W.ZH_NOUNS)
        form = rng.random()
        if form < 0.4:
            noun = rng.choice(W.ZH_ADJECTIVES) + noun
        elif form < 0.6:
            noun = rng.choice(people) + "的" + noun
        objects.append(noun)
    numbers = [_zh_number(rng) for _ in range(rng.randint(3, 6))]
    times = [_zh_time(rng) for _ in range(rng.randint(2, 4))]
    return _World("zh", people, places, groups, objects, numbers, times)


# -- requests and thinkings ------------------------------------------------------------------------


def _query(world: _World, rng: random.Random, length: int) -> tuple[str, str, str]:
    en = world.language == "en"
    genre = rng.choice(W.EN_GENRES if en else W.ZH_GENRES)
    audience = rng.choice(W.EN_AUDIENCES if en else W.ZH_AUDIENCES)
    if en:
        topic = rng.choice((f"the {rng.choice(world.objects)} at {rng.choice(world.places)}",
                            f"{rng.choice(world.people)} and the {rng.choice(world.objects)}",
                            f"what happened at {rng.choice(world.places)}"))
        frame = rng.choice(W.EN_QUERY_FRAMES)
    else:
        topic = rng.choice((f"{rng.choice(world.places)}的{rng.choice(world.objects)}",
                            f"{rng.choice(world.people)}和{rng.choice(world.objects)}",
                            f"{rng.choice(world.places)}发生的事"))
        frame = rng.choice(W.ZH_QUERY_FRAMES)
    words = max(50, round(length, -1))
    return frame.format(genre=genre, audience=audience, topic=topic, words=words), genre, audience


def _chunks(paragraphs: list[str], rng: random.Random, en: bool, count: int) -> list[str]:
    """Verbatim runs of the piece: 2-7 words (English) or 3-9 characters inside one clause (Chinese)."""
    out = []
    for _ in range(count):
        paragraph = rng.choice(paragraphs)
        if en:
            tokens = paragraph.split()
            size = min(len(tokens), rng.randint(2, 7))
            start = rng.randint(0, len(tokens) - size)
            out.append(" ".join(tokens[start : start + size]).strip(".,;:"))
        else:
            clauses = [c for c in re.split(r"[，。：；！？、]", paragraph) if len(c) >= 3]
            if not clauses:
                continue
            clause = rng.choice(clauses)
            size = min(len(clause), rng.randint(3, 9))
            start = rng.randint(0, len(clause) - size)
            out.append(clause[start : start + size])
    return [c for c in out if c]


def _thinking(world: _World, paragraphs: list[str], genre: str, audience: str, rng: random.Random,
              settings: "TextSettings") -> str:
    en = world.language == "en"
    items = sorted({x for values in world.used.values() for x in values})
    rng.shuffle(items)
    items = items[: max(1, min(settings.max_items, round(len(items) * rng.uniform(0.5, 1.0))))]
    items += _chunks(paragraphs, rng, en, rng.randint(1, max(1, min(settings.max_chunks, 4 + len(paragraphs)))))
    rng.shuffle(items)
    plan_item = W.EN_PLAN_ITEM if en else W.ZH_PLAN_ITEM
    fillers = W.EN_PLAN_FILLER if en else W.ZH_PLAN_FILLER
    sentences = [rng.choice(W.EN_PLAN_OPEN if en else W.ZH_PLAN_OPEN).format(genre=genre, audience=audience)]
    for item in items:
        if rng.random() < 0.15:
            sentences.append(rng.choice(fillers))
        sentence = rng.choice(plan_item).format(x=item)
        sentences.append(sentence[:1].upper() + sentence[1:] if en else sentence)
    groups: list[list[str]] = [[]]
    for sentence in sentences:
        if groups[-1] and rng.random() < 0.2:
            groups.append([])
        groups[-1].append(sentence)
    thinking = "\n\n".join((" " if en else "").join(g) for g in groups)
    draft, draft_share = rng.random(), settings.draft_share
    if draft < draft_share:
        # a rough draft: most sentences of each paragraph as they will stand, some left out
        lines = []
        for paragraph in paragraphs:
            sentences = _split_sentences(paragraph, en)
            kept = [x for x in sentences if rng.random() < settings.draft_keep] or sentences[:1]
            lines.append((" " if en else "").join(kept))
        thinking += "\n\n" + W.EN_DRAFT_MARK + "\n\n" + "\n\n".join(lines)
    elif draft < draft_share + 0.25:
        # a sketch: the first words of each paragraph
        if en:
            lines = [" ".join(p.split()[: rng.randint(3, 8)]) + " ..." for p in paragraphs]
        else:
            lines = [p[: rng.randint(5, 12)] + "……" for p in paragraphs]
        thinking += "\n\n" + W.EN_DRAFT_MARK + "\n\n" + "\n\n".join(lines)
    return thinking


def _split_sentences(paragraph: str, en: bool) -> list[str]:
    if en:
        return [x for x in re.split(r"(?<=[.!?]) ", paragraph) if x]
    return [x for x in re.split(r"(?<=[。！？])", paragraph) if x]


@dataclass(frozen=True)
class TextSettings:
    zh_share: float = 0.3  # documents in Chinese
    unrelated_share: float = 0.2  # documents whose thinking belongs to another, independent piece
    draft_share: float = 0.35  # related thinkings that end with a rough draft of the piece
    draft_keep: float = 0.75  # share of the piece's sentences a draft keeps as they will stand
    piece_name_share: float = 0.5  # names made of tokenizer pieces (when pieces are given)
    max_items: int = 18  # names and numbers a thinking mentions, at most
    max_chunks: int = 12  # verbatim word runs a thinking quotes, at most
    en_words: tuple[int, int] = (40, 300)  # piece length, words
    zh_chars: tuple[int, int] = (80, 520)  # piece length, characters


def _document(rng: random.Random, language: str, pieces_en: Sequence[str], pieces_zh: Sequence[str],
              settings: TextSettings):
    if language == "en":
        world = _en_world(rng, pieces_en, settings.piece_name_share)
    else:
        world = _zh_world(rng, pieces_zh, settings.piece_name_share)
    target = rng.randint(*settings.en_words) if language == "en" else rng.randint(*settings.zh_chars)
    paragraphs = _paragraphs(world, rng, target)
    query, genre, audience = _query(world, rng, target)
    return query, _thinking(world, paragraphs, genre, audience, rng, settings), "\n\n".join(paragraphs)


def scorer_documents(count: int, seed: int, settings: TextSettings = TextSettings(),
                     pieces: Sequence[str] = ()) -> list[ScorerDocument]:
    """``count`` documents, the same ones for the same arguments."""
    rng = random.Random(f"{SCORER_TEXT_VERSION}:{seed}")
    pieces_en = [p for p in pieces if re.fullmatch(r" ?[A-Za-z]{2,}", p)]
    pieces_zh = [p for p in pieces if re.fullmatch(r"[\u4e00-\u9fff]{1,2}", p)]
    docs = []
    for _ in range(count):
        language = "zh" if rng.random() < settings.zh_share else "en"
        query, thinking, answer = _document(rng, language, pieces_en, pieces_zh, settings)
        related = rng.random() >= settings.unrelated_share
        if not related:
            _, thinking, _ = _document(rng, language, pieces_en, pieces_zh, settings)
        docs.append(ScorerDocument(language, query, thinking, answer, related))
    return docs

