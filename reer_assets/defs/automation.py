"""Declarative automation of the per-domain stages, and the freshness expected of ingestion.

* ``raw_documents``: every domain is re-read daily at 03:00 UTC (``AutomationCondition.on_cron``);
  unchanged sources are reused, not recomputed (the stage skeleton's fingerprints).
* ``synthesized_queries``, ``refined_trajectories``, ``filtered_dataset``: ``AutomationCondition.eager()``:
  a domain's partition is requested when its upstream partition was updated (by the daily refresh,
  the inbox sensor, or a run from the UI), once that upstream is not missing or in progress.
* Training, benchmarks, the all-domains dataset and the experiments carry no condition and are not
  in the sensor's target: they are never materialised automatically.

The sensor ``domain_automation`` evaluates these conditions; like the other sensors it starts
stopped (switch it on in the UI, Automation). This replaces the hand-written schedule
``daily_ingest_refresh``; README "Automation" says why.
"""

from datetime import timedelta

import dagster as dg

INGEST_CRON = "0 3 * * *"
INGEST_TIMEZONE = "UTC"
AUTOMATED_ASSETS = ("raw_documents", "synthesized_queries", "refined_trajectories", "filtered_dataset")

ingest_refresh = dg.AutomationCondition.on_cron(INGEST_CRON, INGEST_TIMEZONE)
after_upstream = dg.AutomationCondition.eager()

# the daily refresh lands by 04:00; a day without one warns, two days fail
ingest_freshness = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=48), warn_window=timedelta(hours=26))

domain_automation = dg.AutomationConditionSensorDefinition(
    "domain_automation",
    target=dg.AssetSelection.assets(*AUTOMATED_ASSETS),
    default_status=dg.DefaultSensorStatus.STOPPED,
    minimum_interval_seconds=60,
    description="Daily ingest refresh (on_cron) and eager synthesis/refinement/curation of each domain; "
                "never training or benchmarks.",
)
