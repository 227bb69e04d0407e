"""What a run will cost before it starts: calls and tokens per stage and role, device-hours, money.

Pure counting (no Dagster, no torch): the items (reference and request texts), the profile's settings,
the roles' backends and a token counter go in; a :class:`Plan` of lines comes out, one per stage, step and
role, each a (low, expected, high) range with the assumption behind every bound. The prompts are rendered
with the engine's own templates (``core/prompts.py``), so prompt tokens include them. docs/cost.md
derives the formulas and says which inputs dominate.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from fnmatch import fnmatchcase
from typing import Any, Callable, Iterable, Mapping, Sequence

from reer_assets.core.chat_format import ANSWER_OPEN, THINK_CLOSE, THINK_OPEN
from reer_assets.core.markdown import markdown_table
from reer_assets.core.objective import split_reference
from reer_assets.core.prompts import SYSTEM_PROMPT, prompts_for
from reer_assets.core.segment import segment

ROLES = ("generator", "scorer", "judge")
STAGES = ("synthesis", "refinement", "training", "evaluation", "experiments")
BOUNDS = ("low", "expected", "high")
CHARS_PER_TOKEN = 4.0  # the ratio used without a local tokenizer (CJK: one token per character)
_CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")


# --- ranges -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Range:
    """A (low, expected, high) triple; ``+`` adds bound by bound, ``*`` scales by a number or a Range."""

    low: float = 0.0
    expected: float = 0.0
    high: float = 0.0

    @classmethod
    def of(cls, value: float) -> "Range":
        return cls(value, value, value)

    def __add__(self, other: "Range") -> "Range":
        return Range(self.low + other.low, self.expected + other.expected, self.high + other.high)

    def __mul__(self, other: "Range | float") -> "Range":
        o = other if isinstance(other, Range) else Range.of(float(other))
        return Range(self.low * o.low, self.expected * o.expected, self.high * o.high)

    __rmul__ = __mul__

    def map(self, fn: Callable[[float], float]) -> "Range":
        return Range(fn(self.low), fn(self.expected), fn(self.high))

    def to_dict(self, digits: int = 1) -> dict[str, float]:
        return {b: round(getattr(self, b), digits) for b in BOUNDS}


ZERO = Range()


# --- token counting ---------------------------------------------------------------------------------

class TokenCounter:
    """Tokens of a text: a local tokenizer's count, else characters over a stated ratio."""

    def __init__(self, count: Callable[[str], int] | None = None, name: str | None = None):
        self._count = count
        self.name = name or f"{CHARS_PER_TOKEN:g} characters per token (CJK: 1 per character), no local tokenizer"
        self._cache: dict[str, int] = {}

    @property
    def exact(self) -> bool:
        return self._count is not None

    def __call__(self, text: str) -> int:
        if not text:
            return 0
        if text not in self._cache:
            if self._count is not None:
                self._cache[text] = int(self._count(text))
            else:
                cjk = len(_CJK.findall(text))
                self._cache[text] = cjk + math.ceil((len(text) - cjk) / CHARS_PER_TOKEN)
        return self._cache[text]


def render_chat(messages: Sequence[Mapping[str, str]], prefill: str = "") -> str:
    """The conversation as a ChatML prompt (the embedded models' template) with the assistant turn opened."""
    body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return body + "<|im_start|>assistant\n" + prefill


# --- what a generator tends to write ----------------------------------------------------------------

@dataclass(frozen=True)
class Behaviour:
    """The expected bound's assumptions about the generator (each completion is also capped by the profile)."""

    thinking_tokens: float = 4000  # an initial thinking, mean over every rollout
    edit_tokens: float = 500  # one edit candidate (<analyze> + <refine>)
    query_tokens: float = 60  # a back-synthesized request
    answer_tokens: float = 2000  # a benchmark answer (thinking + answer)
    judge_tokens: float = 300  # a judge's verdict
    searched_share: float = 1.0  # rollouts that pass the token floor and split into 2+ segments
    segment_chars: float = 400  # characters per segment of a thinking (steps = min(max_step, segments))
    scorable_share: float = 1.0  # candidates with a <refine> block (only those are scored)
    query_accepted_share: float = 1.0  # synthesized requests that pass the query checks (only those are searched)
    source: str = ("a-priori for a capable instruct model: the paper-scale lengths of docs/scale.md (z 4,000, "
                   "e 500), every rollout searched, every candidate scorable")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The embedded generator's measured behaviour (docs/cost.md, "Measured"): a toy model, most of whose first
# thinkings are short or one paragraph, so most rollouts are rejected before any step.
EMBEDDED_BEHAVIOUR = Behaviour(
    thinking_tokens=153, edit_tokens=80, query_tokens=48, searched_share=0.5, segment_chars=230, scorable_share=0.6,
    query_accepted_share=0.25,
    source="measured on the embedded generator (demo profile, bundled education and business, 20 rollouts, "
           "2026-12-06; docs/cost.md); answer and verdict lengths a-priori")


def behaviour_for(generator_model: str, backend: str, overrides: Mapping[str, Any] | None = None) -> Behaviour:
    """The embedded generator's measured behaviour, else the a-priori one; ``overrides`` replace fields."""
    base = EMBEDDED_BEHAVIOUR if "reer-embedded:" in generator_model else Behaviour()
    if overrides:
        unknown = set(overrides) - {f.name for f in fields(Behaviour)}
        if unknown:
            raise ValueError(f"unknown behaviour field(s) {sorted(unknown)}; known: {[f.name for f in fields(Behaviour)]}")
        base = replace(base, **{k: (str(v) if k == "source" else float(v)) for k, v in overrides.items()},
                       source=str(overrides.get("source", base.source + "; overridden: " + ", ".join(sorted(overrides)))))
    return base


