"""The English and Chinese prompt sets the engine sends to the generator (docs/algorithm.md).

Wording is the project's own. Every generator task has one builder here, and the
embedded model is trained on exactly these renderings, so changing a text here
changes ``PROMPT_SET_VERSION`` and therefore the embedded model's build hash.

Another catalogue (``REER_PROMPTS``: a file in this schema, or the official code's templates;
``lib/prompt_sets.py`` loads it) can be put in force for a block with :func:`use_prompts`;
:func:`prompts_for` then answers from it. Core never reads the setting itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
from dataclasses import dataclass, fields, replace
from typing import Iterator

from reer_assets.core.language import EN, ZH, prompt_language
from reer_assets.core.protocols import Message

PROMPT_SET_VERSION = "reer-prompts-v2"
SYSTEM_PROMPT = "You are a helpful assistant."
ANALYZE_OPEN = "<analyze>\n"

# The standard inference prompt: what a user of the trained model sends, and the context the
# scorer reads (never the reference). It asks for the thinking first, then the piece.
_EN_INFERENCE = """{query}

Before you write, think the task through in the first person, as an inner monologue in the present and future tense, inside one <think></think> block. Work out what the user is really after and who will read the piece, then what it has to say, then how to build it: the opening, the order of the middle, the close. For anything longer than a few paragraphs, end the thinking with a line of three dashes and an outline or a rough draft that you will grow into the final text. Question your own plan as you go, with turns such as "Hmm, maybe", "Wait,", "Let me think" or "Alternatively,". Keep to plain paragraphs: no bullet points, no numbered lists, no headings, and nothing written as if it had already happened. After </think>, give the finished piece inside <answer></answer>."""

_ZH_INFERENCE = """{query}

动笔之前，请先用第一人称、以现在时和将来时的内心独白，把这项任务想清楚，全部写在一个 <think></think> 块里。先弄明白用户真正想要什么、读者是谁，再想要写哪些内容，最后想怎么搭建：怎样开头，中间按什么顺序展开，怎样收尾。篇幅较长时，在思考的末尾另起一行写三个短横线，接着写提纲或草稿，之后再把它扩展成正文。思考时要不断审视自己的想法，用上“嗯，也许”“等等，”“让我想想”“或者”这样的转折。只写普通段落：不用项目符号，不用编号，不用标题，也不要写成已经发生的事。</think> 之后，把完成的作品写在 <answer></answer> 中。"""

_EN_INITIAL = """Below is a writing request and a finished piece that answers it. Reconstruct the thinking a skilled writer goes through before writing this piece.

Write it as an inner monologue in the first person, in the present and future tense, inside one <think> block. Work out what the user wants and who the reader is, then the content, then the structure. For a long piece, add a line of three dashes and then an outline or a rough draft. Let the reasoning turn back on itself with cues such as "Hmm, maybe", "Wait,", "Let me think" and "Alternatively,". Use plain paragraphs separated by blank lines, with no bullet points and no headings. Never copy sentences from the piece: the thinking comes before the writing.

[Request]
{query}

[Piece]
{reference}"""

_EN_EDIT = """You are improving one paragraph of a writer's planning monologue so that it leads more directly to the finished piece.

[Request]
{query}

[Finished piece]
{reference}

[Monologue before the paragraph]
{before}

[Paragraph to rewrite]
{target}

[Monologue after the paragraph]
{after}

First, inside <analyze></analyze>, say what the paragraph does and what it misses compared with the finished piece. Then write the new paragraph inside <refine></refine>. Keep its opening words and its tone, in the first person, with no lists or headings.{draft_note}"""

_EN_DRAFT_NOTE = " This paragraph is the draft: make it a concrete prototype of the finished piece, neither vague nor a copy of it."

_EN_SYNTH = """Here is a piece of writing. Write the request a user would have sent to get exactly this text: its genre, its audience, its rough length and the constraints it meets. Use the language of the text and one to three sentences, as the user would write them. Do not quote the text and do not give away its details.

