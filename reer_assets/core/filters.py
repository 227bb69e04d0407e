"""Quality filters for refined trajectories (DESIGN.md §3).

Each filter returns a reason string or None. A row is rejected with *all* the reasons
that apply; nothing is dropped silently. Thresholds live in :class:`FilterConfig`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from difflib import SequenceMatcher
from typing import Any

from reer_assets.core.language import ZH, cjk_share, length_units, prompt_language

EN_CUES = ("hmm", "wait", "let me think", "alternatively", "maybe", "actually", "on second thought")
ZH_CUES = ("嗯", "等等", "让我想想", "或者", "也许", "不对")
TAG = re.compile(r"</?(think|answer|analyze|refine)>")
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class FilterConfig:
    tail_fraction: float = 0.10
    max_tail_cues: int = 2  # reflection cues allowed in the last tail_fraction of the thinking
    max_top3_trigram_share: float = 0.20
    min_thinking_units: int = 60  # words (en) / characters (zh)
    max_thinking_units: int = 3000
    max_copy_chars: int = 160  # longest verbatim overlap allowed between thinking and reference
    min_thinking_cjk_share_zh: float = 0.3  # a Chinese query needs mostly Chinese thinking
    max_thinking_cjk_share_en: float = 0.1
    minhash_threshold: float = 0.85
    minhash_num_perm: int = 64
    reject_malformed_tags: bool = True  # the demo/test profiles turn this off for the toy embedded model
    max_final_score: float | None = None  # off by default
    require_improvement: bool = False  # off by default

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tail_cue_count(thinking: str, config: FilterConfig) -> int:
    tail = thinking[int(len(thinking) * (1 - config.tail_fraction)) :].lower()
    cues = ZH_CUES if cjk_share(thinking) > 0.3 else EN_CUES
    return sum(tail.count(cue) for cue in cues)


def top3_trigram_share(text: str) -> float:
    tokens = [c for c in text if not c.isspace()] if cjk_share(text) > 0.3 else _WORD.findall(text.lower())
    trigrams = list(zip(tokens, tokens[1:], tokens[2:]))
    if len(trigrams) < 10:
        return 0.0
    top = Counter(trigrams).most_common(3)
    return sum(n for _, n in top) / len(trigrams)


def longest_overlap(a: str, b: str) -> int:
    match = SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b))
    return match.size


def row_reasons(query: str, thinking: str, reference: str, trace: dict[str, Any], config: FilterConfig) -> list[str]:
    """All the reasons a trajectory row fails the per-row filters (near-duplicates are separate)."""
    reasons: list[str] = []
    if trace.get("status") != "ok":
        return [f"search_{trace.get('status')}:{trace.get('reject_reason') or 'unknown'}"]
    language = prompt_language(query)
    if config.reject_malformed_tags and not trace.get("initial_closed", True):
        reasons.append("malformed_tags:unclosed_think")
    if config.reject_malformed_tags and TAG.search(thinking):
        reasons.append("malformed_tags:tag_inside_thinking")
    if "\ufffd" in thinking:
        reasons.append("invalid_characters")
    if tail_cue_count(thinking, config) > config.max_tail_cues:
        reasons.append("unconcluded_thinking")
    if top3_trigram_share(thinking) > config.max_top3_trigram_share:
        reasons.append("trigram_repetition")
    units = length_units(thinking, language)
    if units < config.min_thinking_units:
        reasons.append("thinking_too_short")
    if units > config.max_thinking_units:
        reasons.append("thinking_too_long")
    if longest_overlap(thinking, reference) > config.max_copy_chars:
        reasons.append("copies_reference")
    share = cjk_share(thinking)
    if (language == ZH and share < config.min_thinking_cjk_share_zh) or (language != ZH and share > config.max_thinking_cjk_share_en):
        reasons.append("language_mismatch")
    final, initial = trace.get("final_score"), trace.get("initial_score")
    if config.max_final_score is not None and final is not None and final > config.max_final_score:
        reasons.append("score_above_threshold")
    if config.require_improvement and final is not None and initial is not None and not final < initial:
        reasons.append("no_improvement")
    return reasons


@dataclass
class NearDuplicateIndex:
    """MinHash LSH over character shingles: the first text seen wins, later ones are duplicates."""

    threshold: float = 0.85
    num_perm: int = 64
    _lsh: Any = field(default=None, init=False)

    def __post_init__(self) -> None:
        from datasketch import MinHashLSH

        self._lsh = MinHashLSH(threshold=self.threshold, num_perm=self.num_perm)

    def _minhash(self, text: str):
        from datasketch import MinHash

        m = MinHash(num_perm=self.num_perm, seed=1)
        normal = re.sub(r"\s+", " ", text.lower()).strip()
        # update_batch gives the same signature as one update per shingle, about ten times faster
        m.update_batch([normal[i : i + 5].encode("utf-8") for i in range(max(1, len(normal) - 4))])
        return m

    def first_duplicate(self, key: str, text: str) -> str | None:
        """The key of an earlier near-duplicate of ``text``, else None (and ``text`` is indexed)."""
        m = self._minhash(text)
        hits = sorted(self._lsh.query(m))
        if hits:
            return hits[0]
        self._lsh.insert(key, m)
        return None
