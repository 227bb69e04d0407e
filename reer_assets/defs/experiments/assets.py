"""The built-in ablations (docs/experiments.md): variant datasets, one checkpoint per variant and seed,
their held-out evaluation per domain, and the report over every materialised domain.

ablation_datasets ─► ablation_checkpoints ─► ablation_results ─► experiment_report   (the first three per domain)
"""


import json
from pathlib import Path
from typing import Optional

import dagster as dg
import polars as pl

from reer_assets.core import experiments as ex
from reer_assets.core.evaluation.judge import PROMPT_VERSION
from reer_assets.core.ids import config_hash, stable_id
from reer_assets.lib.domains import domain_names
from reer_assets.core.schemas import ABLATION_ROWS, EXPERIMENT_RESULTS, EXPERIMENTS
from reer_assets.core.training import recipe
from reer_assets.defs.evaluation.assets import answering_backend
from reer_assets.defs.partitions import domain_partitions
from reer_assets.defs.resources import LineageResource, ModelBackendResource, WorkloadRunner
from reer_assets.defs.stage import StageRun, run_stage, upstream
from reer_assets.defs.training.assets import pointer
from reer_assets.lib import fingerprints, prompt_sets, storage
from reer_assets.lib.metadata import md_table, preview
from reer_assets.lib.plots import intervals, markdown_image
from reer_assets.lib.profiles import profile
from reer_assets.lib.run_config import (AnsweringConfig, NucleusSamplingConfig, ProfiledConfig, RecipeConfig,
                                        RunConfig, SeedConfig)

# --- ablation_datasets ------------------------------------------------------------------------------

class AblationDatasetConfig(SeedConfig, ProfiledConfig):
    """Which variants to build; unset fields come from the profile's ``experiment`` section."""

    section = "experiment"
    variants: Optional[list[str]] = None  # default: searched, initial, no_thinking, random_edits
    no_reflection: Optional[bool] = None  # also build no_reflection (z* without reflection cues)
    # also build published (the source's own thinking) for the items that have one; a domain where none has
    # one simply has no published variant
    published: bool = True

    def variant_list(self) -> list[str]:
        resolved = self.resolved()
        variants = list(resolved.get("variants") or ex.DEFAULT_VARIANTS)
        if resolved.get("no_reflection") and "no_reflection" not in variants:
            variants.append("no_reflection")
        if self.published and "published" not in variants:
            variants.append("published")
        elif not self.published and "published" in variants:
            variants.remove("published")
        unknown = [v for v in variants if v not in ex.VARIANTS]
        if unknown:
            raise dg.Failure(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(ex.VARIANTS)}")
        return variants


def accepted_items(domain: str) -> tuple[list[dict], int]:
    """A domain's accepted items with their search traces (:func:`core.experiments.accepted_with_traces`)."""
    return ex.accepted_with_traces(storage.read_output("filtered_dataset", "dataset", domain),
                                   storage.read_output("refined_trajectories", "trajectories", domain))


