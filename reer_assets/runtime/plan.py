"""A run's plan from the engine's settings: the configured domains (their sources, as ``raw_documents`` would
read them: no model), the profile, the roles' backends (``REER_<ROLE>_*``) and the throughput and price
files (``REER_THROUGHPUT_FILE``, ``REER_PRICES_FILE``), counted by :mod:`reer_assets.core.plan`; and the plan
of recorded runs against what lineage recorded. ``reer plan`` (``cli/plan.py``) prints it, the ``run_plan``
asset (``defs/planning/``) records it (docs/cost.md).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from reer_assets.core import plan as P


def _tokenizer_file(spec: Any, role: str) -> Path | None:
    """A local ``tokenizer.json`` for a role, never building a model: its tokenizer, its model folder, or the
    embedded build when it is already on disk."""
    candidates = [spec.tokenizer, spec.model if spec.backend != "openai" else None]
    if not spec.model and spec.backend in ("embedded", "vllm"):
        if role == "scorer":
            from reer_assets.backends.embedded_scorer import KIND, scorer_build_key

            kind, key = KIND, scorer_build_key()
        else:
            from reer_assets.backends.embedded import build_key

            kind, key = "embedded", build_key()
        from reer_assets.backends.embedded import build_key, cache_root, instance_root

        # the embedded scorer is trained on the embedded generator's tokenizer: that build's file serves too
        for k, v in ((kind, key), ("embedded", build_key())):
            candidates += [str(instance_root(k) / v), str(cache_root() / k / v)]
    for c in candidates:
        if c:
            path = Path(c)
            path = path if path.name == "tokenizer.json" else path / "tokenizer.json"
            if path.is_file():
                return path
    return None


def token_counter(spec: Any, role: str) -> P.TokenCounter:
    """The role's local tokenizer (the ``tokenizers`` library, no torch) or the stated character ratio."""
    path = _tokenizer_file(spec, role)
    if path is None:
        return P.TokenCounter()
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    return P.TokenCounter(lambda text: len(tok.encode(text, add_special_tokens=False).ids), f"tokenizer {path}")


def role_specs(backends: dict[str, Any] | None = None) -> tuple[dict[str, P.RoleSpec], dict[str, Any]]:
    """(RoleSpec per role, BackendSpec per role): ``backends`` (role -> BackendSpec, the judge None when it
    is not configured), else ``REER_<ROLE>_*``; the judge is unconfigured without one."""
    from reer_assets.backends.config import BackendSpec, model_id

    specs, roles = {}, {}
    if backends is not None:
        for role in ("generator", "scorer", "judge"):
            spec = backends.get(role)
            if spec is None:
                roles[role] = P.RoleSpec("", "none", configured=False)
            else:
                specs[role], roles[role] = spec, P.RoleSpec(spec.backend, model_id(spec, role))
        return roles, specs
    for role in ("generator", "scorer"):
        spec = BackendSpec.from_env(role)
        specs[role], roles[role] = spec, P.RoleSpec(spec.backend, model_id(spec, role))
    try:
        from reer_assets.backends.judge import JudgeNotConfigured, judge_spec

        spec = judge_spec()
        specs["judge"], roles["judge"] = spec, P.RoleSpec(spec.backend, model_id(spec, "judge"))
    except JudgeNotConfigured:
        roles["judge"] = P.RoleSpec("", "none", configured=False)
    return roles, specs


def domain_items(domains: Sequence[str] | None = None) -> tuple[list[str], list[P.PlanItem]]:
    """The accepted documents of each domain as ``raw_documents`` would read them (cleaning defaults and the
    domain's ``cleaning:``); no model is called."""
    from reer_assets.core.ids import config_hash
    from reer_assets.core.ingest.pipeline import CleaningConfig, domain_cleaning, ingest_domain
    from reer_assets.lib.domains import domain_names, domain_spec, source_places

    names = list(domains) if domains else domain_names()
    items = []
    for name in names:
        spec = domain_spec(name)
        cleaning, allowed = domain_cleaning(spec, CleaningConfig())
        frame = ingest_domain(name, spec, cleaning, config_hash({**cleaning.to_dict(), "languages": allowed}),
                              source_places())
        for row in frame.filter(frame["status"] == "accepted").iter_rows(named=True):
            items.append(P.PlanItem(reference=row["text"], query=row.get("given_request") or None, domain=name,
                                    published_thinking=row.get("published_thinking") or None))
    return names, items


def bench_items(profile: dict, domains: Sequence[str]) -> tuple[list[P.BenchItem], dict[str, list[P.BenchItem]]]:
    """The prompts benchmark_scores answers (benchmarks.yaml) and, per domain, the ablations' held-out prompts."""
    from reer_assets import settings
    from reer_assets.core.evaluation.benchmarks import benchmark_specs
    from reer_assets.workloads.evaluation import bundled_items, load_items

    def conv(rows):
        return [P.BenchItem(r["prompt"], r.get("reference"), (r.get("meta") or {}).get("domain") or "") for r in rows]

    bench, _ = load_items(benchmark_specs(settings.benchmarks_file()), profile.get("benchmark", {}))
    per = profile.get("experiment", {}).get("prompts_per_domain")
    return conv(bench), {d: conv(bundled_items(per, [d])) for d in domains}