# --- inputs -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlanItem:
    """One accepted document: its reference and, when it came with one, its request."""

    reference: str
    query: str | None = None
    domain: str = ""
    published_thinking: str | None = None  # the source's own thinking: one more scorer call per searched rollout


@dataclass(frozen=True)
class BenchItem:
    prompt: str
    reference: str | None = None
    domain: str = ""


@dataclass(frozen=True)
class RoleSpec:
    backend: str
    model_id: str
    configured: bool = True


@dataclass
class PlanInputs:
    items: list[PlanItem]
    profile: Mapping[str, Any]  # a profile of lib/profiles.py (search, synthesis, finetune, benchmark, experiment)
    roles: Mapping[str, RoleSpec]
    behaviour: Behaviour = field(default_factory=Behaviour)
    bench_items: list[BenchItem] = field(default_factory=list)  # every benchmark prompt benchmark_scores answers
    held_out: dict[str, list[BenchItem]] = field(default_factory=dict)  # per domain: the ablations' prompts
    profile_name: str = ""
    domains: list[str] = field(default_factory=list)
    stages: Sequence[str] = STAGES


# --- the plan ---------------------------------------------------------------------------------------

@dataclass
class Line:
    stage: str
    step: str
    role: str
    model: str
    calls: Range
    prompt_tokens: Range
    completion_tokens: Range
    scored_tokens: Range | None
    assumptions: dict[str, str]  # bound -> why
    hours: Range | None = None
    hours_why: str | None = None
    cost_usd: Range | None = None
    cost_batch_usd: Range | None = None
    cost_why: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"stage": self.stage, "step": self.step, "role": self.role, "model": self.model}
        for name in ("calls", "prompt_tokens", "completion_tokens", "scored_tokens"):
            value = getattr(self, name)
            out[name] = value.to_dict(1) if value is not None else None
        out["assumptions"] = self.assumptions
        out["device_hours"] = self.hours.to_dict(4) if self.hours else None
        out["device_hours_why"] = self.hours_why
        out["cost_usd"] = self.cost_usd.to_dict(6) if self.cost_usd else None
        out["cost_batch_usd"] = self.cost_batch_usd.to_dict(6) if self.cost_batch_usd else None
        out["cost_why"] = self.cost_why
        return out


@dataclass
class Plan:
    lines: list[Line]
    inputs: dict[str, Any]

    def totals(self, by: str = "stage") -> dict[str, dict[str, Any]]:
        """Tokens (prompt + completion; scorer: prompt), hours and cost per stage (or role); None where unknown."""
        out: dict[str, dict[str, Any]] = {}
        for line in self.lines:
            key = getattr(line, by)
            agg = out.setdefault(key, {"calls": ZERO, "tokens": ZERO, "hours": ZERO, "cost_usd": ZERO,
                                       "hours_unknown": [], "cost_unknown": []})
            agg["calls"] = agg["calls"] + line.calls
            agg["tokens"] = agg["tokens"] + line.prompt_tokens + line.completion_tokens
            if line.hours is not None:
                agg["hours"] = agg["hours"] + line.hours
            elif line.hours_why and line.calls.high + line.prompt_tokens.high > 0:
                agg["hours_unknown"].append(f"{line.stage}/{line.step}/{line.role}")
            if line.cost_usd is not None:
                agg["cost_usd"] = agg["cost_usd"] + line.cost_usd
            elif line.calls.high > 0 and line.cost_why and "local" not in line.cost_why:
                agg["cost_unknown"].append(f"{line.stage}/{line.step}/{line.role}")
        return out

    def headline(self) -> dict[str, Any]:
        totals = self.totals("stage")
        tokens = sum((t["tokens"] for t in totals.values()), ZERO)
        hours = sum((t["hours"] for t in totals.values()), ZERO)
        cost = sum((t["cost_usd"] for t in totals.values()), ZERO)
        unknown_h = sorted({u for t in totals.values() for u in t["hours_unknown"]})
        unknown_c = sorted({u for t in totals.values() for u in t["cost_unknown"]})
        return {"items": self.inputs.get("items"), "rollouts": self.inputs.get("rollouts"),
                "tokens": tokens.to_dict(0), "device_hours": hours.to_dict(4) if not unknown_h or hours.high else None,
                "device_hours_missing": unknown_h, "cost_usd": cost.to_dict(4) if cost.high else None,
                "cost_missing": unknown_c}

    def to_dict(self) -> dict[str, Any]:
        totals = {k: {"calls": v["calls"].to_dict(1), "tokens": v["tokens"].to_dict(0), "device_hours": v["hours"].to_dict(4),
                      "device_hours_missing": v["hours_unknown"], "cost_usd": v["cost_usd"].to_dict(4),
                      "cost_missing": v["cost_unknown"]} for k, v in self.totals("stage").items()}
        return {"inputs": self.inputs, "headline": self.headline(), "stages": totals,
                "lines": [line.to_dict() for line in self.lines]}

    def markdown(self) -> str:
        """The plan as one Markdown table (expected value, then [low – high])."""
        def r(v: Range | None, digits: int = 0) -> str:
            if v is None:
                return "–"
            f = (lambda x: f"{x:,.{digits}f}")
            return f"{f(v.expected)} [{f(v.low)} – {f(v.high)}]"

        rows = [(ln.stage, ln.step, ln.role, r(ln.calls), r(ln.prompt_tokens), r(ln.completion_tokens),
                 r(ln.scored_tokens), r(ln.hours, 3) if ln.hours else f"null: {ln.hours_why}",
                 r(ln.cost_usd, 2) if ln.cost_usd else f"null: {ln.cost_why}") for ln in self.lines]
        return markdown_table(["stage", "step", "role", "calls", "prompt tokens", "completion tokens", "scored tokens",
                               "device-hours", "USD (live)"], rows)

    def assumptions_markdown(self) -> str:
        rows = [(ln.stage, ln.step, ln.role, ln.assumptions.get("low", ""), ln.assumptions.get("expected", ""),
                 ln.assumptions.get("high", "")) for ln in self.lines]
        return markdown_table(["stage", "step", "role", "low", "expected", "high"], rows)