@dg.asset(
    code_version="3",  # 2: the shuffled control; 3: published, the source's own thinking
    partitions_def=domain_partitions,
    deps=["filtered_dataset", "refined_trajectories"],
    group_name="experiments",
    kinds={"polars"},
)
def ablation_datasets(context: dg.AssetExecutionContext, config: AblationDatasetConfig) -> dg.MaterializeResult:
    """The ablation variants of one domain's accepted items (filtered_dataset accepted rows and their
    search traces): ``searched`` (z*), ``initial`` (z0), ``no_thinking`` (an empty think block),
    ``random_edits`` (as many accepted edits per item as the search made, each a random generated
    candidate of a random step), ``shuffled``, ``published`` (the source's own published thinking, only
    for the items that have one; absent when none has) and, by config, ``no_reflection``. Every variant
    has the same item ids (``published`` a subset of them), requests and answers, in the one inference
    format (``messages``). A blocking check inside the asset fails the partition when the pairing breaks.
    Partitioned by domain; Parquet ``reer/assets/ablation_datasets/<domain>/rows.parquet``.
    """
    domain = context.partition_key
    variants = config.variant_list()
    prompt_set = prompt_sets.from_settings()  # REER_PROMPTS renders the rows' messages

    def build(paths):
        items, without_trace = accepted_items(domain)
        published = sum(1 for item in items if item.get("published_thinking"))
        # no item with a published thinking: the variant is absent here (the report says so)
        present = [v for v in variants if v != "published" or published]
        with prompt_sets.in_force(prompt_set):
            rows = ABLATION_ROWS.frame(ex.variant_rows(items, present, config.seed))
        storage.write_parquet(rows, paths["rows"])
        return {"items": len(items), "without_trace": without_trace, "variants": present, "seed": config.seed,
                "published_items": published if "published" in variants else None}

    def pairing(run: StageRun) -> None:
        problems = ex.variant_problems(run.read("rows").select("variant", "item_id", "answer").to_dicts())
        if problems:
            raise dg.Failure(f"[{domain}] the ablation variants are not paired: {'; '.join(problems)}")

    run = run_stage(context, "ablation_datasets", (upstream("filtered_dataset", domain),
                                                   upstream("refined_trajectories", domain), variants, config.seed,
                                                   prompt_set.identity),
                    build, check=pairing)
    frame = run.read("rows")
    variants = run.summary.get("variants", variants)  # without published where no item has one
    stats = frame.group_by("variant").agg(pl.len().alias("rows"), pl.col("edits").mean().round(2).alias("mean_edits"),
                                          pl.col("thinking").str.len_chars().mean().round(0).alias("mean_thinking_chars"))
    order = {v: i for i, v in enumerate(variants)}
    stats = stats.sort(pl.col("variant").replace_strict(order, default=99))
    items = run.summary.get("items", frame["item_id"].n_unique() if frame.height else 0)
    context.log.info(f"[{domain}] ablation datasets: {items} items × {len(variants)} variants")
    return run.result(frame.height, {
        "items": items,
        "variants": variants,
        "per_variant": md_table(stats.columns, stats.rows()),
        "without_trace": run.summary.get("without_trace", 0),
        "published_items": run.summary.get("published_items"),
        "preview": preview(frame.sort("item_id", "variant"), ["item_id", "variant", "edits", "thinking"], rows=6),
    })


# --- ablation_checkpoints ---------------------------------------------------------------------------

class AblationTrainConfig(RecipeConfig):
    """Fine-tuning of every variant; unset fields come from the profile's ``experiment`` section.

    ``budget``: ``steps`` (every checkpoint takes ``max_steps`` optimizer steps; unset = the recipe's epochs,
    the same steps for every variant since they share their items) or ``tokens`` (every checkpoint sees about
    ``train_tokens`` supervised tokens). ``seeds``: how many seeds, ``first_seed`` … ``first_seed + seeds - 1``.
    """

    section = "experiment"
    budget: Optional[str] = None
    max_steps: Optional[int] = None
    train_tokens: Optional[int] = None
    seeds: Optional[int] = None
    first_seed: int = 0

    def training(self) -> dict:
        resolved = self.resolved()
        spec = {"name": resolved["recipe"], **{k: resolved[k] for k in ("epochs", "learning_rate")
                                                if resolved.get(k) is not None}}
        budget = {"kind": resolved.get("budget") or "steps", "max_steps": resolved.get("max_steps"),
                  "train_tokens": resolved.get("train_tokens")}
        if budget["kind"] not in ("steps", "tokens"):
            raise dg.Failure(f"budget must be steps or tokens, not {budget['kind']!r}")
        if budget["kind"] == "tokens" and not budget["train_tokens"]:
            raise dg.Failure("a tokens budget needs train_tokens (supervised tokens per checkpoint)")
        seeds = int(resolved.get("seeds") or 1)
        if seeds < 1:
            raise dg.Failure(f"seeds must be at least 1, not {seeds}")
        chosen = recipe(spec["name"], **{k: v for k, v in spec.items() if k != "name"})  # fails now on a bad setting
        return {"recipe": spec, "budget": budget, "seeds": list(range(self.first_seed, self.first_seed + seeds)),
                "global_batch": chosen.global_batch}