def _yaml_file(path: str | None, env: str) -> tuple[Any, str] | None:
    import yaml

    chosen = path or os.environ.get(env)
    if not chosen:
        return None
    with open(chosen, encoding="utf-8") as handle:
        return yaml.safe_load(handle), chosen


def tables(throughput: str | None = None, prices: str | None = None) -> tuple[list[P.Throughput], list[P.Price]]:
    t = _yaml_file(throughput, "REER_THROUGHPUT_FILE")
    p = _yaml_file(prices, "REER_PRICES_FILE")
    return (P.parse_throughput(*t) if t else [], P.parse_prices(*p) if p else [])


def build_plan(domains: Sequence[str] | None = None, profile: str | None = None, items: int | None = None,
               throughput: str | None = None, prices: str | None = None, search: dict | None = None,
               stages: Sequence[str] = P.STAGES, behaviour: dict | None = None,
               backends: dict[str, Any] | None = None) -> P.Plan:
    """The plan for ``domains`` (default: all configured) under ``profile``; ``items`` scales the per-item stages
    to that many items of the same mix; ``search`` overrides search settings (a run's recorded config)."""
    from reer_assets.lib.profiles import profile as resolved_profile, profile_name

    name = profile_name(profile)
    prof = {k: (dict(v) if isinstance(v, dict) else v) for k, v in resolved_profile(name).items()}
    if search:
        prof["search"] = {**prof["search"], **{k: v for k, v in search.items() if k in P_SEARCH_KEYS}}
    roles, specs = role_specs(backends)
    names, plan_items = domain_items(domains)
    bench, held = bench_items(prof, names)
    beh = P.behaviour_for(roles["generator"].model_id, roles["generator"].backend, behaviour)
    inputs = P.PlanInputs(items=plan_items, profile=prof, roles=roles, behaviour=beh, bench_items=bench, held_out=held,
                          profile_name=name, domains=names, stages=stages)
    gen_count = token_counter(specs["generator"], "generator")
    scorer_count = token_counter(specs["scorer"], "scorer")
    judge_count = token_counter(specs["judge"], "judge") if "judge" in specs else gen_count
    plan = P.plan(inputs, gen_count, scorer_count, judge_count)
    if items is not None:
        plan = P.scale_items(plan, items)
    t, p = tables(throughput, prices)
    return P.price_plan(plan, roles, t, p)


P_SEARCH_KEYS = ("num_rollouts", "max_step", "num_expansion", "max_tokens", "edit_max_tokens", "stop_thresh",
                 "min_segment_chars", "min_rollout_tokens")


# --- compare --------------------------------------------------------------------------------------

def lineage_rows(run_ids: Sequence[str]) -> tuple[list[str], list[dict], list[dict]]:
    """(run ids, queries rows, trajectories rows) of the runs; ``latest`` = every domain's latest synthesis
    and refinement runs."""
    from reer_assets.lib.duckdb_store import query

    ids = [r for r in run_ids if r != "latest"]
    if "latest" in run_ids:
        for table in ("queries", "trajectories"):
            frame = query(f"SELECT arg_max(run_id, recorded_at) AS run_id FROM {table} GROUP BY partition")
            ids += [r for r in frame["run_id"].to_list() if r and r not in ids]
    if not ids:
        return [], [], []
    marks = ", ".join("?" for _ in ids)
    queries = query(f"SELECT synthesized, prompt_tokens, completion_tokens, partition FROM queries WHERE run_id IN ({marks})",
                    ids).to_dicts()
    trajectories = query(
        "SELECT status, prompt_tokens, completion_tokens, scored_tokens, generator_calls, scorer_calls, trace_json, "
        f"partition FROM trajectories WHERE run_id IN ({marks})", ids).to_dicts()
    return ids, queries, trajectories


def compare_runs(run_ids: Sequence[str], domains: Sequence[str] | None = None, profile: str | None = None) -> dict:
    """The plan for the runs' domains and recorded search settings, against what lineage recorded."""
    ids, queries, trajectories = lineage_rows(run_ids)
    if not queries and not trajectories:
        raise ValueError(f"no queries or trajectories in lineage for run(s) {', '.join(run_ids)}")
    from reer_assets.lib.domains import domain_names

    seen = sorted({r["partition"] for r in queries + trajectories if r.get("partition")})
    chosen = list(domains) if domains else [d for d in domain_names() if d in seen] or None
    search = None
    recorded = next((t["trace_json"] for t in trajectories if t.get("trace_json")), None)
    if recorded:
        search = json.loads(recorded).get("config")
    stages = [s for s, rows in (("synthesis", queries), ("refinement", trajectories)) if rows]
    plan = build_plan(chosen, profile, search=search, stages=stages)
    actual = P.actual_from_lineage(queries, trajectories)
    rows = P.compare(plan, actual)
    return {"runs": ids, "domains": plan.inputs["domains"], "profile": plan.inputs["profile"], "rows": rows,
            "plan": plan.to_dict()}