# --- counting ---------------------------------------------------------------------------------------

@dataclass
class _Acc:
    calls: Range = ZERO
    prompt: Range = ZERO
    completion: Range = ZERO
    scored: Range = ZERO

    def add(self, calls: Range, prompt: Range, completion: Range = ZERO, scored: Range = ZERO) -> None:
        self.calls, self.prompt = self.calls + calls, self.prompt + prompt
        self.completion, self.scored = self.completion + completion, self.scored + scored


def _query_tokens(item_query: str | None, count: TokenCounter, beh: Behaviour, syn_max: int) -> Range:
    if item_query:
        return Range.of(count(item_query))
    return Range(1, min(syn_max, beh.query_tokens), syn_max)


def thinking_range(search: Mapping[str, Any], beh: Behaviour) -> Range:
    """Initial thinking tokens: the token floor, the behaviour's mean (capped), max_tokens."""
    cap = int(search["max_tokens"])
    expected = min(cap, beh.thinking_tokens)
    return Range(min(cap, int(search.get("min_rollout_tokens", 100)), expected), expected, cap)


def edit_cap(search: Mapping[str, Any]) -> int:
    return int(search.get("edit_max_tokens") or search["max_tokens"])


def steps_range(search: Mapping[str, Any], beh: Behaviour, chars_per_token: float) -> Range:
    """Edit steps per rollout: none (every rollout stops at its initial score); the searched share times
    min(max_step, the expected thinking's segments); min(max_step, the segments a max_tokens thinking can hold)."""
    max_step = int(search["max_step"])
    z = thinking_range(search, beh)
    expected_segments = max(2.0, z.expected * chars_per_token / max(1.0, beh.segment_chars))
    most_segments = max(2, math.floor(z.high * chars_per_token / max(1, int(search.get("min_segment_chars", 100)))))
    return Range(0, beh.searched_share * min(max_step, expected_segments), min(max_step, most_segments))


