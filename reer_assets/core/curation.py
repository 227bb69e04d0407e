"""Quality filters for refined trajectories (docs/algorithm.md).

One small class per filter: a ``name``, its settings as fields, and ``reason_or_none(row)``. A row
is rejected with *all* the reasons that apply; nothing is dropped silently. :class:`FilterConfig`
is the flat settings surface (a run's config); :func:`filters_from` turns it into the filter list.
To add a filter, write a class with ``reason_or_none`` and append it in :func:`filters_from`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from difflib import SequenceMatcher
from typing import Any, Protocol

import polars as pl

from reer_assets.core.ids import stable_id
from reer_assets.core.language import ZH, cjk_share, length_units, prompt_language
from reer_assets.core.schemas import DATASET_ROWS

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


def tail_cue_count(thinking: str, tail_fraction: float = 0.10) -> int:
    tail = thinking[int(len(thinking) * (1 - tail_fraction)) :].lower()
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


@dataclass(frozen=True)
class Row:
    """What a filter looks at: one trajectory."""

    query: str
    thinking: str
    reference: str
    trace: dict[str, Any]

    @property
    def language(self) -> str:
        return prompt_language(self.query)


class Filter(Protocol):
    name: str

    def reason_or_none(self, row: Row) -> str | None: ...


@dataclass(frozen=True)
class UnclosedThink:
    name = "malformed_tags"

    def reason_or_none(self, row: Row) -> str | None:
        return None if row.trace.get("initial_closed", True) else "malformed_tags:unclosed_think"


@dataclass(frozen=True)
class TagInsideThinking:
    name = "malformed_tags"

    def reason_or_none(self, row: Row) -> str | None:
        return "malformed_tags:tag_inside_thinking" if TAG.search(row.thinking) else None


@dataclass(frozen=True)
class InvalidCharacters:
    name = "invalid_characters"

    def reason_or_none(self, row: Row) -> str | None:
        return "invalid_characters" if "\ufffd" in row.thinking else None


@dataclass(frozen=True)
class UnconcludedThinking:
    """Reflection cues still dense at the end: the thinking never settles."""

    tail_fraction: float = 0.10
    max_tail_cues: int = 2
    name = "unconcluded_thinking"

    def reason_or_none(self, row: Row) -> str | None:
        return "unconcluded_thinking" if tail_cue_count(row.thinking, self.tail_fraction) > self.max_tail_cues else None


@dataclass(frozen=True)
class TrigramRepetition:
    max_top3_trigram_share: float = 0.20
    name = "trigram_repetition"

    def reason_or_none(self, row: Row) -> str | None:
        return "trigram_repetition" if top3_trigram_share(row.thinking) > self.max_top3_trigram_share else None


@dataclass(frozen=True)
class ThinkingLength:
    min_units: int = 60  # words (en) / characters (zh)
    max_units: int = 3000
    name = "thinking_length"

    def reason_or_none(self, row: Row) -> str | None:
        units = length_units(row.thinking, row.language)
        if units < self.min_units:
            return "thinking_too_short"
        return "thinking_too_long" if units > self.max_units else None


@dataclass(frozen=True)
class CopiesReference:
    max_copy_chars: int = 160  # longest verbatim overlap allowed between thinking and reference
    name = "copies_reference"

    def reason_or_none(self, row: Row) -> str | None:
        return "copies_reference" if longest_overlap(row.thinking, row.reference) > self.max_copy_chars else None


@dataclass(frozen=True)
class LanguageMismatch:
    min_cjk_share_zh: float = 0.3  # a Chinese query needs mostly Chinese thinking
    max_cjk_share_en: float = 0.1
    name = "language_mismatch"

    def reason_or_none(self, row: Row) -> str | None:
        share = cjk_share(row.thinking)
        if row.language == ZH:
            return "language_mismatch" if share < self.min_cjk_share_zh else None
        return "language_mismatch" if share > self.max_cjk_share_en else None


@dataclass(frozen=True)
class ScoreAboveThreshold:
    max_final_score: float
    name = "score_above_threshold"

    def reason_or_none(self, row: Row) -> str | None:
        final = row.trace.get("final_score")
        return "score_above_threshold" if final is not None and final > self.max_final_score else None


@dataclass(frozen=True)
class NoImprovement:
    name = "no_improvement"

    def reason_or_none(self, row: Row) -> str | None:
        final, initial = row.trace.get("final_score"), row.trace.get("initial_score")
        return "no_improvement" if final is not None and initial is not None and not final < initial else None


def filters_from(config: FilterConfig) -> list[Filter]:
    """The filters a config turns on, in the order their reasons are listed."""
    filters: list[Filter] = []
    if config.reject_malformed_tags:
        filters += [UnclosedThink(), TagInsideThinking()]
    filters += [
        InvalidCharacters(),
        UnconcludedThinking(config.tail_fraction, config.max_tail_cues),
        TrigramRepetition(config.max_top3_trigram_share),
        ThinkingLength(config.min_thinking_units, config.max_thinking_units),
        CopiesReference(config.max_copy_chars),
        LanguageMismatch(config.min_thinking_cjk_share_zh, config.max_thinking_cjk_share_en),
    ]
    if config.max_final_score is not None:
        filters.append(ScoreAboveThreshold(config.max_final_score))
    if config.require_improvement:
        filters.append(NoImprovement())
    return filters


def row_reasons(query: str, thinking: str, reference: str, trace: dict[str, Any],
                config: FilterConfig | list[Filter]) -> list[str]:
    """All the reasons a trajectory row fails the per-row filters (near-duplicates are separate).

    A search that did not succeed is one reason on its own (``search_<status>:<why>``): there is
    no thinking for the other filters to judge.
    """
    if trace.get("status") != "ok":
        return [f"search_{trace.get('status')}:{trace.get('reject_reason') or 'unknown'}"]
    filters = filters_from(config) if isinstance(config, FilterConfig) else config
    row = Row(query, thinking, reference, trace)
    return [reason for f in filters if (reason := f.reason_or_none(row)) is not None]


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


# --- filtered_dataset's rows: the filter over a partition's trajectories ---------------------------------

DATASET_COLUMNS = DATASET_ROWS.schema


def filter_trajectories(trajectories: pl.DataFrame, config: FilterConfig, cfg_hash: str) -> pl.DataFrame:
    """One dataset row per trajectory with all the reasons it fails; near-duplicates by MinHash."""
    queries = NearDuplicateIndex(config.minhash_threshold, config.minhash_num_perm)
    references = NearDuplicateIndex(config.minhash_threshold, config.minhash_num_perm)
    rows = []
    for t in trajectories.sort(["document_id", "rollout"]).iter_rows(named=True):
        trace = json.loads(t["trace_json"]) if t.get("trace_json") else {"status": t["status"], "reject_reason": t["reject_reason"]}
        thinking = t["final_thinking"] or ""
        reasons = row_reasons(t["query"] or "", thinking, t["reference"] or "", trace, config)
        if t["rollout"] == 0:  # later rollouts of one document share its query and reference
            if (dup := queries.first_duplicate(t["id"], t["query"] or "")) is not None:
                reasons.append(f"near_duplicate_query:{dup}")
            if (dup := references.first_duplicate(t["id"], t["reference"] or "")) is not None:
                reasons.append(f"near_duplicate_reference:{dup}")
        rows.append({
            "id": stable_id("row", t["id"], cfg_hash), "trajectory_id": t["id"], "query_id": t["query_id"],
            "document_id": t["document_id"], "domain": t["domain"], "query": t["query"], "thinking": thinking,
            "reference": t["reference"], "initial_score": t["initial_score"], "final_score": t["final_score"],
            "status": "rejected" if reasons else "accepted", "reject_reasons": reasons, "config_hash": cfg_hash,
        })
    return keep_best_rollout(DATASET_ROWS.frame(rows))


def keep_best_rollout(frame: pl.DataFrame) -> pl.DataFrame:
    """With several rollouts of one query accepted, keep the lowest final score; reject the rest."""
    accepted = frame.filter(pl.col("status") == "accepted").sort(["query_id", "final_score", "id"])
    best = accepted.unique(subset="query_id", keep="first", maintain_order=True).select("query_id", pl.col("id").alias("best_id"))
    flagged = frame.join(best, on="query_id", how="left").with_columns(
        worse=(pl.col("status") == "accepted") & (pl.col("id") != pl.col("best_id")))
    return flagged.with_columns(
        status=pl.when(pl.col("worse")).then(pl.lit("rejected")).otherwise(pl.col("status")),
        reject_reasons=pl.when(pl.col("worse"))
        .then(pl.col("reject_reasons").list.concat(pl.concat_list(pl.concat_str(pl.lit("worse_rollout_than:"), pl.col("best_id")))))
        .otherwise(pl.col("reject_reasons")),
    ).select(list(DATASET_COLUMNS))