[Text]
{text}"""

_ZH_INITIAL = """下面是一条写作请求和一篇回应它的完成稿。请还原一位优秀作者在动笔之前的思考过程。

用第一人称、现在时和将来时写成内心独白，放在一个 <think> 块中。先弄清用户想要什么、读者是谁，再想内容，再想结构。篇幅较长时，另起一行写三个短横线，然后写提纲或草稿。思考中要自然地回头审视，使用“嗯，也许”“等等，”“让我想想”“或者”之类的提示语。只用空行分隔的普通段落，不用项目符号，不用标题。不要照抄完成稿中的句子：思考发生在写作之前。

【请求】
{query}

【完成稿】
{reference}"""

_ZH_EDIT = """请改进作者构思独白中的一个段落，使它更直接地引向完成稿。

【请求】
{query}

【完成稿】
{reference}

【该段之前的独白】
{before}

【需要改写的段落】
{target}

【该段之后的独白】
{after}

先在 <analyze></analyze> 中说明这个段落在做什么、与完成稿相比缺少什么；再把新段落写在 <refine></refine> 中。保留原段落的开头和语气，使用第一人称，不用列表或标题。{draft_note}"""

_ZH_DRAFT_NOTE = "这一段是草稿：把它写成完成稿的具体雏形，既不空泛，也不照抄。"

_ZH_SYNTH = """下面是一段文字。请写出用户为了得到这段文字会发出的请求：体裁、读者、大致篇幅以及它满足的要求。用这段文字的语言写一到三句话，像用户本人那样表达。不要引用原文，也不要泄露其中的细节。

【文字】
{text}"""


@dataclass(frozen=True)
class PromptSet:
    language: str
    initial_template: str
    edit_template: str
    draft_note: str
    synth_template: str
    inference_template: str
    edit_lead_in: str
    openers: tuple[tuple[str, float], ...]
    empty_marker: str
    version: str = PROMPT_SET_VERSION
    system_prompt: str = SYSTEM_PROMPT

    def _chat(self, user: str) -> list[Message]:
        return [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": user}]

    def inference_messages(self, query: str) -> list[Message]:
        """The standard inference prompt: the request plus the thinking instructions (never the reference)."""
        return self._chat(self.inference_template.format(query=query))

    @property
    def edit_prefill(self) -> str:
        """What the assistant turn of a segment edit starts with: a one-line lead-in, then ``<analyze>``."""
        return self.edit_lead_in + ANALYZE_OPEN

    def initial_thinking_messages(self, query: str, reference: str) -> list[Message]:
        return self._chat(self.initial_template.format(query=query, reference=reference))

    def segment_edit_messages(
        self,
        query: str,
        reference: str,
        before: list[str],
        target: str,
        after: list[str],
        is_draft: bool,
        separator: str = "\n\n",
    ) -> list[Message]:
        text = self.edit_template.format(
            query=query,
            reference=reference,
            before=separator.join(before) if before else self.empty_marker,
            target=target,
            after=separator.join(after) if after else self.empty_marker,
            draft_note=self.draft_note if is_draft else "",
        )
        return self._chat(text)

    def query_synthesis_messages(self, text: str) -> list[Message]:
        return self._chat(self.synth_template.format(text=text))

    def draw_opener(self, rng: random.Random) -> str:
        """An opener for the initial rollout, drawn with the given seeded RNG."""
        texts = [t for t, _ in self.openers]
        weights = [w for _, w in self.openers]
        return rng.choices(texts, weights=weights, k=1)[0]


ENGLISH = PromptSet(
    language=EN,
    initial_template=_EN_INITIAL,
    edit_template=_EN_EDIT,
    draft_note=_EN_DRAFT_NOTE,
    synth_template=_EN_SYNTH,
    inference_template=_EN_INFERENCE,
    edit_lead_in="Let me see what this paragraph still lacks and what it could say to lead more directly to the target text.\n",
    openers=(("Okay, I am given", 0.2), ("Alright, the user", 0.48), ("Alright", 0.32)),
    empty_marker="(nothing)",
)

CHINESE = PromptSet(
    language=ZH,
    initial_template=_ZH_INITIAL,
    edit_template=_ZH_EDIT,
    draft_note=_ZH_DRAFT_NOTE,
    synth_template=_ZH_SYNTH,
    inference_template=_ZH_INFERENCE,
    edit_lead_in="我来看看这一段还缺什么、还能补充什么，才能更直接地引向目标文本。\n",
    openers=(("好的", 0.5), ("嗯", 0.5)),
    empty_marker="（无）",
)

PROMPT_SETS = {EN: ENGLISH, ZH: CHINESE}

# the fields a prompt set file gives per language (everything but ``language`` and ``version``)
PROMPT_FIELDS = tuple(f.name for f in fields(PromptSet) if f.name not in ("language", "version"))
# the placeholders each template may use, and those it must use
TEMPLATE_PLACEHOLDERS = {
    "inference_template": ({"query"}, {"query"}),
    "initial_template": ({"query", "reference"}, {"query", "reference"}),
    "edit_template": ({"query", "reference", "before", "target", "after", "draft_note"}, {"target"}),
    "synth_template": ({"text"}, {"text"}),
}


def set_content(prompt_set: PromptSet) -> dict:
    """A prompt set's fields as plain JSON values (openers as ``[text, weight]`` lists)."""
    out = {name: getattr(prompt_set, name) for name in PROMPT_FIELDS}
    out["openers"] = [[text, weight] for text, weight in prompt_set.openers]
    return out