def plan(inputs: PlanInputs, gen_count: TokenCounter, scorer_count: TokenCounter,
         judge_count: TokenCounter | None = None) -> Plan:
    """Count every stage of ``inputs.stages``; hours and money are added by :func:`price_plan`."""
    judge_count = judge_count or gen_count
    prof, beh, roles = inputs.profile, inputs.behaviour, inputs.roles
    search, syn = prof["search"], prof["synthesis"]
    rollouts = int(search.get("num_rollouts", 1))
    K = int(search["num_expansion"])
    e_cap = edit_cap(search)
    z = thinking_range(search, beh)
    e = Range(0, min(e_cap, beh.edit_tokens), e_cap)
    lines: list[Line] = []
    gen_model, scorer_model = roles["generator"].model_id, roles["scorer"].model_id

    def line(stage, step, role, acc: _Acc, why: dict[str, str], scored: bool = False, model: str | None = None):
        lines.append(Line(stage, step, role, model or roles[role].model_id if role in roles else (model or ""),
                          acc.calls, acc.prompt, acc.completion, acc.scored if scored else None, why))

    # synthesis: one generator call per document without a request
    synth = _Acc()
    # refinement, per step
    init_roll, init_score, edits, cand_score, published = _Acc(), _Acc(), _Acc(), _Acc(), _Acc()
    train_row_tokens, rows = ZERO, ZERO
    for item in inputs.items:
        prompts = prompts_for(item.query or item.reference)
        q = _query_tokens(item.query, gen_count, beh, int(syn["max_tokens"]))
        if not item.query:
            synth.add(Range.of(1), Range.of(gen_count(render_chat(prompts.query_synthesis_messages(item.reference)))),
                      Range(1, min(int(syn["max_tokens"]), beh.query_tokens), int(syn["max_tokens"])))
        y_tokens = gen_count(item.reference)
        cpt = len(item.reference) / max(1, y_tokens)
        steps = steps_range(search, beh, cpt)
        head, tail = split_reference(segment(item.reference, int(search.get("min_segment_chars", 100))))
        scored_per_call = scorer_count(tail)
        # prompts rendered with an empty request (its tokens are added), so the template's tokens are exact
        p0 = Range.of(gen_count(render_chat(prompts.initial_thinking_messages("", item.reference),
                                            THINK_OPEN + prompts.openers[0][0]))) + q
        e0 = Range.of(gen_count(render_chat(prompts.segment_edit_messages("", item.reference, [], "", [], False),
                                            prompts.edit_prefill))) + q
        c0 = Range.of(scorer_count(render_chat(prompts.inference_messages(""), THINK_OPEN) + THINK_CLOSE
                                   + ANSWER_OPEN + item.reference)) + q
        # a synthesized request is searched only when it passes the query checks
        n = Range.of(rollouts) * (Range(0, beh.query_accepted_share, 1) if not item.query else Range.of(1))
        init_roll.add(n, n * p0, n * z)
        init_calls = n * Range(0, beh.searched_share, 1)
        init_score.add(init_calls, init_calls * (c0 + z), ZERO, init_calls * scored_per_call)
        if item.published_thinking:  # scored beside z0 with z0's prompt
            published.add(init_calls, init_calls * (c0 + Range.of(scorer_count(item.published_thinking))), ZERO,
                          init_calls * scored_per_call)
        edit_calls = n * steps
        edits.add(edit_calls, edit_calls * (e0 + z), edit_calls * (K * e))
        cand_calls = edit_calls * Range(K, K * beh.scorable_share, K)
        cand_score.add(cand_calls, cand_calls * (c0 + z), ZERO, cand_calls * scored_per_call)
        # one SFT row per searched query (curation keeps one rollout): inference prompt + thinking + answer
        row = Range(0, min(1.0, beh.searched_share * rollouts), 1) * (n * (1 / rollouts))
        rows = rows + row
        train_row_tokens = train_row_tokens + row * (c0 + z)

    items, docs_synth = len(inputs.items), sum(1 for i in inputs.items if not i.query)
    if "synthesis" in inputs.stages:
        line("synthesis", "back-synthesis", "generator", synth, {
            "low": "every request is 1 token", "expected": f"a synthesized request is {beh.query_tokens:g} tokens "
            f"({beh.source.split(';')[0]})", "high": f"every request runs to max_tokens {syn['max_tokens']}",
            "calls": f"{docs_synth} of {items} documents come without a request (1 call each)"})
    if "refinement" in inputs.stages:
        zwhy = {"low": f"every thinking is at the token floor ({z.low:g})",
                "expected": f"a thinking is {z.expected:g} tokens ({beh.source})",
                "high": f"every thinking runs to max_tokens {z.high:g}"}
        line("refinement", "initial rollout", "generator", init_roll,
             {**zwhy, "calls": f"{rollouts} rollout(s) per item with an accepted request, 1 call each; "
              f"{beh.query_accepted_share:.0%} of synthesized requests pass the query checks (low: none, high: all)"})
        line("refinement", "initial scoring", "scorer", init_score, {
            "low": "every rollout is rejected before scoring (under the token floor, or one segment)",
            "expected": f"{beh.searched_share:.0%} of rollouts pass the floor and split into 2+ segments; rejected ones "
                        "are not scored", "high": "every rollout is scored, thinking at max_tokens"}, scored=True)
        with_published = sum(1 for i in inputs.items if i.published_thinking)
        if with_published:
            line("refinement", "published scoring", "scorer", published, {
                "low": "every rollout is rejected before scoring", "high": "every rollout is scored",
                "expected": f"the source's own thinking of {with_published} of {items} items is scored once per "
                            f"scored rollout, as z0 is ({beh.searched_share:.0%} of rollouts)"}, scored=True)
        line("refinement", "edit steps", "generator", edits, {
            "low": "every item stops at its initial score (0 steps)",
            "expected": f"searched rollouts take min(max_step {search['max_step']}, segments of a "
                        f"{z.expected:g}-token thinking at {beh.segment_chars:g} characters per segment) steps, each "
                        f"{K} candidates of {e.expected:g} tokens; nothing stops below stop_thresh {search['stop_thresh']}",
            "high": f"max_step {search['max_step']} steps, {K} candidates each at edit max_tokens {e_cap}, "
                    f"prompt holds a max_tokens thinking"})
        line("refinement", "candidate scoring", "scorer", cand_score, {
            "low": "no steps", "expected": f"{beh.scorable_share:.0%} of candidates have a <refine> block",
            "high": f"every candidate ({K} per step) is scored"}, scored=True)

    ft = prof.get("finetune", {})
    epochs = float(ft.get("epochs") or (2 if ft.get("recipe") == "embedded" else 3))
    if "training" in inputs.stages:
        acc = _Acc()
        acc.add(ZERO, train_row_tokens * epochs)
        line("training", "fine-tuning (sft_dataset)", "generator", acc, {
            "low": "no row is kept", "expected": f"one row per query when {beh.searched_share:.0%} of rollouts are "
            f"searched; row = inference prompt + thinking + reference; {epochs:g} epochs",
            "high": f"every query keeps a row with a max_tokens thinking; {epochs:g} epochs",
            "tokens": "prompt tokens = tokens forwarded in training (rows x epochs); no generation"},
             model=f"base of {gen_model}")

    bench = prof.get("benchmark", {})
    judge_on = roles.get("judge", RoleSpec("", "", False)).configured
    if "evaluation" in inputs.stages and inputs.bench_items:
        gen, nll, judge = _answers(inputs.bench_items, 2, bench, beh, gen_count, scorer_count, judge_count, judge_on,
                                   pairwise=True)
        answer_why = {"low": "every answer is 1 token", "expected": f"an answer is {min(bench['max_tokens'], beh.answer_tokens):g} tokens",
                      "high": f"every answer runs to max_tokens {bench['max_tokens']}",
                      "calls": f"{len(inputs.bench_items)} benchmark prompts x 2 models (base, fine-tuned)"}
        line("evaluation", "answers", "generator", gen, answer_why, model="base and fine-tuned checkpoints")
        line("evaluation", "held-out NLL", "generator", nll, {
            "low": "without and with an empty thinking", "expected": "without and with the answer's own thinking",
            "high": "the thinking at max_tokens", "calls": "2 per prompt with a reference, per model"}, scored=True,
             model="base and fine-tuned checkpoints")
        if judge_on:
            line("evaluation", "judging", "judge", judge, {
                "low": "1-token answers, 1-token verdicts", "expected": f"verdicts of {beh.judge_tokens:g} tokens",
                "high": "max_tokens answers, 1024-token verdicts", "calls": "1 quality judgment per answer + 2 pairwise "
                "per prompt"}, )
    exp = prof.get("experiment", {})
    if "experiments" in inputs.stages and exp:
        variants, seeds = len(exp.get("variants", [])), int(exp.get("seeds", 1))
        checkpoints = variants * seeds
        per_row = train_row_tokens * Range(1, 1, 1)
        acc = _Acc()
        if exp.get("max_steps"):
            batch = 4 if exp.get("recipe") == "embedded" else 96
            rows_per_step = rows.map(lambda r: min(batch, r))
            mean_row = Range(*(t / r if r else 0.0 for t, r in zip(
                (per_row.low, per_row.expected, per_row.high), (rows.low, rows.expected, rows.high))))
            acc.add(ZERO, checkpoints * int(exp["max_steps"]) * rows_per_step * mean_row)
            how = f"{exp['max_steps']} steps of min({batch}, rows) rows"
        else:
            acc.add(ZERO, checkpoints * per_row * epochs)
            how = f"{epochs:g} epochs"
        line("experiments", "ablation training", "generator", acc, {
            "low": "no row kept", "expected": f"{checkpoints} checkpoints ({variants} variants x {seeds} seeds), {how}",
            "high": "every query kept, max_tokens thinkings", "tokens": "prompt tokens = tokens forwarded in training"},
             model=f"base of {gen_model}")
        held = [b for d in (inputs.domains or sorted({i.domain for i in inputs.items})) for b in inputs.held_out.get(d, [])]
        if held:
            ebench = {**bench, "max_tokens": exp.get("max_tokens", bench.get("max_tokens", 2048))}
            gen, nll, judge = _answers(held, checkpoints, ebench, beh, gen_count, scorer_count, judge_count, judge_on,
                                       pairwise=False)
            line("experiments", "ablation answers", "generator", gen, {
                "low": "1-token answers", "expected": f"answers of {min(ebench['max_tokens'], beh.answer_tokens):g} tokens",
                "high": f"answers at max_tokens {ebench['max_tokens']}",
                "calls": f"{len(held)} held-out prompts x {checkpoints} checkpoints"}, model="ablation checkpoints")
            line("experiments", "ablation held-out NLL", "generator", nll, {
                "low": "empty thinking", "expected": "the answer's own thinking", "high": "thinking at max_tokens"},
                 scored=True, model="ablation checkpoints")
            if judge_on:
                line("experiments", "ablation judging", "judge", judge, {
                    "low": "1-token answers", "expected": f"verdicts of {beh.judge_tokens:g} tokens",
                    "high": "1024-token verdicts", "calls": "1 quality judgment per answer"})

    return Plan(lines, {
        "profile": inputs.profile_name, "domains": inputs.domains, "items": items, "rollouts": items * rollouts,
        "documents_without_request": docs_synth,
        "search": {k: search.get(k) for k in ("num_rollouts", "max_step", "num_expansion", "max_tokens", "edit_max_tokens",
                                              "stop_thresh", "min_segment_chars", "min_rollout_tokens")},
        "synthesis": dict(syn), "benchmark": dict(bench), "finetune": dict(ft), "experiment": dict(exp),
        "roles": {r: asdict(s) for r, s in roles.items()}, "behaviour": beh.to_dict(),
        "tokenizers": {"generator": gen_count.name, "scorer": scorer_count.name},
        "benchmark_prompts": len(inputs.bench_items),
    })


