"""Built-in ablations: the variant datasets and the statistics that say whether the search helps.

The variants are built from the same accepted items and share their item ids and answers:

* ``searched``: the thinking the search found (z*);
* ``initial``: the initial thinking of the same rollout (z0);
* ``no_thinking``: the answer alone (an empty think block, the same format);
* ``random_edits``: as many accepted edits per item as ``searched`` made, but each chosen at random
  among the candidates that were generated (at a random step that had one) instead of by score;
  this isolates the scorer's guidance;
* ``no_reflection``: z* with the reflection cues removed by :func:`strip_reflection`;
* ``shuffled``: a control with a known, harmful effect: each item gets z* of *another* item of the same
  domain (a seeded derangement, :func:`shuffled_thinking`), so the thinking mismatches its answer. An
  experiment that cannot tell it from ``searched`` cannot judge the search either;
* ``published``: the source's own published thinking of the item (``queries.published_thinking``: a
  DeepWriting or ``reer`` solution's ``<think>…</think>``), their thinking beside ours. Only items that have
  one get a row, so it may cover fewer items than the others (:data:`PARTIAL_VARIANTS`); a domain where no
  item has one has no ``published`` rows at all.

The report adds one more row that is not a dataset: ``base``, the base model without fine-tuning,
evaluated the same way (the floor).

Intervals are percentile bootstraps that resample *items* (all seeds of an item move together),
so seeds are not counted as independent evidence.
"""

from __future__ import annotations

import json
import math
import random
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Mapping, Sequence

import polars as pl

from reer_assets.core.chat_format import conversation
from reer_assets.core.ids import stable_id
from reer_assets.core.markdown import markdown_table
from reer_assets.core.refinement import derive_seed, recompose
from reer_assets.core.trace import SearchTrace

VARIANTS = ("searched", "initial", "no_thinking", "random_edits", "no_reflection", "shuffled", "published")
# variants that may hold a subset of the items (the pairing check asks only that their items and answers are
# among the others'): ``published`` has a row only where the source published a thinking
PARTIAL_VARIANTS = ("published",)

# A reflection cue where it opens a sentence (start of text, after . ! ? or a line break), with its
# punctuation and a following "maybe"; the first letter after it is capitalised.
_EN_CUES = re.compile(
    r"(^|[.!?]\s+|\n\s*)(?:hmm+|but wait|wait|let me think|let me see|alternatively|actually|on second thought|oh)"
    r"\b[\s,.…:;!-]*(?:maybe\b[\s,]*)?(?P<next>[a-z])?", re.IGNORECASE)
_ZH_CUES = re.compile(r"(?:不过等等|等等|让我想想|嗯+)[，,。…：:！!]*")


def strip_reflection(text: str) -> str:
    """The rule behind ``no_reflection``: delete the reflection cues that open a sentence ("Hmm, maybe",
    "Wait,", "But wait", "Let me think", "Alternatively,", "Actually,", "On second thought,", "Oh,";
    in Chinese 嗯, 等等, 不过等等, 让我想想 wherever they stand), capitalising the letter that then opens
    the sentence. Everything else is kept as written."""
    text = _EN_CUES.sub(lambda m: m.group(1) + (m.group("next") or "").upper(), text)
    return _ZH_CUES.sub("", text)


def accepted_with_traces(dataset: pl.DataFrame, trajectories: pl.DataFrame) -> tuple[list[dict], int]:
    """The accepted rows of a filtered_dataset with their search traces and their query's ``published_thinking``
    (carried onto refined_trajectories' rows from synthesized_queries, or from an official run's
    ``old_solution``; NULL without one); and how many accepted rows had no trace."""
    accepted = dataset.filter(pl.col("status") == "accepted").sort("id")
    if "published_thinking" not in trajectories.columns:  # written before the column existed
        trajectories = trajectories.with_columns(pl.lit(None, dtype=pl.String).alias("published_thinking"))
    traces = trajectories.select(pl.col("id").alias("trajectory_id"), "trace_json", "published_thinking")
    joined = accepted.join(traces, on="trajectory_id", how="left")
    items = [{**row, "trace": SearchTrace.from_json(row["trace_json"])}
             for row in joined.iter_rows(named=True) if row["trace_json"]]
    return items, joined.height - len(items)


