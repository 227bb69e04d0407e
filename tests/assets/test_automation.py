"""The inbox sensor, the declarative automation of the per-domain stages and the freshness policy of
raw_documents, evaluated directly."""

import datetime
import os

import dagster as dg


def test_inbox_sensor_requests_one_run_per_changed_domain(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    from reer_assets.definitions import defs
    from reer_assets.defs.sensors import inbox_sensor

    repo = defs.get_repository_def()
    instance = dg.DagsterInstance.ephemeral()
    first = inbox_sensor.evaluate_tick(dg.build_sensor_context(instance=instance, repository_def=repo))
    assert first.run_requests == []  # no inbox folders yet

    inbox = tmp_path / "inbox" / "essays"
    inbox.mkdir(parents=True)
    (inbox / "new-essay.md").write_text("An essay dropped into the inbox.", encoding="utf-8")
    (inbox / "ignored.pdf").write_bytes(b"%PDF")
    second = inbox_sensor.evaluate_tick(dg.build_sensor_context(instance=instance, repository_def=repo, cursor=first.cursor))
    assert [r.partition_key for r in second.run_requests] == ["essays"]
    assert second.run_requests[0].tags["reer/inbox_files"] == "new-essay.md"

    third = inbox_sensor.evaluate_tick(dg.build_sensor_context(instance=instance, repository_def=repo, cursor=second.cursor))
    assert third.run_requests == []  # nothing changed since

    os.utime(inbox / "new-essay.md", (1, 1))
    fourth = inbox_sensor.evaluate_tick(dg.build_sensor_context(instance=instance, repository_def=repo, cursor=third.cursor))
    assert [r.partition_key for r in fourth.run_requests] == ["essays"]


# --- declarative automation (reer_assets/defs/automation.py) ------------------------------------------

PER_DOMAIN = ("raw_documents", "synthesized_queries", "refined_trajectories", "filtered_dataset")
DAY = datetime.datetime(2026, 11, 28, tzinfo=datetime.timezone.utc)


def _requested(result) -> dict[str, list[str]]:
    from reer_assets.definitions import defs

    keys = defs.resolve_asset_graph().get_all_asset_keys()
    return {k.to_user_string(): sorted(result.get_requested_partitions(k)) for k in keys
            if result.get_requested_partitions(k)}


def test_conditions_sit_on_the_per_domain_stages_only():
    from reer_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    labels = {k.to_user_string(): graph.get(k).automation_condition.get_label() if graph.get(k).automation_condition
              else None for k in graph.get_all_asset_keys()}
    assert labels.pop("raw_documents") == "on_cron(0 3 * * *, UTC)"
    for name in PER_DOMAIN[1:]:
        assert labels.pop(name) == "eager", name
    assert all(label is None for label in labels.values()), labels  # training, benchmarks, ... never automated
    sensor = defs.get_sensor_def("domain_automation")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert {k.to_user_string() for k in sensor.asset_selection.resolve(graph)} == set(PER_DOMAIN)
    assert not list(defs.schedules or [])  # the automation replaces the hand-written schedule


def test_cron_refreshes_every_domain_and_eager_follows_upstream(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    from reer_assets.lib.domains import domain_names
    from reer_assets.definitions import defs

    domains = sorted(domain_names())
    with dg.instance_for_test() as instance:
        def tick(when, cursor):
            result = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=when, cursor=cursor)
            return result, _requested(result)

        result, requested = tick(DAY.replace(hour=2, minute=50), None)
        assert requested == {}  # before the cron tick: nothing (downstream waits for its missing upstream)

        result, requested = tick(DAY.replace(hour=3, minute=1), result.cursor)
        # the 03:00 tick: every domain's ingest, and each domain's chain behind it in the same request
        assert requested == {name: domains for name in PER_DOMAIN}, requested

        result, requested = tick(DAY.replace(hour=3, minute=5), result.cursor)
        assert requested == {}  # handled: not requested again before the next day's tick

        # new documents in one domain (the inbox sensor, or a run from the UI): only that domain follows
        instance.report_runless_asset_event(dg.AssetMaterialization("raw_documents", partition="essays"))
        result, requested = tick(DAY.replace(hour=9), result.cursor)
        assert requested == {name: ["essays"] for name in PER_DOMAIN[1:]}, requested

        result, requested = tick(DAY.replace(hour=9, minute=5), result.cursor)
        assert requested == {}

        result, requested = tick(DAY.replace(day=29, hour=3, minute=1), result.cursor)
        assert requested == {name: domains for name in PER_DOMAIN}  # the next day's refresh


def test_raw_documents_freshness_policy_warns_after_a_missed_day_and_fails_after_two(tmp_path):
    import asyncio

    from dagster._core.definitions.freshness import FreshnessState
    from dagster._core.definitions.freshness_evaluator import TimeWindowFreshnessPolicyEvaluator
    from dagster._core.loader import LoadingContextForTest
    from dagster._core.test_utils import freeze_time

    from reer_assets.definitions import defs

    node = defs.resolve_asset_graph().get(dg.AssetKey("raw_documents"))
    policy = node.freshness_policy
    assert isinstance(policy, dg.FreshnessPolicy)
    assert policy.fail_window.to_timedelta() == datetime.timedelta(hours=48)
    assert policy.warn_window.to_timedelta() == datetime.timedelta(hours=26)

    def state(instance, when) -> FreshnessState:
        with freeze_time(when):
            return asyncio.run(TimeWindowFreshnessPolicyEvaluator().evaluate_freshness(
                LoadingContextForTest(instance), node))

    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        assert state(instance, DAY) == FreshnessState.UNKNOWN  # never materialised
        with freeze_time(DAY.replace(hour=3, minute=2)):
            instance.report_runless_asset_event(dg.AssetMaterialization("raw_documents", partition="essays"))
        assert state(instance, DAY.replace(hour=20)) == FreshnessState.PASS
        assert state(instance, DAY.replace(day=29, hour=6)) == FreshnessState.WARN  # the next refresh is late
        assert state(instance, DAY.replace(day=30, hour=4)) == FreshnessState.FAIL