def scale_items(p: Plan, items: int) -> Plan:
    """The plan for ``items`` items of the same mix: the per-item lines scaled by items / the planned count."""
    n = p.inputs["items"]
    if not n:
        raise ValueError("the domains hold no accepted item to take the mix from")
    f = items / n
    for ln in p.lines:
        if ln.stage in ("synthesis", "refinement", "training") or ln.step == "ablation training":
            ln.calls, ln.prompt_tokens, ln.completion_tokens = ln.calls * f, ln.prompt_tokens * f, ln.completion_tokens * f
            ln.scored_tokens = ln.scored_tokens * f if ln.scored_tokens is not None else None
    p.inputs = {**p.inputs, "items": items, "rollouts": round(p.inputs["rollouts"] * f),
                "documents_without_request": round(p.inputs["documents_without_request"] * f), "scaled_from_items": n}
    return p


def _answers(bench_items: list[BenchItem], models: int, bench: Mapping[str, Any], beh: Behaviour,
             gen_count: TokenCounter, scorer_count: TokenCounter, judge_count: TokenCounter, judge_on: bool,
             pairwise: bool) -> tuple[_Acc, _Acc, _Acc]:
    """Answers, held-out NLL and judge calls for ``models`` checkpoints answering every prompt once."""
    cap = int(bench.get("max_tokens", 2048))
    a = Range(1, min(cap, beh.answer_tokens), cap)
    verdict = Range(1, beh.judge_tokens, 1024)
    gen, nll, judge = _Acc(), _Acc(), _Acc()
    m = Range.of(models)
    for b in bench_items:
        prompts = prompts_for(b.prompt)
        p = gen_count(render_chat(prompts.inference_messages(b.prompt), THINK_OPEN))
        gen.add(m, m * p, m * a)
        if b.reference:
            head, tail = split_reference(segment(b.reference))
            c = scorer_count(render_chat(prompts.inference_messages(b.prompt), THINK_OPEN) + THINK_CLOSE + ANSWER_OPEN
                             + b.reference)
            nll.add(m * 2, m * (Range.of(2 * c) + Range(0, 1, 1) * a), ZERO, m * (2 * scorer_count(tail)))
        if judge_on:
            calls = m + (Range.of(2) if pairwise else ZERO)
            j = judge_count(b.prompt) + 350  # the judge's instructions, about 350 tokens (core/evaluation/judge.py)
            judge.add(calls, calls * (a + j), calls * verdict)
    return gen, nll, judge