def accepted_edits(trace: SearchTrace) -> int:
    """How many edits the search accepted (steps with a chosen candidate)."""
    return sum(1 for step in trace.steps if step.choice is not None)


def random_edit_plan(trace: SearchTrace, seed: int) -> list[tuple[int, str]]:
    """The (segment index, candidate text) edits of ``random_edits``: as many as the search accepted, each
    a random parsed candidate of a distinct random step that generated one, in the order drawn."""
    accepted = accepted_edits(trace)
    if not accepted:
        return []
    rng = random.Random(derive_seed(seed, trace.item_id, trace.rollout, "random_edits"))
    eligible = [step for step in trace.steps if any(c.text is not None for c in step.candidates)]
    chosen = rng.sample(eligible, accepted)  # accepted steps are eligible, so there are enough
    return [(step.index, rng.choice([c.text for c in step.candidates if c.text is not None])) for step in chosen]


def random_edit_thinking(trace: SearchTrace, seed: int) -> tuple[str, int]:
    """(thinking, edits) for ``random_edits`` (:func:`random_edit_plan` applied to the initial segments)."""
    plan = random_edit_plan(trace, seed)
    if not plan:
        return trace.initial_thinking, 0
    segments = [s.strip() for s in trace.initial_segments]
    for index, text in plan:
        segments[index] = text
    return recompose(segments), len(plan)


def variant_thinking(variant: str, trace: SearchTrace, seed: int) -> str:
    if variant == "searched":
        return trace.final_thinking
    if variant == "initial":
        return trace.initial_thinking
    if variant == "no_thinking":
        return ""
    if variant == "random_edits":
        return random_edit_thinking(trace, seed)[0]
    if variant == "no_reflection":
        return strip_reflection(trace.final_thinking)
    if variant == "shuffled":
        raise ValueError("shuffled takes another item's thinking: build it with variant_rows or shuffled_thinking")
    if variant == "published":
        raise ValueError("published is the item's own published thinking, not in its trace: build it with variant_rows")
    raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")


@dataclass(frozen=True)
class Interval:
    mean: float | None
    low: float | None
    high: float | None
    n: int  # items
    sd: float | None = None  # standard deviation of the per-item values (an item's seeds averaged first)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "ci_low": self.low, "ci_high": self.high, "n": self.n}

    @property
    def mde(self) -> float | None:
        """The smallest true difference this comparison would detect (see :func:`minimum_detectable_effect`)."""
        return minimum_detectable_effect(self.sd, self.n)

    def prompts_needed(self, effect: float | None = None) -> int | None:
        """Items needed to detect ``effect`` (default: the observed mean) at the same per-item spread."""
        return prompts_needed(self.sd, self.mean if effect is None else effect)


# Power analysis of a paired comparison, analytic (normal approximation): the standard error is the
# per-item differences' sample standard deviation over sqrt(n); a two-sided test at level ALPHA detects a
# true difference delta with probability POWER when |delta| >= (z_{1-alpha/2} + z_power) * SE.
ALPHA, POWER = 0.05, 0.80
_Z = NormalDist()
DETECTION_FACTOR = _Z.inv_cdf(1 - ALPHA / 2) + _Z.inv_cdf(POWER)  # 1.960 + 0.842 = 2.802


def minimum_detectable_effect(sd: float | None, n: int) -> float | None:
    """MDE at 80% power and alpha 0.05 for a paired difference of ``n`` items whose per-item differences
    spread with standard deviation ``sd``: it shrinks as 1/sqrt(n). None below two items."""
    if sd is None or n < 2:
        return None
    return DETECTION_FACTOR * sd / math.sqrt(n)


def prompts_needed(sd: float | None, effect: float | None) -> int | None:
    """The items a paired comparison needs to detect a true difference of ``effect`` with 80% power at
    alpha 0.05, given the per-item spread ``sd`` (at least 2). None when either is unknown or the effect is 0."""
    if sd is None or effect is None or effect == 0:
        return None
    return max(2, math.ceil((DETECTION_FACTOR * sd / abs(effect)) ** 2 - 1e-9))  # not 41 for a float 40.0000001