def content_hash(sets: dict[str, PromptSet]) -> str:
    """A short sha256 of every field of every language: the content part of an identity."""
    payload = {lang: set_content(sets[lang]) for lang in sorted(sets)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PromptCatalogue:
    """One prompt set per language, and their identity (``reer-prompts-v2``, ``file:<sha>``, ``official:<sha>``)."""

    identity: str
    sets: dict[str, PromptSet]

    def for_query(self, query: str) -> PromptSet:
        return self.sets[prompt_language(query)]

    def to_payload(self) -> dict:
        """JSON for a workload's extras: the identity and every field per language."""
        return {"identity": self.identity, "sets": {lang: set_content(s) for lang, s in self.sets.items()}}

    @classmethod
    def from_payload(cls, payload: dict) -> "PromptCatalogue":
        identity = payload["identity"]
        sets = {lang: PromptSet(language=lang, version=identity,
                                **{**content, "openers": tuple((str(t), float(w)) for t, w in content["openers"])})
                for lang, content in payload["sets"].items()}
        return cls(identity, sets)

    def with_identity(self, identity: str) -> "PromptCatalogue":
        return PromptCatalogue(identity, {lang: replace(s, version=identity) for lang, s in self.sets.items()})


BUNDLED = PromptCatalogue(PROMPT_SET_VERSION, PROMPT_SETS)
_in_force: PromptCatalogue = BUNDLED


def active_prompts() -> PromptCatalogue:
    """The catalogue in force (the bundled one unless :func:`use_prompts` installed another)."""
    return _in_force


@contextlib.contextmanager
def use_prompts(catalogue: PromptCatalogue | None) -> Iterator[PromptCatalogue]:
    """Put ``catalogue`` in force for a block (process-wide, so worker threads see it); None keeps the current."""
    global _in_force
    saved = _in_force
    _in_force = catalogue or saved
    try:
        yield _in_force
    finally:
        _in_force = saved


def prompts_for(query: str, catalogue: PromptCatalogue | None = None) -> PromptSet:
    """The prompt set for a query, by the CJK rule of docs/algorithm.md §1, from ``catalogue`` or the one in force."""
    return (catalogue or _in_force).for_query(query)