def variant_order(domain: str, frame: pl.DataFrame) -> list[str]:
    stored = (fingerprints.stored("ablation_datasets", domain) or {}).get("summary", {}).get("variants")
    present = list(dict.fromkeys(frame["variant"].to_list()))
    return list(stored or present)


@dg.asset(
    code_version="1",
    partitions_def=domain_partitions,
    deps=["ablation_datasets", "base_model"],
    group_name="experiments",
    pool="gpu",
    kinds={"pytorch"},
)
def ablation_checkpoints(
    context: dg.AssetExecutionContext, config: AblationTrainConfig, lineage: LineageResource, runner: WorkloadRunner
) -> dg.MaterializeResult:
    """Every ablation variant of the domain fine-tuned from the same ``base_model`` with the same recipe,
    budget (steps or tokens, by config) and seeds (one checkpoint per variant and seed, under
    ``reer/checkpoints/<id>/``). Runs out of process (workload ``experiments``, pool ``gpu``); an already
    trained checkpoint is reused. Partitioned by domain; Parquet
    ``reer/assets/ablation_checkpoints/<domain>/checkpoints.parquet``; lineage table ``checkpoints``.
    """
    domain = context.partition_key
    base = pointer("base_model")
    training = config.training()
    rows = storage.read_output("ablation_datasets", "rows", domain)
    variants = variant_order(domain, rows)
    data_hash = {v: stable_id("ablrows", sorted(rows.filter(pl.col("variant") == v)["id"].to_list())) for v in variants}
    sizes = dict(rows.group_by("variant").len().iter_rows())
    planned = [{"id": stable_id("ckpt", base["model_id"], data_hash[v], training["recipe"], training["budget"], seed, v),
                "variant": v, "seed": seed} for v in variants for seed in training["seeds"]]
    for p in planned:
        p["out_dir"] = str(storage.checkpoint_dir(p["id"]))

    def finetune(paths):
        summary = runner.run(context, "experiments", {
            "task": "train", "domain": domain, "base_model": base["path"], "base_model_id": base["model_id"],
            "dataset": str(storage.output_path("ablation_datasets", "rows", domain)), "checkpoints": planned,
            "recipe": training["recipe"], "budget": training["budget"],
            "outputs": {name: str(path) for name, path in paths.items()},
        }, env={})
        made = storage.read_parquet(paths["checkpoints"]).filter(pl.col("status") == "trained")
        if made.height:
            lineage.write({"checkpoints": pl.DataFrame([{
                "id": r["id"], "dataset_id": data_hash[r["variant"]], "base_model": base["model_id"], "path": r["path"],
                "train_loss": r["train_loss"], "train_examples": r["rows"],
                "config_json": json.dumps({"experiment": "ablation", "domain": domain, "variant": r["variant"],
                                           "seed": r["seed"], "steps": r["steps"], **training}),
                "run_id": context.run.run_id} for r in made.iter_rows(named=True)])})
        return {**summary, "training": training, "base_model": base["model_id"]}

    run = run_stage(context, "ablation_checkpoints", (upstream("ablation_datasets", domain), base["model_id"], training),
                    finetune, requires=[Path(p["out_dir"]) / "training.json" for p in planned if sizes.get(p["variant"])])
    frame = run.read("checkpoints")
    trained = frame.filter(pl.col("status") == "trained")
    steps = sorted(set(trained["steps"].to_list()))
    equal = len(steps) <= 1 if training["budget"]["kind"] == "steps" else None
    if equal is False:
        context.log.warning(f"[{domain}] a steps budget but unequal steps per checkpoint: {steps} "
                            "(the length policy dropped rows of some variant)")
    table = frame.select("variant", "seed", "status", "rows", "steps", "trained_tokens", "train_loss", "id")
    return run.result(frame.height, {
        "checkpoints": md_table(table.columns, table.rows()),
        "trained": trained.height,
        "skipped": frame.height - trained.height,
        "budget": training["budget"],
        "recipe": training["recipe"],
        "seeds": training["seeds"],
        "steps_equal": equal,
        "base_model": base["model_id"],
    })


# --- ablation_results -------------------------------------------------------------------------------