def bootstrap_mean(values_by_item: Mapping[Any, Sequence[float]], resamples: int = 2000, level: float = 0.95,
                   seed: int = 0) -> Interval:
    """Mean over all values, with a percentile bootstrap interval that resamples items."""
    items = [list(v) for v in values_by_item.values() if len(v)]
    if not items:
        return Interval(None, None, None, 0)
    sums = [sum(v) for v in items]
    counts = [len(v) for v in items]
    mean = sum(sums) / sum(counts)
    if len(items) == 1:
        return Interval(mean, None, None, 1)
    spread = statistics.stdev([sum(v) / len(v) for v in items])
    rng = random.Random(seed)
    draws = []
    for _ in range(resamples):
        picks = [rng.randrange(len(items)) for _ in items]
        draws.append(sum(sums[i] for i in picks) / sum(counts[i] for i in picks))
    draws.sort()
    tail = (1 - level) / 2
    return Interval(mean, draws[int(tail * (resamples - 1))], draws[int((1 - tail) * (resamples - 1))], len(items),
                    spread)


def paired_difference(a: Mapping[Any, Sequence[float]], b: Mapping[Any, Sequence[float]], **kwargs: Any) -> Interval:
    """Mean of per-item differences mean(a) − mean(b) over the items both have, with its interval."""
    shared = [k for k in a if k in b and len(a[k]) and len(b[k])]
    diffs = {k: [statistics.fmean(a[k]) - statistics.fmean(b[k])] for k in shared}
    return bootstrap_mean(diffs, **kwargs)


def reading(name: str, diff: Interval, metric: str, lower_is_better: bool) -> str:
    """One line that says what a paired difference ``name`` (e.g. "searched − initial") shows."""
    if diff.mean is None:
        return f"{name} on {metric}: no paired items"
    if diff.low is None:
        return f"{name} on {metric}: {diff.mean:+.4f} from a single item, no interval"
    span = f"(95% CI {diff.low:+.4f} to {diff.high:+.4f}, n = {diff.n})"
    could = f"this experiment could detect ≥ {diff.mde:.4f}" if diff.mde is not None else "its power is unknown"
    if diff.low <= 0 <= diff.high:
        needed = diff.prompts_needed()
        more = (f"; a true difference as large as the observed {abs(diff.mean):.4f} would need about {needed} prompts"
                if needed else "")
        return f"{name} on {metric}: no difference detectable; {could} {span}{more}"
    first_better = (diff.mean < 0) == lower_is_better
    left = name.split("−")[0].strip()
    verdict = "better" if first_better else "worse"
    return f"{name} on {metric}: {diff.mean:+.4f}, {left} is {verdict} {span}; {could}"


def shuffled_thinking(items: Sequence[Mapping[str, Any]], seed: int) -> dict[str, str]:
    """item id -> the searched thinking of another item of its domain, for ``shuffled``: a seeded cyclic
    shift of the domain's items in a random order, so no item keeps its own. A domain with one item has no
    donor and gets no shuffled row (the report then says the control has no rows)."""
    by_domain: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for item in items:
        by_domain[str(item["domain"])].append(item)
    out = {}
    for domain, group in sorted(by_domain.items()):
        if len(group) < 2:
            continue
        order = sorted(group, key=lambda i: str(i["id"]))
        random.Random(derive_seed(seed, domain, "shuffled")).shuffle(order)
        for k, item in enumerate(order):
            out[str(item["id"])] = order[(k + 1) % len(order)]["thinking"]
    return out


# --- the variant datasets --------------------------------------------------------------------------

DEFAULT_VARIANTS = ("searched", "initial", "no_thinking", "random_edits", "shuffled")  # no_reflection: by config


