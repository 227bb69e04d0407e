"""experiment_job end to end, as the UI runs it for one domain: a partitioned run of the per-domain
ablation assets (model work out of process through Dagster Pipes) that also refreshes the unpartitioned
report; then the lineage tables must hold exactly the report's rows, and `reer experiment report --json`
must print them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import duckdb
import polars as pl
import pytest

from reer_assets.core import experiments as ex

DOMAIN = "education"
pytestmark = [pytest.mark.model, pytest.mark.slow]

SEARCH = {"max_step": 2, "max_tokens": 360, "edit_max_tokens": 160}
EXPERIMENT = {"ablation_checkpoints": {"max_steps": 1, "seeds": 1},
              "ablation_results": {"prompts_per_domain": 1, "max_tokens": 8}}


# the toy model's thinkings repeat themselves; relaxed so that the funnel keeps accepted rows to vary
FILTER = {"max_top3_trigram_share": 1.0, "min_thinking_units": 5}


@pytest.fixture(scope="module")
def ran(tmp_path_factory, embedded_path):
    import dagster as dg

    from reer_assets.lib import storage
    from tests.support.tiny_domain import DOMAIN as TINY, SEARCH_SEEDS, write_domains_file

    assert TINY == DOMAIN
    root = tmp_path_factory.mktemp("experiment_job")
    patch = pytest.MonkeyPatch()
    for name, value in {"DAGSTER_HOME": str(root / "home"), "REER_DOMAINS_FILE": str(write_domains_file(root)),
                        "REER_PROFILE": "test", "REER_WORKLOAD_RUNNER": "subprocess"}.items():
        patch.setenv(name, value)
    patch.delenv("REER_LINEAGE_DB", raising=False)
    try:
        from reer_assets.definitions import defs
        from reer_assets.defs.resources import default_resources

        instance = dg.DagsterInstance.ephemeral()
        resources = default_resources()
        upstream = ["raw_documents", "synthesized_queries", "refined_trajectories", "filtered_dataset", "base_model"]
        # what this machine's build of the toy model writes decides whether a seed's search keeps an accepted
        # item; the ablation needs one, so the seeds are tried in turn (the first that gives one is used)
        for seed in SEARCH_SEEDS:
            before = dg.materialize([defs.get_assets_def(n) for n in upstream], partition_key=DOMAIN,
                                    resources=resources, instance=instance,
                                    run_config={"ops": {"refined_trajectories": {"config": {**SEARCH, "seed": seed}},
                                                        "filtered_dataset": {"config": FILTER}}})
            assert before.success
            dataset = storage.read_output("filtered_dataset", "dataset", DOMAIN)
            if (dataset["status"] == "accepted").any():
                break
        else:
            raise AssertionError(f"no accepted item with any of the seeds {SEARCH_SEEDS}")
        job = defs.resolve_job_def("experiment_job")
        result = job.execute_in_process(partition_key=DOMAIN, instance=instance, resources=resources,
                                        run_config={"ops": {k: {"config": v} for k, v in EXPERIMENT.items()}})
        yield {"root": root, "result": result}
    finally:
        patch.undo()


def trained_variants(ran) -> set[str]:
    """The default variants; shuffled only when the domain kept two or more items (it needs a donor)."""
    rows = pl.read_parquet(ran["root"] / "home/reer/assets/ablation_datasets" / DOMAIN / "rows.parquet")
    expected = {"searched", "initial", "no_thinking", "random_edits"}
    expected |= {"shuffled"} if rows["item_id"].n_unique() >= 2 else set()
    assert set(rows["variant"]) == expected
    return expected


def test_the_job_materialises_the_domain_and_the_report(ran):
    result = ran["result"]
    assert result.success
    made = {(e.asset_key.to_user_string(), e.partition) for e in
            (ev.event_specific_data.materialization for ev in result.all_events if ev.event_type_value == "ASSET_MATERIALIZATION")}
    assert made == {("ablation_datasets", DOMAIN), ("ablation_checkpoints", DOMAIN), ("ablation_results", DOMAIN),
                    ("experiment_report", None)}
    # the unpartitioned report of a partitioned run lives in its own folder, not under the run's partition
    assets = ran["root"] / "home/reer/assets"
    assert (assets / "experiment_report/__all__/report.md").exists()
    assert not (assets / "experiment_report" / DOMAIN).exists()
    checkpoints = pl.read_parquet(assets / "ablation_checkpoints" / DOMAIN / "checkpoints.parquet")
    assert set(checkpoints["variant"]) == trained_variants(ran)
    assert (checkpoints["status"] == "trained").all() and set(checkpoints["steps"]) == {1}


def test_the_lineage_tables_hold_the_reports_rows(ran):
    folder = ran["root"] / "home/reer/assets/experiment_report/__all__"
    report_rows = pl.read_parquet(folder / "results.parquet")
    experiment = pl.read_parquet(folder / "experiments.parquet").row(0, named=True)
    con = duckdb.connect(str(ran["root"] / "home/lineage.duckdb"), read_only=True)
    stored = pl.from_arrow(con.execute("SELECT * EXCLUDE (run_id, partition, recorded_at) FROM experiment_results "
                                       "WHERE experiment_id = ?", [experiment["id"]]).to_arrow_table())
    recorded = con.execute("SELECT domains, variants, seeds, models_json FROM experiments WHERE id = ?",
                           [experiment["id"]]).fetchone()
    checkpoints = con.execute("SELECT count(*) FROM checkpoints WHERE config_json LIKE '%\"experiment\": \"ablation\"%'"
                              ).fetchone()[0]
    con.close()
    assert report_rows.height > 0 and stored.sort("id").equals(report_rows.select(stored.columns).sort("id"))  # > 0: rows exist; they are compared exactly with lineage
    overall = stored.filter((pl.col("domain") == "all") & (pl.col("metric") == "heldout_nll_own_thinking"))
    trained = trained_variants(ran)
    means = trained | {"base"}  # the floor: the base model evaluated as the variants are
    pairs = {f"{a}-{b}" for a, b in ex.differences([v for v in ex.VARIANTS if v in trained] + ["base"])}
    assert set(overall["variant"]) == means | pairs
    assert {"searched-initial", "searched-random_edits", "searched-base", "searched-no_thinking"} <= pairs
    assert recorded[0] == [DOMAIN] and recorded[2] == [0] and len(json.loads(recorded[3])[DOMAIN]) == len(trained)
    assert checkpoints == len(trained)
    env = {**os.environ, "DAGSTER_HOME": str(ran["root"] / "home")}
    env.pop("REER_LINEAGE_DB", None)
    done = subprocess.run([sys.executable, "-m", "reer_assets.cli", "experiment", "report", "--json"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["experiment_id"] == experiment["id"]
    assert sorted(r["id"] for r in printed["rows"]) == sorted(report_rows["id"].to_list())
    markdown = (folder / "report.md").read_text(encoding="utf-8")
    assert "## All domains" in markdown and "![headline](plot.png)" in markdown and (folder / "plot.png").exists()