class AblationEvalConfig(NucleusSamplingConfig, AnsweringConfig):
    """Held-out evaluation of every checkpoint; unset fields come from the profile's ``experiment`` section,
    sampling from its ``benchmark`` section."""

    section = "experiment"
    floor: bool = True  # also evaluate base_model itself (variant ``base``), the report's floor

    def evaluation(self) -> dict:
        resolved, bench = self.resolved(), profile(self.profile)["benchmark"]
        return {"prompts_per_domain": resolved.get("prompts_per_domain"),
                "max_tokens": resolved.get("max_tokens") or bench["max_tokens"],
                **{k: (getattr(self, k) if getattr(self, k) is not None else bench[k])
                   for k in ("temperature", "top_p", "top_k")}}


@dg.asset(
    code_version="2",  # 2: the base model is evaluated too (variant base, the floor)
    partitions_def=domain_partitions,
    deps=["ablation_checkpoints", "base_model"],
    group_name="experiments",
    pool="gpu",
    kinds={"pytorch", "duckdb"},
)
def ablation_results(
    context: dg.AssetExecutionContext, config: AblationEvalConfig, lineage: LineageResource, runner: WorkloadRunner,
    judge: ModelBackendResource, generator: ModelBackendResource,
) -> dg.MaterializeResult:
    """Every ablation checkpoint of the domain on its held-out prompts (the bundled benchmark prompts of
    that domain): the clipped NLL of the held-out reference given the model's own generated thinking and
    given no thinking, the length score S_l, format adherence, and the judge's quality score when a judge
    is configured (``REER_JUDGE_*``; its scores also go to lineage ``judge_scores``). Runs out of process
    (workload ``experiments``, pool ``gpu``). Partitioned by domain; Parquet
    ``reer/assets/ablation_results/<domain>/results.parquet``; metadata: each variant's means with
    bootstrap intervals for this domain.
    """
    domain = context.partition_key
    settings = config.evaluation()
    judge_id = [judge.model_id(), PROMPT_VERSION] if judge.configured else None
    answering, servers = answering_backend(generator, config.backend, config.max_in_flight), dict(config.servers or {})
    answered_by = None if answering["backend"] in ("embedded", "hf") else (answering["backend"], sorted(servers.items()))
    prompt_set = prompt_sets.from_settings()  # REER_PROMPTS: the held-out prompts' inference prompt and NLL context
    base = pointer("base_model") if config.floor else None
    floor = {"path": base["path"], "model_id": base["model_id"]} if base else None

    def evaluate(paths):
        summary = runner.run(context, "experiments", {
            "task": "evaluate", "domain": domain, "config": settings,
            "checkpoints": str(storage.output_path("ablation_checkpoints", "checkpoints", domain)),
            "outputs": {name: str(path) for name, path in paths.items()},
            "work": str(storage.work_dir("ablation_results", domain,
                                         config_hash([settings, judge_id, prompt_set.identity]))),
            "answering": answering, "servers": servers, "base": floor, **prompt_sets.extras(prompt_set),
        }, env={**generator.workload_env(), **judge.workload_env()})
        return {**summary, "evaluation": {**settings, "judge": " ".join(judge_id) if judge_id else None}}

    run = run_stage(context, "ablation_results", (upstream("ablation_checkpoints", domain), settings, judge_id,
                                                  prompt_set.identity)
                    + ((answered_by,) if answered_by else ()) + ((floor["model_id"],) if floor else ()),
                    evaluate, lineage=lineage, tables={"judge_scores": "judgments"})
    frame = run.read("results")
    variants = variant_order(domain, storage.read_output("ablation_datasets", "rows", domain))
    variants += ["base"] if frame.height and (frame["variant"] == "base").any() else []
    rows = ex.summarise(frame.to_dicts(), variants, resamples=1000)
    context.log.info(f"[{domain}] ablation results: {frame.height} answers of {frame['checkpoint_id'].n_unique()} "
                     f"checkpoints" if frame.height else f"[{domain}] ablation results: no answers")
    return run.result(frame.height, {
        "means": dg.MetadataValue.md(ex.means_table(rows, variants, domain)),
        "differences": dg.MetadataValue.md(ex.differences_table(rows, domain)),
        "prompts": run.summary.get("prompts"),
        "judge": (run.summary.get("evaluation") or {}).get("judge") or "none configured",
        "evaluation": settings,
    })