# --- throughput and prices ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Throughput:
    """Tokens per second on one device for a model pattern (fnmatch over the role's model id) and backend."""

    model: str
    backend: str | None = None
    device: str = "one GPU"
    prefill_tokens_per_s: float | None = None
    decode_tokens_per_s: float | None = None
    train_tokens_per_s: float | None = None
    source: str = ""

    def matches(self, model_id: str, backend: str) -> bool:
        return (self.backend in (None, backend)) and fnmatchcase(model_id.lower(), self.model.lower())


# The project's own measurements (and the published figures docs/scale.md uses). Every entry says where it is from.
BUILTIN_THROUGHPUT: tuple[Throughput, ...] = (
    Throughput("*reer-embedded-scorer:*", "embedded", "2 CPU cores", prefill_tokens_per_s=18613,
               source="docs/performance.md, Scoring: hf scorer, mode (c) prefix (the default), 2 torch threads"),
    Throughput("*reer-embedded-scorer:*", "hf", "2 CPU cores", prefill_tokens_per_s=18613,
               source="docs/performance.md, Scoring: hf scorer, mode (c) prefix (the default), 2 torch threads"),
    Throughput("*reer-embedded-scorer:*", "vllm", "2 CPU cores", prefill_tokens_per_s=7474,
               source="docs/performance.md, Scoring: row (d), the in-process vLLM engine (CPU build)"),
    Throughput("*reer-embedded:*", None, "2 CPU cores", train_tokens_per_s=9400,
               source="docs/embedded-model.md: the build trains at about 9,400 tokens/s (train_seconds 158 s)"),
    Throughput("*qwen3-32b*", None, "H100 80GB", prefill_tokens_per_s=2770, decode_tokens_per_s=1130,
               source="docs/scale.md, Throughputs: GPUStack performance lab, vLLM v0.11.0, Qwen3-32B on one H100"),
    Throughput("*qwen2.5-32b*", None, "H100 80GB", prefill_tokens_per_s=2770, decode_tokens_per_s=1130,
               source="docs/scale.md, Throughputs: the Qwen3-32B figures standing in for Qwen2.5-32B (an assumption)"),
    Throughput("*qwen3-14b*", None, "H100 80GB", prefill_tokens_per_s=8300,
               source="docs/scale.md, Throughputs: GPUStack, Qwen3-14B, random 32,000/100 total tokens/s"),
)


@dataclass(frozen=True)
class Price:
    model: str
    input_per_1m: float | None = None
    output_per_1m: float | None = None
    batch_discount: float | None = None

    def matches(self, model_id: str) -> bool:
        return fnmatchcase(model_id.lower(), self.model.lower())


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{where}: expected a non-negative number, got {value!r}")
    return float(value)


def parse_throughput(doc: Any, where: str = "throughput.yaml") -> list[Throughput]:
    """``{models: [{model, backend?, device?, prefill_tokens_per_s?, decode_tokens_per_s?, train_tokens_per_s?,
    source?}]}``; unknown keys are an error, a missing rate stays None."""
    entries = (doc or {}).get("models") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{where}: expected a mapping with a 'models' list")
    known = {f.name for f in fields(Throughput)}
    out = []
    for k, e in enumerate(entries):
        if not isinstance(e, dict) or not e.get("model"):
            raise ValueError(f"{where}: models[{k}] needs a 'model' pattern")
        if set(e) - known:
            raise ValueError(f"{where}: models[{k}] has unknown keys {sorted(set(e) - known)}; known: {sorted(known)}")
        out.append(Throughput(model=str(e["model"]), backend=e.get("backend"), device=str(e.get("device", "one GPU")),
                              source=str(e.get("source") or where), **{
                                  r: _number(e.get(r), f"{where}: models[{k}].{r}")
                                  for r in ("prefill_tokens_per_s", "decode_tokens_per_s", "train_tokens_per_s")}))
    return out


def parse_prices(doc: Any, where: str = "prices.yaml") -> list[Price]:
    """``{batch_discount?: 0.5, models: [{model, input_per_1m?, output_per_1m?, batch_discount?}]}``."""
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), list):
        raise ValueError(f"{where}: expected a mapping with a 'models' list")
    default = _number(doc.get("batch_discount"), f"{where}: batch_discount")
    known = {f.name for f in fields(Price)}
    out = []
    for k, e in enumerate(doc["models"]):
        if not isinstance(e, dict) or not e.get("model"):
            raise ValueError(f"{where}: models[{k}] needs a 'model' pattern")
        if set(e) - known:
            raise ValueError(f"{where}: models[{k}] has unknown keys {sorted(set(e) - known)}; known: {sorted(known)}")
        discount = _number(e.get("batch_discount"), f"{where}: models[{k}].batch_discount")
        if discount is not None and discount > 1 or default is not None and default > 1:
            raise ValueError(f"{where}: a batch_discount is a share of the price, between 0 and 1")
        out.append(Price(str(e["model"]), _number(e.get("input_per_1m"), f"{where}: models[{k}].input_per_1m"),
                         _number(e.get("output_per_1m"), f"{where}: models[{k}].output_per_1m"),
                         discount if discount is not None else default))
    return out


