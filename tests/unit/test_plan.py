"""`reer plan`: the counting against a hand count, the files, the JSON, the asset, and a real small run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from reer_assets.core import plan as P
from reer_assets.core.chat_format import ANSWER_OPEN, THINK_CLOSE, THINK_OPEN
from reer_assets.core.prompts import ENGLISH

REF = ("The lighthouse keeper counted the ships each evening, writing their names in a ledger that nobody read.\n\n"
       "One winter a ship came that had no name, and he left its line blank for a week before he wrote a guess.\n\n"
       "In spring the ledger went to the harbour office, where a clerk underlined the guess and smiled.")
SEARCH = {"num_rollouts": 1, "max_step": 2, "num_expansion": 2, "max_tokens": 400, "edit_max_tokens": 100,
          "stop_thresh": 0.25, "min_segment_chars": 100, "min_rollout_tokens": 50}
PROFILE = {"search": SEARCH, "synthesis": {"max_tokens": 30}, "finetune": {"recipe": "embedded", "epochs": 1},
           "benchmark": {"max_tokens": 64}, "experiment": {}}
ROLES = {"generator": P.RoleSpec("openai", "openai:gen-model"), "scorer": P.RoleSpec("vllm", "vllm:my-scorer"),
         "judge": P.RoleSpec("", "none", configured=False)}


def hand_plan(**kw) -> P.Plan:
    items = [P.PlanItem(REF, "Write a short story about a lighthouse ledger.", "d"), P.PlanItem(REF, None, "d")]
    inputs = P.PlanInputs(items=items, profile=PROFILE, roles=ROLES, stages=("synthesis", "refinement"), **kw)
    count = P.TokenCounter()
    return P.plan(inputs, count, count)


def by_step(plan: P.Plan) -> dict[str, P.Line]:
    return {ln.step: ln for ln in plan.lines}


@pytest.mark.timeout(60)
def test_high_bound_is_the_hand_count():
    """2 items, R=1, max_step 2, num_expansion 2: the high bound is every step taken and every candidate scored."""
    lines = by_step(hand_plan())
    count = P.TokenCounter()
    assert lines["back-synthesis"].calls == P.Range(1, 1, 1)  # one item came without a request
    assert lines["initial rollout"].calls.high == 2
    assert lines["initial scoring"].calls.high == 2
    assert lines["edit steps"].calls.high == 2 * 2  # 2 items x max_step 2
    assert lines["candidate scoring"].calls.high == 2 * 2 * 2  # x num_expansion 2
    assert lines["edit steps"].calls.low == lines["candidate scoring"].calls.low == 0  # stop at the initial score
    # completions: high = max_tokens (initial) and edit max_tokens x candidates x steps
    assert lines["initial rollout"].completion_tokens.high == 2 * 400
    assert lines["edit steps"].completion_tokens.high == 4 * 2 * 100
    assert lines["back-synthesis"].completion_tokens.high == 30
    # prompt tokens include the templates: the initial prompt rendered with the engine's own template
    query = "Write a short story about a lighthouse ledger."
    rendered = P.render_chat(ENGLISH.initial_thinking_messages("", REF), THINK_OPEN + ENGLISH.openers[0][0])
    synthesized_query = 30  # high: the synthesized request runs to the synthesis max_tokens
    assert lines["initial rollout"].prompt_tokens.high == 2 * count(rendered) + count(query) + synthesized_query
    # a scored call reads the rest of the reference after its first segment, every call the same
    tail = REF[REF.index("\n\nOne winter"):]
    assert lines["candidate scoring"].scored_tokens.high == 8 * count(tail)
    score_context = count(P.render_chat(ENGLISH.inference_messages(""), THINK_OPEN) + THINK_CLOSE + ANSWER_OPEN + REF)
    assert lines["initial scoring"].prompt_tokens.high == 2 * (score_context + 400) + count(query) + synthesized_query
    for line in lines.values():  # every range is ordered and every bound says why
        for r in (line.calls, line.prompt_tokens, line.completion_tokens):
            assert r.low <= r.expected <= r.high, (line.step, r)
        assert {"low", "expected", "high"} <= set(line.assumptions)


@pytest.mark.timeout(60)
def test_a_published_thinking_costs_one_scorer_call_per_scored_rollout():
    """The search scores a source's own thinking once beside z0, with z0's prompt: planned, and read back."""
    published = "First the ledger, then the nameless ship, then the clerk's smile."
    query = "Write a short story about a lighthouse ledger."
    count = P.TokenCounter()
    items = [P.PlanItem(REF, query, "d", published_thinking=published), P.PlanItem(REF, query, "d")]
    plan = P.plan(P.PlanInputs(items=items, profile=PROFILE, roles=ROLES, stages=("refinement",)), count, count)
    line = by_step(plan)["published scoring"]
    assert line.role == "scorer" and line.calls.high == 1 and line.calls.low == 0  # one item has one, R = 1
    score_context = count(P.render_chat(ENGLISH.inference_messages(""), THINK_OPEN) + THINK_CLOSE + ANSWER_OPEN + REF)
    assert line.prompt_tokens.high == score_context + count(published) + count(query)
    assert line.scored_tokens.high == count(REF[REF.index("\n\nOne winter"):])
    assert "published scoring" not in by_step(hand_plan())  # no source thinking, no line
    # lineage: a trace with a published score had one scorer call for it, not a candidate
    trace = {"initial_score": 1.0, "published_score": 1.2, "initial_tokens": 10, "steps": []}
    actual = P.actual_from_lineage([], [{"status": "ok", "trace_json": json.dumps(trace), "scorer_calls": 2,
                                         "scored_tokens": 40}])
    assert actual[("refinement", "published scoring", "scorer")]["calls"] == 1
    assert actual[("refinement", "candidate scoring", "scorer")]["calls"] == 0


@pytest.mark.timeout(60)
def test_expected_bound_follows_the_behaviour():
    beh = P.Behaviour(thinking_tokens=200, edit_tokens=80, searched_share=0.5, segment_chars=100, scorable_share=1.0)
    lines = by_step(hand_plan(behaviour=beh))
    assert lines["initial rollout"].completion_tokens.expected == 2 * 200
    assert lines["initial scoring"].calls.expected == 2 * 0.5
    # 200 tokens x 4 characters / 100 characters per segment = 8 segments -> max_step 2, times the searched share
    assert lines["edit steps"].calls.expected == 2 * 0.5 * 2
    assert lines["edit steps"].completion_tokens.expected == 2 * 0.5 * 2 * 2 * 80
    assert lines["candidate scoring"].calls.expected == 2 * 0.5 * 2 * 2
    # more steps and more candidates grow the search linearly; the initial rollout does not move
    more = dict(SEARCH, max_step=4, num_expansion=4)
    inputs = P.PlanInputs(items=[P.PlanItem(REF, "q", "d")], profile={**PROFILE, "search": more}, roles=ROLES,
                          behaviour=beh, stages=("refinement",))
    big = by_step(P.plan(inputs, P.TokenCounter(), P.TokenCounter()))
    assert big["candidate scoring"].calls.high == 4 * 4


@pytest.mark.timeout(60)
def test_throughput_and_prices_files(tmp_path):
    import yaml

    throughput = P.parse_throughput(yaml.safe_load("""