# --- experiment_report ------------------------------------------------------------------------------

class ReportConfig(RunConfig):
    resamples: int = 2000  # bootstrap resamples per interval
    level: float = 0.95
    seed: int = 0  # its own, not SeedConfig's: declared last, so the recorded config_json keeps its key order


def _budget(trainings: dict[str, dict], checkpoints: pl.DataFrame) -> dict:
    """The budget as configured (the first domain's; ``notes`` say when domains differ) and as spent per variant."""
    first = next(iter(trainings.values()), {})
    trained = checkpoints.filter(pl.col("status") == "trained") if checkpoints.height else checkpoints
    per_variant = {}
    for variant in dict.fromkeys(checkpoints["variant"].to_list()) if checkpoints.height else []:
        mine = trained.filter(pl.col("variant") == variant)
        steps = sorted(set(mine["steps"].to_list()))
        per_variant[variant] = {
            "checkpoints": mine.height,
            "steps": "" if not steps else str(steps[0]) if len(steps) == 1 else f"{steps[0]}–{steps[-1]}",
            "trained_tokens": round(mine["trained_tokens"].mean()) if mine.height else None,
            "train_loss": round(mine["train_loss"].mean(), 4) if mine.height else None,
        }
    return {**(first.get("budget") or {}), "recipe": (first.get("recipe") or {}).get("name"),
            "global_batch": first.get("global_batch"), "per_variant": per_variant}


def published_notes(datasets: dict[str, dict]) -> list[str]:
    """What the report says about ``published`` per domain (from ablation_datasets' summaries): absent where no
    item had a published thinking, and how many items it covers where only some had one."""
    absent, notes = [], []
    for domain, summary in datasets.items():
        count, items = summary.get("published_items"), summary.get("items") or 0
        if count is None:
            continue  # not requested
        if not count:
            absent.append(domain)
        elif count < items:
            notes.append(f"`published` covers {count} of {items} items of {domain} (those whose source published a "
                         "thinking); its checkpoints trained on those items only")
    if absent:
        notes.insert(0, f"`published` is absent for {', '.join(absent)}: no accepted item there has a published "
                        "thinking (the source gave none)")
    return notes