def _backend_of(line: Line, roles: Mapping[str, RoleSpec]) -> tuple[str, str]:
    spec = roles.get(line.role)
    return (spec.backend if spec else "", line.model)


def price_plan(p: Plan, roles: Mapping[str, RoleSpec], throughput: Iterable[Throughput] = (),
               prices: Iterable[Price] = ()) -> Plan:
    """Fill each line's device-hours (user entries first, then the built-in ones) and, for API roles, money."""
    table = list(throughput) + list(BUILTIN_THROUGHPUT)
    prices = list(prices)
    for ln in p.lines:
        backend, model = _backend_of(ln, roles)
        if ln.model.startswith("base of "):
            model = ln.model.removeprefix("base of ")
        elif ln.role == "generator" and ln.stage in ("evaluation", "experiments"):
            model = roles["generator"].model_id  # checkpoints of the generator's base
        training = ln.stage == "training" or ln.step == "ablation training"
        entry = next((t for t in table if t.matches(model, backend)
                      and (t.train_tokens_per_s if training else (t.prefill_tokens_per_s or t.decode_tokens_per_s))), None)
        if ln.calls.high == 0 and not training:
            ln.hours, ln.hours_why = Range(), None
        elif entry is None:
            ln.hours_why = (f"no throughput for {model} ({backend}) in throughput.yaml or the built-in table"
                            + (" (training rate)" if training else ""))
        elif training:
            ln.hours = ln.prompt_tokens.map(lambda t: t / entry.train_tokens_per_s / 3600)  # type: ignore[operator]
            ln.hours_why = f"{entry.device}: {entry.source}"
        else:
            need_decode = ln.completion_tokens.high > 0
            if not entry.prefill_tokens_per_s or (need_decode and not entry.decode_tokens_per_s):
                missing = "prefill" if not entry.prefill_tokens_per_s else "decode"
                ln.hours_why = f"the throughput entry for {model} ({entry.source}) has no {missing} rate"
            else:
                pre, dec = entry.prefill_tokens_per_s, entry.decode_tokens_per_s or 1.0
                ln.hours = Range(*((pt / pre + ct / dec) / 3600 for pt, ct in zip(
                    (ln.prompt_tokens.low, ln.prompt_tokens.expected, ln.prompt_tokens.high),
                    (ln.completion_tokens.low, ln.completion_tokens.expected, ln.completion_tokens.high))))
                ln.hours_why = f"{entry.device}: {entry.source}"
        if backend != "openai" or training or ln.stage in ("evaluation", "experiments") and ln.role == "generator":
            ln.cost_why = "local model: no per-token price (see device-hours)"
            continue
        price = next((x for x in prices if x.matches(model)), None)
        if price is None:
            ln.cost_why = f"no price for {model} in prices.yaml"
        elif price.input_per_1m is None or price.output_per_1m is None:
            ln.cost_why = f"prices.yaml gives {model} no {'input' if price.input_per_1m is None else 'output'} price"
        else:
            # a scorer call reads the whole sequence as input and writes one token
            out_tokens = ln.calls if ln.role == "scorer" else ln.completion_tokens
            ln.cost_usd = (ln.prompt_tokens * (price.input_per_1m / 1e6)) + (out_tokens * (price.output_per_1m / 1e6))
            ln.cost_batch_usd = ln.cost_usd * (1 - price.batch_discount) if price.batch_discount is not None else None
            ln.cost_why = f"prices.yaml entry {price.model}" + (
                "" if price.batch_discount is not None else "; no batch_discount given")
    return p


# --- predicted against actual ------------------------------------------------------------------------

def actual_from_lineage(queries: Iterable[Mapping[str, Any]], trajectories: Iterable[Mapping[str, Any]]) -> dict:
    """Per (stage, step, role): calls, prompt, completion and scored tokens as lineage recorded them.

    ``trajectories`` rows carry ``trace_json``; the prompt tokens of the search are recorded per item, not per
    step, so they are compared for the refinement stage as a whole (step rows give None)."""
    import json

    out: dict[tuple[str, str, str], dict[str, float | None]] = {}

    def add(key, calls=0.0, prompt=0.0, completion=0.0, scored=0.0):
        cur = out.setdefault(key, {"calls": 0.0, "prompt_tokens": 0.0, "completion_tokens": 0.0, "scored_tokens": 0.0})
        for k, v in (("calls", calls), ("prompt_tokens", prompt), ("completion_tokens", completion),
                     ("scored_tokens", scored)):
            if v is None or cur[k] is None:
                cur[k] = None
            else:
                cur[k] += v

    for q in queries:
        if q.get("synthesized"):
            add(("synthesis", "back-synthesis", "generator"), 1, q.get("prompt_tokens") or 0, q.get("completion_tokens") or 0)
    total = {"prompt_tokens": 0.0, "completion_tokens": 0.0, "generator_calls": 0.0, "scorer_calls": 0.0, "scored": 0.0}
    for t in trajectories:
        if t.get("status") == "failed" or not t.get("trace_json"):
            continue
        trace = json.loads(t["trace_json"])
        scorer_calls = t.get("scorer_calls") or 0
        per_call = (t.get("scored_tokens") or 0) / scorer_calls if scorer_calls else 0.0
        initial_scored = 1 if trace.get("initial_score") is not None else 0
        add(("refinement", "initial rollout", "generator"), 1, None, trace.get("initial_tokens") or 0)
        add(("refinement", "initial scoring", "scorer"), initial_scored, None, 0, initial_scored * per_call)
        published_scored = 1 if trace.get("published_score") is not None else 0
        if published_scored:
            add(("refinement", "published scoring", "scorer"), 1, None, 0, per_call)
        steps = trace.get("steps") or []
        add(("refinement", "edit steps", "generator"), len(steps), None,
            sum(c.get("completion_tokens") or 0 for s in steps for c in s["candidates"]))
        cand = scorer_calls - initial_scored - published_scored
        add(("refinement", "candidate scoring", "scorer"), cand, None, 0, cand * per_call)
        for k, col in (("prompt_tokens", "prompt_tokens"), ("completion_tokens", "completion_tokens"),
                       ("generator_calls", "generator_calls"), ("scorer_calls", "scorer_calls"), ("scored", "scored_tokens")):
            total[k] += t.get(col) or 0
    if out.get(("refinement", "initial rollout", "generator")):
        add(("refinement", "(all steps)", "generator"), total["generator_calls"], total["prompt_tokens"],
            total["completion_tokens"])
        add(("refinement", "(all steps)", "scorer"), total["scorer_calls"], None, 0, total["scored"])
    return out


