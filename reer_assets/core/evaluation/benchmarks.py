"""Benchmark files in, one row shape out; and each benchmark's own aggregation of judge scores.

Every adapter reads a JSON-lines file and returns one row per non-blank line::

    {id, benchmark, language, prompt, required_length, criteria, status, reasons, line, meta}

``status`` is "accepted" or "rejected"; a rejected row keeps its line number and ``reasons`` (e.g.
``invalid_json``, ``not_an_object``, ``missing_field:length``, ``bad_field:length``,
``bad_criterion:2:missing_band:5-6``, ``duplicate_id:7``) and the rest of the file still loads.
``criteria`` is a list of :meth:`Criterion.to_dict` dicts (rubric criteria for WritingBench, numbered
checklist questions for HelloBench, none for LongBench-Write, whose six quality dimensions are fixed).
``language`` is the file's own field where it has one, else the CJK rule (any CJK ideograph: "zh").

Formats
-------
LongBench-Write (LongWriter's ``longbench_write.jsonl``): ``{prompt, type, length}``; no id, so the id is
``lbw-<line>``; ``required_length`` = ``length`` (words in English, characters in Chinese).

WritingBench: ``{index, domain1, domain2, lang, query, checklist: [{name, criteria_description, "1-2",
"3-4", "5-6", "7-8", "9-10"}]}`` (the requirement-subset files call the list ``criteria``; both are read).
Responses: ``{index, response}``.

HelloBench (github.com/Quehry/HelloBench, ``HelloBench/*.jsonl`` and ``data/main_data/*.jsonl``):
``{id, category, instruction, checklists: [question, …], num_checklist, …}``; older files carry the
prompt as ``chat_prompt``/``base_prompt`` instead of ``instruction``. The task (chat, summarization,
open_ended_qa, heuristic_text_generation, text_completion) is the id without its trailing number.
Responses: ``{id, response}``.

Aggregations
------------
* WritingBench (as its ``calculate_scores.py``): an item's score is the mean of its criterion scores;
  ``overall`` the mean of all criterion scores; per ``domain1`` and per ``domain2`` the mean of item
  scores; optionally the requirement subsets (style / format / length): R = mean item score of the
  subset's items, C = mean of the subset's named criteria.
* LongBench-Write: S_l per item = :func:`~reer_assets.core.evaluation.metrics.length_score` of the answer's
  length; S_q per item = 20 × the mean of the six 1-5 quality scores (so 20-100); S = (S_l + S_q) / 2.
* HelloBench: an item's score is the weighted mean of its checklist scores (each 0, 0.25, … 1) × 100;
  weights per category come from the item (``weights``), a weights map, or are equal (recorded).

Items whose judgments are not all "ok" are never scored with a stand-in: they are left out of the
means and listed under ``incomplete``.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from reer_assets.core.evaluation.judge import BANDS, QUALITY_DIMENSIONS, QUALITY_RANGE, strip_thinking
from reer_assets.core.evaluation.metrics import length_score
from reer_assets.core.experiments import bootstrap_mean
from reer_assets.core.language import length_units, prompt_language

BENCHMARKS = ("longbench-write", "writingbench", "hellobench")
HELLOBENCH_TASKS = ("open_ended_qa", "summarization", "chat", "text_completion", "heuristic_text_generation")


def _row(benchmark: str, line: int, **values: Any) -> dict[str, Any]:
    row = {"id": None, "benchmark": benchmark, "language": None, "prompt": None, "required_length": None,
           "criteria": [], "status": "accepted", "reasons": [], "line": line, "meta": {}}
    row.update(values)
    if row["reasons"]:
        row["status"] = "rejected"
    return row


def _lines(path: str | Path) -> Iterable[tuple[int, Any, str | None]]:
    """(line number, parsed value, error) per non-blank line."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line), None
            except json.JSONDecodeError:
                yield number, None, "invalid_json"


def _text(obj: Mapping[str, Any], name: str, reasons: list[str]) -> str | None:
    if name not in obj or obj[name] is None:
        reasons.append(f"missing_field:{name}")
        return None
    value = obj[name]
    if not isinstance(value, str):
        reasons.append(f"bad_field:{name}")
        return None
    if not value.strip():
        reasons.append(f"empty_field:{name}")
        return None
    return value


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    return value if isinstance(value, int) and value > 0 else None


def _language(declared: Any, text: str | None) -> str | None:
    if isinstance(declared, str) and declared.strip():
        lowered = declared.strip().lower()
        if lowered in ("zh", "zh-cn", "cn", "chinese", "中文"):
            return "zh"
        if lowered in ("en", "english"):
            return "en"
        return lowered
    return prompt_language(text) if text else None


