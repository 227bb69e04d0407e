"""The one Definitions entry point (workspace.yaml loads this module)."""

import dagster as dg

from reer_assets.defs.automation import domain_automation
from reer_assets.defs.curation import assets as curation
from reer_assets.defs.curation import checks as curation_checks
from reer_assets.defs.evaluation import assets as evaluation
from reer_assets.defs.evaluation import checks as evaluation_checks
from reer_assets.defs.experiments import assets as experiments
from reer_assets.defs.ingest import assets as ingest
from reer_assets.defs.jobs import ALL_JOBS
from reer_assets.defs.lineage import assets as lineage
from reer_assets.defs.planning import assets as planning
from reer_assets.defs.refinement import assets as refinement
from reer_assets.defs.resources import default_resources
from reer_assets.defs.sensors import dead_run_sensor, inbox_sensor
from reer_assets.defs.synthesis import assets as synthesis
from reer_assets.defs.training import assets as training

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([planning, ingest, synthesis, refinement, curation, training, evaluation,
                                        lineage, experiments]),
    asset_checks=dg.load_asset_checks_from_modules([curation_checks, evaluation_checks]),
    jobs=ALL_JOBS,
    sensors=[inbox_sensor, dead_run_sensor, domain_automation],
    resources=default_resources(),
)