def predicted_rows(p: Plan) -> dict[tuple[str, str, str], dict[str, float]]:
    """The plan's expected values per (stage, step, role), plus refinement totals per role."""
    out: dict[tuple[str, str, str], dict[str, float]] = {}
    for ln in p.lines:
        row = {"calls": ln.calls.expected, "prompt_tokens": ln.prompt_tokens.expected,
               "completion_tokens": ln.completion_tokens.expected,
               "scored_tokens": ln.scored_tokens.expected if ln.scored_tokens else 0.0}
        out[(ln.stage, ln.step, ln.role)] = row
        if ln.stage == "refinement":
            tot = out.setdefault(("refinement", "(all steps)", ln.role), dict.fromkeys(row, 0.0))
            for k, v in row.items():
                tot[k] += v
    return out


def compare(p: Plan, actual: Mapping[tuple[str, str, str], Mapping[str, float | None]]) -> list[dict[str, Any]]:
    """Predicted (expected) against actual per stage, step and role, with actual/expected ratios."""
    rows = []
    predicted = predicted_rows(p)
    for key in [k for k in predicted if k in actual]:
        pred, act = predicted[key], actual[key]
        row: dict[str, Any] = {"stage": key[0], "step": key[1], "role": key[2]}
        for name in ("calls", "prompt_tokens", "completion_tokens", "scored_tokens"):
            a, e = act.get(name), pred.get(name)
            row[name] = {"expected": round(e, 1) if e is not None else None, "actual": a,
                         "ratio": round(a / e, 3) if a is not None and e else None}
        pt, at = pred["prompt_tokens"] + pred["completion_tokens"], None
        if act.get("prompt_tokens") is not None:
            at = (act["prompt_tokens"] or 0) + (act.get("completion_tokens") or 0)
        elif key[2] == "scorer":
            pt, at = pred["scored_tokens"], act.get("scored_tokens")
        else:
            pt, at = pred["completion_tokens"], act.get("completion_tokens")
        row["tokens_ratio"] = round(at / pt, 3) if at is not None and pt else None
        row["tokens_compared"] = ("prompt + completion" if act.get("prompt_tokens") is not None
                                  else "scored" if key[2] == "scorer" else "completion")
        rows.append(row)
    for stage in dict.fromkeys(k[0] for k in actual):
        # the stage as a whole: every token lineage records (generator prompt + completion, scorer scored)
        keys = [k for k in predicted if k[0] == stage and k in actual and (stage != "refinement" or k[1] == "(all steps)")]
        if not keys:
            continue
        exp = sum(predicted[k]["prompt_tokens"] + predicted[k]["completion_tokens"] if k[2] != "scorer"
                  else predicted[k]["scored_tokens"] for k in keys)
        act = sum((actual[k].get("prompt_tokens") or 0) + (actual[k].get("completion_tokens") or 0) if k[2] != "scorer"
                  else actual[k].get("scored_tokens") or 0 for k in keys)
        rows.append({"stage": stage, "step": "(stage total)", "role": "all", "tokens_expected": round(exp, 1),
                     "tokens_actual": act, "tokens_ratio": round(act / exp, 3) if exp else None,
                     "tokens_compared": "generator prompt + completion, scorer scored"})
    return rows


def compare_markdown(rows: list[dict[str, Any]]) -> str:
    def c(cell: dict) -> str:
        if cell["actual"] is None:
            return f"{cell['expected']:,.0f} / not recorded"
        ratio = f" ({cell['ratio']:.2f}x)" if cell["ratio"] is not None else ""
        return f"{cell['expected']:,.0f} / {cell['actual']:,.0f}{ratio}"

    def ratio(r: dict) -> str:
        return f"{r['tokens_ratio']:.2f} ({r['tokens_compared']})" if r["tokens_ratio"] is not None else "–"

    return markdown_table(
        ["stage", "step", "role", "calls exp/act", "prompt exp/act", "completion exp/act", "scored exp/act",
         "tokens actual/expected"],
        [(r["stage"], r["step"], r["role"], c(r["calls"]), c(r["prompt_tokens"]), c(r["completion_tokens"]),
          c(r["scored_tokens"]), ratio(r)) if "calls" in r else
         (r["stage"], r["step"], r["role"], "", "", "", "", f"{r['tokens_actual']:,.0f} / {r['tokens_expected']:,.0f} = "
          + ratio(r)) for r in rows])