def _mark_duplicates(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    for row in rows:
        if row["status"] != "accepted":
            continue
        if row["id"] in seen:
            row["reasons"].append(f"duplicate_id:{row['id']}")
            row["status"] = "rejected"
        seen.add(row["id"])
    return rows


def load_longbench_write(path: str | Path) -> list[dict[str, Any]]:
    rows = []
    for line, obj, error in _lines(path):
        if error or not isinstance(obj, dict):
            rows.append(_row("longbench-write", line, id=f"lbw-{line:04d}", reasons=[error or "not_an_object"]))
            continue
        reasons: list[str] = []
        prompt = _text(obj, "prompt", reasons)
        length = None
        if obj.get("length") is None:
            reasons.append("missing_field:length")
        elif (length := _positive_int(obj["length"])) is None:
            reasons.append("bad_field:length")
        kind = obj.get("type")
        if kind is not None and not isinstance(kind, str):
            reasons.append("bad_field:type")
        rows.append(_row("longbench-write", line, id=f"lbw-{line:04d}", language=_language(None, prompt), prompt=prompt,
                         required_length=length, reasons=reasons, meta={"type": kind if isinstance(kind, str) else None}))
    return rows


def _criteria(raw: Any, reasons: list[str], field_name: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        reasons.append(f"bad_field:{field_name}")
        return []
    out, names = [], set()
    for i, c in enumerate(raw, 1):
        if not isinstance(c, dict):
            reasons.append(f"bad_criterion:{i}:not_an_object")
            continue
        problems = []
        name, description = c.get("name"), c.get("criteria_description", c.get("description"))
        if not isinstance(name, str) or not name.strip():
            problems.append("missing_name")
        elif name in names:
            problems.append("duplicate_name")
        if not isinstance(description, str) or not description.strip():
            problems.append("missing_description")
        problems += [f"missing_band:{band}" for band in BANDS
                     if not isinstance(c.get(band, (c.get("bands") or {}).get(band)), str)]
        if problems:
            reasons += [f"bad_criterion:{i}:{p}" for p in problems]
            continue
        names.add(name)
        bands = c.get("bands") or {band: c[band] for band in BANDS}
        out.append({"name": name.strip(), "description": description.strip(), "bands": {b: bands[b] for b in BANDS},
                    "weight": None})
    return out


def load_writingbench(path: str | Path) -> list[dict[str, Any]]:
    rows = []
    for line, obj, error in _lines(path):
        if error or not isinstance(obj, dict):
            rows.append(_row("writingbench", line, reasons=[error or "not_an_object"]))
            continue
        reasons: list[str] = []
        index = obj.get("index")
        if index is None:
            reasons.append("missing_field:index")
        elif isinstance(index, bool) or not isinstance(index, (int, str)) or not str(index).strip():
            reasons.append("bad_field:index")
        query = _text(obj, "query", reasons)
        field_name = "checklist" if "checklist" in obj else "criteria" if "criteria" in obj else None
        criteria = _criteria(obj[field_name], reasons, field_name) if field_name else []
        if field_name is None:
            reasons.append("missing_field:checklist")
        meta = {k: obj.get(k) for k in ("domain1", "domain2")}
        rows.append(_row("writingbench", line, id=None if index is None else str(index), prompt=query,
                         language=_language(obj.get("lang"), query), criteria=criteria, reasons=reasons, meta=meta))
    return _mark_duplicates(rows)


def hellobench_task(item_id: str) -> str:
    """The HelloBench task of an id such as ``open_ended_qa_003`` (the id without its trailing number)."""
    head, sep, tail = item_id.rpartition("_")
    return head if sep and tail.isdigit() else item_id


def load_hellobench(path: str | Path) -> list[dict[str, Any]]:
    rows = []
    for line, obj, error in _lines(path):
        if error or not isinstance(obj, dict):
            rows.append(_row("hellobench", line, reasons=[error or "not_an_object"]))
            continue
        reasons: list[str] = []
        item_id = obj.get("id")
        if item_id is None:
            reasons.append("missing_field:id")
        elif not isinstance(item_id, str) or not item_id.strip():
            reasons.append("bad_field:id")
            item_id = None
        prompt_field = next((k for k in ("instruction", "chat_prompt", "base_prompt") if obj.get(k) is not None),
                            "instruction")
        prompt = _text(obj, prompt_field, reasons)
        checklists = obj.get("checklists")
        criteria = []
        if checklists is None:
            reasons.append("missing_field:checklists")
        elif not isinstance(checklists, list) or not checklists:
            reasons.append("bad_field:checklists")
        else:
            for i, question in enumerate(checklists, 1):
                if not isinstance(question, str) or not question.strip():
                    reasons.append(f"bad_checklist:{i}")
            criteria = [{"name": str(i), "description": q.strip(), "bands": {}, "weight": None}
                        for i, q in enumerate(checklists, 1) if isinstance(q, str)]
            count = obj.get("num_checklist")
            if count is not None and _positive_int(count) != len(checklists):
                reasons.append("bad_field:num_checklist")
        weights = obj.get("weights")
        if weights is not None:
            if (not isinstance(weights, list) or len(weights) != len(criteria)
                    or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in weights)):
                reasons.append("bad_field:weights")
            else:
                for c, w in zip(criteria, weights):
                    c["weight"] = float(w)
        category = obj.get("category")
        rows.append(_row("hellobench", line, id=item_id, prompt=prompt, language=_language(None, prompt),
                         criteria=criteria, reasons=reasons,
                         meta={"task": hellobench_task(item_id) if item_id else None,
                               "category": category if isinstance(category, str) else None}))
    return _mark_duplicates(rows)


LOADERS = {"longbench-write": load_longbench_write, "writingbench": load_writingbench, "hellobench": load_hellobench}


def load_benchmark(benchmark: str, path: str | Path) -> list[dict[str, Any]]:
    if benchmark not in LOADERS:
        raise ValueError(f"unknown benchmark format {benchmark!r}; known: {', '.join(BENCHMARKS)}")
    return LOADERS[benchmark](path)


def load_responses(path: str | Path, id_field: str = "index") -> tuple[dict[str, str], list[dict[str, Any]]]:
    """``{id: response}`` from a responses file (WritingBench ``{index, response}``, HelloBench
    ``{id, response}``), and the rejected lines with their reasons."""
    responses: dict[str, str] = {}
    rejected = []
    for line, obj, error in _lines(path):
        reasons = [error] if error else ["not_an_object"] if not isinstance(obj, dict) else []
        if not reasons:
            if obj.get(id_field) is None:
                reasons.append(f"missing_field:{id_field}")
            if not isinstance(obj.get("response"), str):
                reasons.append("missing_field:response" if obj.get("response") is None else "bad_field:response")
            if not reasons and str(obj[id_field]) in responses:
                reasons.append(f"duplicate_id:{obj[id_field]}")
        if reasons:
            rejected.append({"line": line, "status": "rejected", "reasons": reasons})
            continue
        responses[str(obj[id_field])] = obj["response"]
    return responses, rejected


def summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """rows / accepted / rejected and how often each rejection reason occurred."""
    reasons: dict[str, int] = {}
    for row in rows:
        for reason in row.get("reasons") or []:
            reasons[reason] = reasons.get(reason, 0) + 1
    accepted = sum(1 for r in rows if r.get("status") == "accepted")
    return {"rows": len(rows), "accepted": accepted, "rejected": len(rows) - accepted,
            "reasons": dict(sorted(reasons.items()))}


# --------------------------------------------------------------------------------------------------
# Aggregation. ``scores`` are flat rows {item_id, criterion, score, status} (judge.score_rows).


def _by_item(scores: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """item id -> {"scores": {criterion: score}, "failed": bool}."""
    out: dict[str, dict[str, Any]] = {}
    for row in scores:
        entry = out.setdefault(str(row["item_id"]), {"scores": {}, "failed": False})
        if row.get("status", "ok") != "ok" or row.get("score") is None:
            entry["failed"] = True
        else:
            entry["scores"][row["criterion"]] = float(row["score"])
    return out


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _interval(values_by_item: Mapping[str, Sequence[float]], **kwargs: Any) -> dict[str, Any]:
    return bootstrap_mean(values_by_item, **kwargs).to_dict()


def _complete(items: Sequence[Mapping[str, Any]], scores: Iterable[Mapping[str, Any]],
              expected: callable) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
    """Items whose expected criteria all have ok scores, and the others with why."""
    judged = _by_item(scores)
    done, incomplete = {}, []
    for item in items:
        if item.get("status", "accepted") != "accepted":
            continue
        entry = judged.get(str(item["id"]))
        names = expected(item)
        if entry is None:
            incomplete.append({"id": item["id"], "why": "not_judged"})
        elif entry["failed"]:
            incomplete.append({"id": item["id"], "why": "judge_failed"})
        elif missing := [n for n in names if n not in entry["scores"]]:
            incomplete.append({"id": item["id"], "why": f"missing:{','.join(missing)}"})
        else:
            done[str(item["id"])] = {n: entry["scores"][n] for n in names}
    return done, incomplete


def writingbench_summary(items: Sequence[Mapping[str, Any]], scores: Iterable[Mapping[str, Any]],
                         requirements: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
                         **bootstrap: Any) -> dict[str, Any]:
    """WritingBench's aggregation (1-10 scale). ``requirements``: {"style": {item id: [criterion names]}, …}
    from the requirement-subset files (R: the subset's items, C: those criteria)."""
    done, incomplete = _complete(items, scores, lambda item: [c["name"] for c in item["criteria"]])
    meta = {str(item["id"]): item.get("meta") or {} for item in items}
    item_means = {i: statistics.fmean(s.values()) for i, s in done.items()}
    out: dict[str, Any] = {"benchmark": "writingbench", "items": len(done), "incomplete": incomplete,
                           "overall": _interval({i: list(s.values()) for i, s in done.items()}, **bootstrap)}
    for level in ("domain1", "domain2"):
        groups: dict[str, list[float]] = {}
        for item_id, mean in item_means.items():
            groups.setdefault(str(meta[item_id].get(level)), []).append(mean)
        out[level] = {name: {"mean": statistics.fmean(v), "items": len(v)} for name, v in sorted(groups.items())}
    if requirements:
        out["requirements"] = {}
        for name, subset in requirements.items():
            r = [item_means[str(i)] for i in subset if str(i) in item_means]
            c = [done[str(i)][n] for i, names in subset.items() if str(i) in done for n in names if n in done[str(i)]]
            out["requirements"][name] = {"R": _mean(r), "C": _mean(c), "items": len(r)}
    return out


def quality_score(scores: Mapping[str, float]) -> float:
    """LongBench-Write S_q of one response: 20 × the mean of its six quality scores (each 1-5), so 20-100.

    (LongWriter's released ``eval_quality.py`` instead rescales each dimension's mean as (mean − 1) × 25,
    0-100; :func:`quality_score_longwriter_scale` gives that number for comparison.)
    """
    missing = [d for d in QUALITY_DIMENSIONS if d not in scores]
    if missing:
        raise ValueError(f"S_q needs all six quality scores; missing {', '.join(missing)}")
    values = [float(scores[d]) for d in QUALITY_DIMENSIONS]
    if not all(QUALITY_RANGE[0] <= v <= QUALITY_RANGE[1] for v in values):
        raise ValueError(f"quality scores must lie in {QUALITY_RANGE}: {values}")
    return 20.0 * statistics.fmean(values)


def quality_score_longwriter_scale(scores: Mapping[str, float]) -> float:
    """The same six scores on the scale of LongWriter's script: (mean − 1) × 25."""
    return (quality_score(scores) / 20.0 - 1.0) * 25.0


def longbench_write_summary(items: Sequence[Mapping[str, Any]], answers: Mapping[str, str],
                            scores: Iterable[Mapping[str, Any]], **bootstrap: Any) -> dict[str, Any]:
    """S_l from each item's answer (its thinking stripped) against ``required_length``, S_q from the
    quality judgments, S their mean; overall and per ``type``. Items without an answer have no S_l; items
    whose quality judgment failed have no S_q (both listed under ``incomplete``)."""
    done, incomplete = _complete(items, scores, lambda item: list(QUALITY_DIMENSIONS))
    s_l: dict[str, float] = {}
    per_item = []
    for item in items:
        if item.get("status", "accepted") != "accepted":
            continue
        item_id = str(item["id"])
        if item_id in answers:
            produced = length_units(strip_thinking(answers[item_id]), item.get("language") or prompt_language(item["prompt"]))
            s_l[item_id] = length_score(int(item["required_length"]), produced)
        else:
            incomplete.append({"id": item["id"], "why": "no_answer"})
        s_q = quality_score(done[item_id]) if item_id in done else None
        per_item.append({"id": item_id, "type": (item.get("meta") or {}).get("type"), "S_l": s_l.get(item_id), "S_q": s_q})
    q = {row["id"]: [row["S_q"]] for row in per_item if row["S_q"] is not None}
    l_ = {i: [v] for i, v in s_l.items()}
    both = [row for row in per_item if row["S_q"] is not None and row["S_l"] is not None]
    by_type: dict[str, dict[str, list[float]]] = {}
    for row in per_item:
        group = by_type.setdefault(str(row["type"]), {"S_l": [], "S_q": []})
        for name in ("S_l", "S_q"):
            if row[name] is not None:
                group[name].append(row[name])
    s_l_mean, s_q_mean = _mean([v for [v] in l_.values()]), _mean([v for [v] in q.values()])
    return {
        "benchmark": "longbench-write", "items": len(per_item), "incomplete": incomplete, "per_item": per_item,
        "S_l": _interval(l_, **bootstrap), "S_q": _interval(q, **bootstrap),
        "S": None if s_l_mean is None or s_q_mean is None else (s_l_mean + s_q_mean) / 2,
        "S_items_with_both": len(both),
        "type": {t: {"S_l": _mean(g["S_l"]), "S_q": _mean(g["S_q"]), "items": max(len(g["S_l"]), len(g["S_q"]))}
                 for t, g in sorted(by_type.items())},
    }


def hellobench_item_score(scores: Sequence[float], weights: Sequence[float] | None = None) -> float:
    """Weighted checklist score of one item, 0-100: Σ wᵢ·sᵢ / Σ wᵢ × 100 with each sᵢ in [0, 1]
    (equal weights when none are given)."""
    if not scores:
        raise ValueError("no checklist scores")
    weights = list(weights) if weights is not None else [1.0] * len(scores)
    if len(weights) != len(scores) or sum(weights) <= 0 or min(weights) < 0:
        raise ValueError(f"need {len(scores)} non-negative weights with a positive sum, got {weights}")
    if not all(0.0 <= s <= 1.0 for s in scores):
        raise ValueError(f"checklist scores must lie in [0, 1]: {list(scores)}")
    return 100.0 * sum(w * s for w, s in zip(weights, scores)) / sum(weights)


def hellobench_summary(items: Sequence[Mapping[str, Any]], scores: Iterable[Mapping[str, Any]],
                       weights: Mapping[str, Sequence[float]] | None = None, **bootstrap: Any) -> dict[str, Any]:
    """HelloBench's weighted checklist score (0-100) per item, then the mean overall, per task and per
    category. ``weights``: {category: [w per checklist question]}; HelloBench publishes such weights
    (fitted to human ratings, see docs/evaluation.md). The source used for each item is recorded."""
    done, incomplete = _complete(items, scores, lambda item: [c["name"] for c in item["criteria"]])
    per_item = []
    for item in items:
        item_id = str(item["id"])
        if item_id not in done:
            continue
        names = [c["name"] for c in item["criteria"]]
        category = (item.get("meta") or {}).get("category")
        own = [c.get("weight") for c in item["criteria"]]
        if all(w is not None for w in own):
            w, source = own, "item"
        elif weights and category in weights and len(weights[category]) == len(names):
            w, source = list(weights[category]), "weights_map"
        else:
            w, source = None, "equal"
        per_item.append({"id": item_id, "task": (item.get("meta") or {}).get("task"), "category": category,
                         "score": hellobench_item_score([done[item_id][n] for n in names], w), "weights": source})
    groups: dict[str, dict[str, list[float]]] = {"task": {}, "category": {}}
    for row in per_item:
        for level in groups:
            groups[level].setdefault(str(row[level]), []).append(row["score"])
    sources: dict[str, int] = {}
    for row in per_item:
        sources[row["weights"]] = sources.get(row["weights"], 0) + 1
    return {"benchmark": "hellobench", "items": len(per_item), "incomplete": incomplete, "per_item": per_item,
            "overall": _interval({row["id"]: [row["score"]] for row in per_item}, **bootstrap),
            "weights": sources,
            **{level: {k: {"mean": statistics.fmean(v), "items": len(v)} for k, v in sorted(g.items())}
               for level, g in groups.items()}}


def benchmark_specs(path: str | Path) -> list[dict[str, Any]]:
    """The benchmarks a config file (``benchmarks.yaml``) names, with relative paths resolved against it."""
    import yaml

    path = Path(path)
    spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out = []
    for name, entry in (spec.get("benchmarks") or {}).items():
        entry = dict(entry or {})
        fmt = entry.get("format")
        if fmt != "bundled" and fmt not in BENCHMARKS:
            raise ValueError(f"{path}: benchmark {name!r} has format {fmt!r}; choose bundled or one of "
                             f"{', '.join(BENCHMARKS)}")
        for key in ("path", "weights"):
            if entry.get(key) and "://" not in str(entry[key]) and not Path(entry[key]).is_absolute():
                entry[key] = str(path.parent / entry[key])
        if fmt != "bundled" and not entry.get("path"):
            raise ValueError(f"{path}: benchmark {name!r} needs a path")
        out.append({"name": name, **entry})
    if not out:
        raise ValueError(f"{path} names no benchmarks")
    return out
