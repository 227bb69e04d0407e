"""Notices new or changed files in a domain's inbox folder and re-ingests that domain."""

import json

import dagster as dg

from reer_assets.lib.domains import domain_names
from reer_assets.defs.jobs import ingest_job
from reer_assets.lib.storage import inbox_dir


def inbox_state() -> dict[str, dict[str, float]]:
    state = {}
    for domain in domain_names():
        folder = inbox_dir(domain)
        if folder.exists():
            state[domain] = {p.name: p.stat().st_mtime for p in sorted(folder.iterdir())
                             if p.is_file() and p.suffix.lower() in (".txt", ".md")}
    return state


@dg.sensor(job=ingest_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.STOPPED)
def inbox_sensor(context: dg.SensorEvaluationContext):
    """One ingest run per domain whose inbox ($DAGSTER_HOME/inbox/<domain>/) gained or changed files."""
    seen = json.loads(context.cursor) if context.cursor else {}
    now = inbox_state()
    for domain, files in now.items():
        changed = sorted(name for name, mtime in files.items() if seen.get(domain, {}).get(name) != mtime)
        if changed:
            context.log.info(f"[{domain}] new inbox files: {changed}")
            yield dg.RunRequest(run_key=f"{domain}:{json.dumps(files, sort_keys=True)}", partition_key=domain,
                                tags={"reer/inbox_files": ",".join(changed)[:200]})
    context.update_cursor(json.dumps(now))


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def dead_run_sensor(context: dg.SensorEvaluationContext):
    """Marks runs whose worker process died (killed, OOM, reboot) as failed and frees the pool slots
    they held. A blocked pool claim already does this on its own (``runtime/recovery.py``); the sensor
    also catches dead runs that held no slot, and its ticks list every run reclaimed since the last
    tick, whoever reclaimed it (a blocked claim, ``reer recover`` or the sensor)."""
    from reer_assets.runtime.recovery import RECLAIMED_AT_TAG, RECLAIMED_BY_TAG, reclaim_dead_runs, reclaimed_since

    since = float(json.loads(context.cursor).get("since", 0)) if context.cursor else 0.0
    reclaim_dead_runs(context.instance, context.log.warning, by="dead_run_sensor")
    reclaimed = reclaimed_since(context.instance, since)
    for run in reclaimed:
        context.log.info(f"{run.run_id}: reclaimed by {run.tags.get(RECLAIMED_BY_TAG, '?')}")
    latest = max([since, *(float(run.tags[RECLAIMED_AT_TAG]) for run in reclaimed)])
    context.update_cursor(json.dumps({"since": latest}))
    return dg.SkipReason(f"reclaimed {len(reclaimed)} dead run(s)" if reclaimed else "no dead runs")