def variant_rows(items: Sequence[Mapping[str, Any]], variants: Sequence[str], seed: int = 0) -> list[dict[str, Any]]:
    """One row per accepted item and variant, in the one inference format (``messages``).

    ``items`` are accepted dataset rows (``id``, ``domain``, ``trajectory_id``, ``query``, ``thinking`` = z*,
    ``reference``, and ``published_thinking`` where the source had one) each with its ``trace``
    (:class:`SearchTrace`). Every variant keeps the item's id, query and answer; only the thinking differs.
    ``published`` gets a row only for an item with a published thinking (that text, as stored). ``edits``
    counts the accepted edits the thinking carries (``edited_segments`` their segment positions): the
    search's for ``searched`` and ``no_reflection``, the same number drawn at random for ``random_edits``,
    none for ``initial``, ``no_thinking`` and ``published``.
    """
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    rows = []
    donors = shuffled_thinking(items, seed) if "shuffled" in variants else {}
    for item in items:
        trace: SearchTrace = item["trace"]
        searched_steps = [step.index for step in trace.steps if step.choice is not None]
        for variant in variants:
            if variant == "shuffled":
                if str(item["id"]) not in donors:
                    continue  # a domain of one item: no other thinking to take
                thinking, edited = donors[str(item["id"])], []
            elif variant == "published":
                if not item.get("published_thinking"):
                    continue  # the source published no thinking for this item
                thinking, edited = item["published_thinking"], []
            elif variant == "searched":
                thinking, edited = item["thinking"], searched_steps
            elif variant == "no_reflection":
                thinking, edited = strip_reflection(item["thinking"]), searched_steps
            elif variant == "random_edits":
                plan = random_edit_plan(trace, seed)
                thinking, _ = random_edit_thinking(trace, seed)
                edited = [index for index, _ in plan]
            else:
                thinking, edited = variant_thinking(variant, trace, seed), []
            rows.append({
                "id": stable_id("abl", item["id"], variant, thinking), "item_id": item["id"], "variant": variant,
                "domain": item["domain"], "trajectory_id": item["trajectory_id"], "query": item["query"],
                "thinking": thinking, "answer": item["reference"], "edits": len(edited),
                "edited_segments": list(edited), "messages": conversation(item["query"], thinking, item["reference"]),
            })
    return rows


