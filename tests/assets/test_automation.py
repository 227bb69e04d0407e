"""The inbox sensor and the daily ingest schedule, evaluated directly."""

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


def test_daily_schedule_requests_every_domain():
    from reer_assets.core.ingest.domains import domain_names
    from reer_assets.defs.schedules import daily_ingest_refresh

    context = dg.build_schedule_context(scheduled_execution_time=__import__("datetime").datetime(2026, 11, 28, 3))
    requests = list(daily_ingest_refresh(context))
    assert [r.partition_key for r in requests] == domain_names()
    assert len({r.run_key for r in requests}) == len(requests)