models:
  - model: "vllm:my-scorer"
    backend: vllm
    device: H100
    prefill_tokens_per_s: 10000
    source: our bench 2026-12-01
"""))
    prices = P.parse_prices(yaml.safe_load("""
batch_discount: 0.5
models:
  - model: "openai:gen-*"
    input_per_1m: 1.0
    output_per_1m: 4.0
"""))
    assert throughput[0].prefill_tokens_per_s == 10000 and throughput[0].decode_tokens_per_s is None
    assert prices[0].batch_discount == 0.5
    plan = P.price_plan(hand_plan(), ROLES, throughput, prices)
    lines = by_step(plan)
    scoring = lines["candidate scoring"]
    assert scoring.hours.high == pytest.approx(scoring.prompt_tokens.high / 10000 / 3600)
    assert "our bench" in scoring.hours_why
    assert scoring.cost_usd is None and "local model" in scoring.cost_why
    edits = lines["edit steps"]
    # the generator is an API role: money from the price table, hours unknown (no throughput entry): null + reason
    assert edits.hours is None and "no throughput for openai:gen-model" in edits.hours_why
    assert edits.cost_usd.high == pytest.approx(edits.prompt_tokens.high / 1e6 + 4 * edits.completion_tokens.high / 1e6)
    assert edits.cost_batch_usd.high == pytest.approx(edits.cost_usd.high * 0.5)
    # a model with no price: null with the reason
    other = P.price_plan(hand_plan(), ROLES, throughput, [])
    assert by_step(other)["edit steps"].cost_usd is None
    assert "no price for openai:gen-model" in by_step(other)["edit steps"].cost_why
    headline = other.headline()
    assert headline["cost_usd"] is None and "refinement/edit steps/generator" in headline["cost_missing"]
    with pytest.raises(ValueError, match="unknown keys"):
        P.parse_throughput({"models": [{"model": "x", "prefil_tokens_per_s": 3}]})
    with pytest.raises(ValueError, match="non-negative number"):
        P.parse_prices({"models": [{"model": "x", "input_per_1m": "cheap"}]})


def reer(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reer_assets.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


@pytest.mark.timeout(300)
def test_cli_json_parses_with_files(tmp_path):
    (tmp_path / "prices.yaml").write_text("models:\n  - model: 'openai:served'\n    input_per_1m: 0.5\n"
                                          "    output_per_1m: 1.5\n    batch_discount: 0.5\n", encoding="utf-8")
    (tmp_path / "throughput.yaml").write_text("models:\n  - model: 'reer-embedded:*'\n    backend: embedded\n"
                                              "    device: 2 CPU cores\n    prefill_tokens_per_s: 5000\n"
                                              "    decode_tokens_per_s: 200\n", encoding="utf-8")
    env = {"DAGSTER_HOME": str(tmp_path / "home"), "REER_THROUGHPUT_FILE": str(tmp_path / "throughput.yaml"),
           "REER_SCORER_BACKEND": "openai", "REER_SCORER_BASE_URL": "http://127.0.0.1:9/v1",
           "REER_SCORER_MODEL": "served"}
    out = reer("plan", "--profile", "demo", "--domains", "education", "--prices", str(tmp_path / "prices.yaml"),
               "--json", env=env)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["inputs"]["items"] == 8 and doc["inputs"]["rollouts"] == 16
    lines = {(ln["stage"], ln["step"]): ln for ln in doc["lines"]}
    assert set(doc["stages"]) == set(P.STAGES)
    rollout = lines[("refinement", "initial rollout")]
    assert rollout["device_hours"]["expected"] > 0  # the user's throughput file
    scoring = lines[("refinement", "candidate scoring")]
    assert scoring["cost_usd"]["expected"] > 0 and scoring["cost_batch_usd"]["expected"] == pytest.approx(  # > 0: a priced role costs something; the batch price is checked exactly
        scoring["cost_usd"]["expected"] * 0.5, rel=1e-3)
    # --items scales the per-item stages to the same mix
    scaled = json.loads(reer("plan", "--profile", "demo", "--domains", "education", "--items", "80", "--json",
                             env={"DAGSTER_HOME": str(tmp_path / "home")}).stdout)
    base = json.loads(reer("plan", "--profile", "demo", "--domains", "education", "--json",
                           env={"DAGSTER_HOME": str(tmp_path / "home")}).stdout)
    assert scaled["stages"]["refinement"]["tokens"]["expected"] == pytest.approx(
        10 * base["stages"]["refinement"]["tokens"]["expected"], rel=1e-3)
    text = reer("plan", "--profile", "demo", "--domains", "education", env={"DAGSTER_HOME": str(tmp_path / "home")})
    assert text.returncode == 0 and "| refinement | edit steps | generator |" in text.stdout


@pytest.mark.timeout(120)
def test_run_plan_asset_in_the_domain_job():
    from reer_assets.definitions import defs

    job = defs.resolve_job_def("domain_pipeline_job")
    assert "run_plan" in {n.name for n in job.graph.node_defs}
    asset = defs.get_assets_def("run_plan")
    assert asset.code_versions_by_key[asset.key] == "1" and asset.group_names_by_key[asset.key] == "planning"
    assert not defs.resolve_asset_graph().get(asset.key).parent_keys


@pytest.mark.model
@pytest.mark.timeout(1500)
def test_plan_against_a_real_small_run(tmp_path, embedded_path):
    """The test profile on a tiny domain, in process: the plan's expected tokens land within a factor of 2 of
    what lineage recorded, per stage; the factors are printed."""
    import dagster as dg

    from reer_assets.defs.resources import LineageResource, ModelBackendResource, WorkloadRunner
    from reer_assets.runtime.plan import compare_runs
    from tests.support.tiny_domain import DOMAIN, materializer, metadata, write_domains_file

    patch = pytest.MonkeyPatch()
    try:
        patch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
        patch.setenv("REER_DOMAINS_FILE", str(write_domains_file(tmp_path, pieces=4)))
        patch.setenv("REER_PROFILE", "test")
        patch.setenv("REER_LINEAGE_DB", str(tmp_path / "lineage.duckdb"))
        resources = {"generator": ModelBackendResource(role="generator"), "scorer": ModelBackendResource(role="scorer"),
                     "judge": ModelBackendResource(role="judge", configured=False),
                     "lineage": LineageResource(db_path=str(tmp_path / "lineage.duckdb")),
                     "runner": WorkloadRunner(mode="in_process")}
        materialize = materializer(resources, dg.DagsterInstance.ephemeral(), run_config={})
        planned = metadata(materialize("run_plan"), "run_plan")
        assert planned["items"] == 4 and "| refinement | edit steps |" in planned["plan"]
        runs = [materialize(name).run_id for name in ("raw_documents", "synthesized_queries", "refined_trajectories")]
        result = compare_runs(runs)
    finally:
        patch.undo()
    totals = {r["stage"]: r for r in result["rows"] if r["step"] == "(stage total)"}
    for r in result["rows"]:
        print(f"{r['stage']:<11} {r['step']:<18} {r['role']:<9} actual/expected tokens "
              f"{r['tokens_ratio']} ({r['tokens_compared']})")
    assert "refinement" in totals
    for stage, row in totals.items():
        assert 0.5 <= row["tokens_ratio"] <= 2.0, (stage, row)