def variant_problems(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """What breaks the pairing of the variants (empty when every variant has the same items and answers; a
    variant of :data:`PARTIAL_VARIANTS` may have fewer items, but only items of the others, same answers)."""
    by_variant: dict[str, dict[str, str]] = defaultdict(dict)
    for row in rows:
        by_variant[row["variant"]][row["item_id"]] = row["answer"]
    if not by_variant:
        return []
    problems = []
    names = sorted(by_variant, key=lambda v: (v in PARTIAL_VARIANTS, v))  # compare with a full variant
    first = by_variant[names[0]]
    for name in names[1:]:
        other = by_variant[name]
        partial = name in PARTIAL_VARIANTS and names[0] not in PARTIAL_VARIANTS
        unpaired = set(other) - set(first) if partial else set(other) ^ set(first)
        if unpaired:
            problems.append(f"{name} has items {sorted(unpaired)[:3]} that {names[0]} lacks or has")
        elif any(other[k] != first[k] for k in other):
            problems.append(f"{name} has a different answer than {names[0]} for some items")
    return problems


# --- the statistics of a finished ablation ----------------------------------------------------------

ALL = "all"  # the domain of an overall row


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    lower_is_better: bool
    digits: int

    @property
    def arrow(self) -> str:
        return "↓" if self.lower_is_better else "↑"


METRICS = (
    Metric("heldout_nll_own_thinking", "held-out NLL, own thinking", True, 4),
    Metric("heldout_nll", "held-out NLL, no thinking", True, 4),
    Metric("length_score", "length score S_l", False, 1),
    Metric("judge_score", "judge score", False, 2),
    Metric("format_ok", "format adherence", False, 3),
)
METRIC_BY_NAME = {m.name: m for m in METRICS}
HEADLINE = "heldout_nll_own_thinking"
# the paired comparisons the report makes, where both variants ran: the search against its ablations and
# controls, then every variant against the answer alone (no_thinking)
PRIMARY_DIFFERENCES = (("searched", "initial"), ("searched", "random_edits"), ("searched", "published"),
                       ("searched", "shuffled"), ("searched", "base"))
FLOOR = "no_thinking"


def differences(variants: Sequence[str]) -> list[tuple[str, str]]:
    """(a, b) of every paired difference a − b reported for ``variants``."""
    pairs = [(a, b) for a, b in PRIMARY_DIFFERENCES if a in variants and b in variants]
    if FLOOR in variants:
        pairs += [(v, FLOOR) for v in variants if v not in (FLOOR, "base")]
    return pairs


def difference_variant(a: str, b: str) -> str:
    """How a paired difference is named in ``experiment_results.variant``: ``searched-initial``."""
    return f"{a}-{b}"


def _value(row: Mapping[str, Any], name: str) -> float | None:
    value = row.get(name)
    if value is None:
        return None
    value = float(value)  # booleans (format adherence) count as 0/1
    return None if math.isnan(value) else value


def summarise(rows: Sequence[Mapping[str, Any]], variants: Sequence[str], resamples: int = 2000, level: float = 0.95,
              seed: int = 0) -> list[dict[str, Any]]:
    """The rows of ``experiment_results`` for per-item evaluation ``rows`` (``domain``, ``variant``, ``seed``,
    ``prompt_id`` and one column per metric).

    Per domain and for ``all``, per metric that has any value: each variant's mean with a bootstrap
    interval over items (an item's seeds move together; ``n`` items, ``seeds`` seeds), and the paired
    differences of :data:`DIFFERENCES` with their intervals and readings. A requested variant without
    rows still gets its rows, with ``n`` = 0 and no value, so that a report can say so.
    """
    domains = sorted({str(r["domain"]) for r in rows})
    present = [m for m in METRICS if any(_value(r, m.name) is not None for r in rows)]
    out: list[dict[str, Any]] = []
    for domain in [*domains, ALL]:
        scoped = [r for r in rows if domain == ALL or r["domain"] == domain]
        for metric in present:
            values: dict[str, dict[Any, list[float]]] = {v: defaultdict(list) for v in variants}
            seeds: dict[str, set] = {v: set() for v in variants}
            for r in scoped:
                value = _value(r, metric.name)
                if r["variant"] in values and value is not None:
                    values[r["variant"]][(r["domain"], str(r["prompt_id"]))].append(value)
                    seeds[r["variant"]].add(r["seed"])
            for variant in variants:
                interval = bootstrap_mean(values[variant], resamples, level, seed)
                out.append(_result(variant, domain, metric, "mean", interval, len(seeds[variant]), None))
            for a, b in differences(variants):
                diff = paired_difference(values[a], values[b], resamples=resamples, level=level, seed=seed)
                out.append(_result(difference_variant(a, b), domain, metric, "difference", diff,
                                   min(len(seeds[a]), len(seeds[b])) if diff.n else 0,
                                   reading(f"{a} − {b}", diff, metric.name, metric.lower_is_better)))
    return out


def _result(variant: str, domain: str, metric: Metric, kind: str, interval: Interval, seeds: int,
            line: str | None) -> dict[str, Any]:
    paired = kind == "difference"
    return {"variant": variant, "domain": domain, "metric": metric.name, "kind": kind, "value": interval.mean,
            "ci_low": interval.low, "ci_high": interval.high, "n": interval.n, "seeds": seeds, "reading": line,
            "mde": interval.mde if paired else None, "n_needed": interval.prompts_needed() if paired else None}


def with_ids(experiment_id: str, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Result rows stamped with their experiment and a stable id (experiment, variant, domain, metric)."""
    return [{"id": stable_id("expres", experiment_id, r["variant"], r["domain"], r["metric"]),
             "experiment_id": experiment_id, **r} for r in rows]


# --- the report ---------------------------------------------------------------------------------------

def interval_text(row: Mapping[str, Any] | None, digits: int = 4, signed: bool = False) -> str:
    """``mean [low, high] (n = k)``, or what stands in for it: no rows, one item without an interval."""
    if row is None or not row.get("n") or row.get("value") is None:
        return "no rows"
    fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
    text = fmt.format(row["value"])
    if row.get("ci_low") is not None and row.get("ci_high") is not None:
        text += f" [{fmt.format(row['ci_low'])}, {fmt.format(row['ci_high'])}]"
    else:
        text += " (one item, no interval)"
    return text + f" (n = {row['n']}{', ' + str(row['seeds']) + ' seeds' if (row.get('seeds') or 0) > 1 else ''})"


def _index(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, str], Mapping[str, Any]]:
    return {(r["domain"], r["variant"], r["metric"]): r for r in rows}


def _metrics_in(rows: Sequence[Mapping[str, Any]]) -> list[Metric]:
    names = {r["metric"] for r in rows}
    return [m for m in METRICS if m.name in names]


def means_table(rows: Sequence[Mapping[str, Any]], variants: Sequence[str], domain: str = ALL) -> str:
    """Variants × metrics for one domain: mean [95% CI] (n); ``no rows`` where a variant has none."""
    index, metrics = _index(rows), _metrics_in(rows)
    if not metrics:
        return "_no evaluation rows_"
    body = [[variant, *[interval_text(index.get((domain, variant, m.name)), m.digits) for m in metrics]]
            for variant in variants]
    return markdown_table(["variant", *[f"{m.label} {m.arrow}" for m in metrics]], body)


def differences_table(rows: Sequence[Mapping[str, Any]], domain: str = ALL) -> str:
    """Each paired difference on each metric: mean [95% CI] and its one-line reading."""
    chosen = [r for r in rows if r["domain"] == domain and r.get("kind") == "difference"]
    order = {m.name: i for i, m in enumerate(METRICS)}
    chosen.sort(key=lambda r: (r["variant"], order.get(r["metric"], 99)))
    if not chosen:
        return "_no paired differences (a variant of the pair was not run)_"
    body = [[r["variant"].replace("-", " − ", 1), METRIC_BY_NAME[r["metric"]].label,
             interval_text(r, METRIC_BY_NAME[r["metric"]].digits, signed=True),
             "—" if r.get("mde") is None else f"{r['mde']:.{METRIC_BY_NAME[r['metric']].digits}f}",
             "—" if r.get("n_needed") is None else r["n_needed"], r.get("reading") or ""]
            for r in chosen]
    return markdown_table(["difference", "metric", "mean [95% CI]", "detectable ≥ (MDE)",
                           "prompts for the observed", "reading"], body)


def power_headline(rows: Sequence[Mapping[str, Any]], domain: str = ALL) -> list[str]:
    """What this experiment could and could not detect, from its own numbers: the MDE of searched − initial
    on the headline metric, and whether its controls behaved (the planted harm must be visible)."""
    index = _index(rows)
    metric = next((m for m in (METRIC_BY_NAME[HEADLINE], METRIC_BY_NAME["heldout_nll"])
                   if index.get((domain, "searched-initial", m.name))), None)
    if metric is None:
        return []
    main = index[(domain, "searched-initial", metric.name)]
    lines = []
    if main.get("mde") is not None:
        lines.append(f"**Power.** On {metric.label}, this experiment could detect a searched − initial difference "
                     f"of at least {main['mde']:.{metric.digits}f} (80% power, α = 0.05, n = {main['n']} prompts); "
                     f"it observed {main['value']:+.{metric.digits}f}"
                     + (f", which would need about {main['n_needed']} prompts to detect." if main.get("n_needed")
                        and main["n_needed"] > main["n"] else "."))
    else:
        lines.append(f"**Power.** {main['n']} prompt(s): too few for an interval, so nothing here could be detected.")
    harm = index.get((domain, "searched-shuffled", metric.name))
    if harm and harm.get("ci_low") is not None:
        if harm["ci_low"] <= 0 <= harm["ci_high"]:
            lines.append("**Controls.** The planted harm (`shuffled`: each item's thinking from another item) is "
                         "indistinguishable from `searched`: this experiment lacks the power to judge the search.")
        else:
            better = (harm["value"] < 0) == metric.lower_is_better
            lines.append(f"**Controls.** The planted harm is visible: searched − shuffled {harm['value']:+.{metric.digits}f} "
                         f"[{harm['ci_low']:+.{metric.digits}f}, {harm['ci_high']:+.{metric.digits}f}], "
                         + ("`searched` better, as it must be." if better else
                            "but `shuffled` scores *better*: the evaluation does not behave; distrust the other rows."))
    return lines


def _loads(value: Any, default: Any) -> Any:
    if value is None:
        return default
    return json.loads(value) if isinstance(value, str) else value


def render_report(experiment: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], plot_markdown: str | None = None) -> str:
    """The Markdown report of one experiment: its settings, the headline table (all domains), the paired
    differences with their readings, the same per domain, the training budget actually spent, and what
    is missing. ``experiment`` is a row of the ``experiments`` table, ``rows`` its ``experiment_results``."""
    variants = list(experiment.get("variants") or [])
    domains = [d for d in (experiment.get("domains") or []) if d != ALL]
    budget = _loads(experiment.get("budget_json"), {})
    config = _loads(experiment.get("config_json"), {})
    evaluation = config.get("evaluation") or {}
    seeds = list(experiment.get("seeds") or [])
    lines = [f"# Ablation report `{experiment.get('id')}`", ""]
    lines.append(f"{len(domains)} domain(s) ({', '.join(domains) or 'none'}); variants {', '.join(variants)}; "
                 f"seeds {', '.join(map(str, seeds)) or 'none'}; base model `{experiment.get('base_model')}`.")
    if budget:
        limit = (f"{budget.get('max_steps')} optimizer steps" if budget.get("kind") == "steps" and budget.get("max_steps")
                 else f"{budget.get('train_tokens')} trained (assistant) tokens" if budget.get("kind") == "tokens"
                 else "the recipe's epochs (the same steps for every variant: they share their items)")
        lines.append(f"Budget per checkpoint: {limit}; recipe `{budget.get('recipe')}`, global batch "
                     f"{budget.get('global_batch')}, every variant from the same base and with the same seeds.")
    if evaluation:
        lines.append(f"Held out: the bundled benchmark prompts of each domain "
                     f"({evaluation.get('prompts_per_domain') or 'all'} per domain), answers of at most "
                     f"{evaluation.get('max_tokens')} tokens; judge: {evaluation.get('judge') or 'none configured'}.")
    lines += [("Intervals: 95% percentile bootstrap over items (all seeds of an item move together); "
               "n counts items."), ""]
    headline = power_headline(rows)
    if headline:
        lines += [" ".join(headline), ""]
    lines += ["## All domains", "", means_table(rows, variants), "", "### Paired differences", "",
              differences_table(rows), ""]
    missing = [v for v in variants if not any(r["variant"] == v and r.get("n") for r in rows)]
    notes = [f"- `{v}`: no rows (no checkpoint of this variant was evaluated)" for v in missing]
    if rows and "judge_score" not in {r["metric"] for r in rows}:
        notes.append("- judge scores: none (no judge configured; set REER_JUDGE_*, docs/evaluation.md)")
    notes += [f"- {note}" for note in experiment.get("notes") or config.get("notes") or []]
    if not rows:
        notes.append("- no evaluation rows at all: nothing was evaluated")
    if notes:
        lines += ["### Missing or partial", "", *notes, ""]
    if plot_markdown:
        lines += [plot_markdown, ""]
    if budget.get("per_variant"):
        body = [[v, b.get("checkpoints"), b.get("steps"), b.get("trained_tokens"), b.get("train_loss")]
                for v, b in budget["per_variant"].items()]
        lines += ["## Training budget spent", "",
                  markdown_table(["variant", "checkpoints", "steps per checkpoint", "trained tokens per checkpoint (mean)",
                                  "final train loss (mean)"], body), ""]
    for domain in domains:
        lines += [f"## {domain}", "", means_table(rows, variants, domain), "", differences_table(rows, domain), ""]
    return "\n".join(lines).rstrip() + "\n"