@dg.asset(
    code_version="3",  # 2: MDE per difference, the power headline, the base floor and shuffled control; 3: published
    deps=[dg.AssetDep("ablation_results", partition_mapping=dg.AllPartitionMapping())],
    group_name="experiments",
    pool="duckdb",
    kinds={"duckdb", "polars"},
)
def experiment_report(context: dg.AssetExecutionContext, config: ReportConfig, lineage: LineageResource) -> dg.MaterializeResult:
    """The ablation report over every materialised domain of ``ablation_results``: per variant and domain
    (and ``all``) the mean of each metric with a 95% bootstrap interval over items (an item's seeds move
    together), the paired differences (searched − initial, − random_edits, − published, − shuffled, − base,
    every variant − no_thinking) with their intervals, MDEs and one-line readings, over the held-out prompts
    both variants of a pair answered, the training budget spent, and what is missing (a variant without rows is
    named, never a crash). Markdown (``report.md``) and a PNG plot (``plot.png``), both in the metadata.
    Unpartitioned; lineage tables ``experiments`` and ``experiment_results`` (``reer experiment report``).
    """
    domains = [d for d in domain_names() if storage.exists(storage.output_path("ablation_results", "results", d))]
    if not domains:
        raise dg.Failure("no ablation_results partition has been materialised yet: run experiment_job for a domain")
    parts = [(d, upstream("ablation_results", d)) for d in domains]
    experiment_id = stable_id("exp", parts, config.model_dump())
    results = pl.concat([storage.read_output("ablation_results", "results", d) for d in domains])
    checkpoints = pl.concat([storage.read_output("ablation_checkpoints", "checkpoints", d) for d in domains])
    summaries = {asset: {d: (fingerprints.stored(asset, d) or {}).get("summary", {}) for d in domains}
                 for asset in ("ablation_datasets", "ablation_checkpoints", "ablation_results")}
    variants = list(dict.fromkeys(v for d in domains for v in summaries["ablation_datasets"][d].get("variants") or []))
    variants += ["base"] if any(summaries["ablation_results"][d].get("floor") for d in domains) else []
    trainings = {d: s.get("training") or {} for d, s in summaries["ablation_checkpoints"].items()}
    evaluations = {d: s.get("evaluation") or {} for d, s in summaries["ablation_results"].items()}
    notes = []
    for label, per_domain in (("training settings", trainings), ("evaluation settings", evaluations),
                              ("variants", {d: s.get("variants") for d, s in summaries["ablation_datasets"].items()})):
        if len({json.dumps(v, sort_keys=True) for v in per_domain.values()}) > 1:
            notes.append(f"the domains differ in their {label} (config_json has each domain's)")
    notes += published_notes(summaries["ablation_datasets"])
    seeds = sorted({int(s) for s in checkpoints["seed"].to_list()}) if checkpoints.height else []
    base_models = sorted(set(checkpoints["base_model"].drop_nulls().to_list())) if checkpoints.height else []
    experiment = {
        "id": experiment_id, "domains": domains, "variants": variants, "seeds": seeds,
        "base_model": ", ".join(base_models),
        "budget_json": json.dumps(_budget(trainings, checkpoints)),
        "models_json": json.dumps({d: {f"{r['variant']}/seed{r['seed']}": r["id"]
                                       for r in checkpoints.filter(pl.col("domain") == d).iter_rows(named=True)}
                                   for d in domains}),
        "config_json": json.dumps({"datasets": {d: {k: s.get(k) for k in ("variants", "seed", "items",
                                                                          "published_items")}
                                                for d, s in summaries["ablation_datasets"].items()},
                                   "training": trainings, "evaluation": next(iter(evaluations.values()), {}),
                                   "evaluation_per_domain": evaluations, "report": config.model_dump(),
                                   "notes": notes}),
    }

    def produce(paths):
        rows = ex.with_ids(experiment_id, ex.summarise(results.to_dicts(), variants, config.resamples, config.level,
                                                       config.seed))
        storage.write_parquet(EXPERIMENT_RESULTS.frame(rows), paths["results"])
        storage.write_parquet(EXPERIMENTS.frame([experiment]), paths["experiments"])
        png = report_plot(rows, variants)
        with storage.open(paths["plot"], "wb") as handle:
            handle.write(png)
        storage.write_text(paths["report"], ex.render_report(experiment, rows, "![headline](plot.png)"))
        return {"experiment_id": experiment_id, "rows": len(rows), "domains": domains}

    run = run_stage(context, "experiment_report", (parts, config.model_dump()), produce, lineage=lineage,
                    tables={"experiments": "experiments", "experiment_results": "results"})
    rows = run.read("results").to_dicts()
    with storage.open(run.paths["plot"], "rb") as handle:
        png = handle.read()
    report = ex.render_report(experiment, rows, markdown_image(png, "headline metric per variant, all domains"))
    headline = {r["variant"]: r["value"] for r in rows
                if r["domain"] == ex.ALL and r["metric"] == ex.HEADLINE and r["kind"] == "mean"}
    context.log.info(f"experiment {experiment_id}: {len(domains)} domains, {len(rows)} result rows")
    return run.result(len(rows), {
        "experiment_id": experiment_id,
        "domains": domains,
        "report": dg.MetadataValue.md(report),
        **{f"{v}_{ex.HEADLINE}": headline.get(v) for v in variants},
        "report_path": dg.MetadataValue.path(str(run.paths["report"])),
    })


def report_plot(rows: list[dict], variants: list[str]) -> bytes:
    """The headline metric per variant over all domains, with its interval."""
    chosen = {r["variant"]: r for r in rows if r["domain"] == ex.ALL and r["metric"] == ex.HEADLINE and r["kind"] == "mean"}
    metric = ex.METRIC_BY_NAME[ex.HEADLINE]
    picked = [chosen.get(v) or {} for v in variants]
    return intervals(variants, [p.get("value") for p in picked], [p.get("ci_low") for p in picked],
                     [p.get("ci_high") for p in picked], f"{metric.label} ({metric.arrow})",
                     "ablation variants, all domains (95% bootstrap CI over items)")
