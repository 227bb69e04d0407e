"""The project's Dagster instance, named by ``dagster_home/dagster.yaml``::

    instance_class:
      module: reer_assets.runtime.instance
      class: ReerInstance

Dagster's default instance and SQLite storage (same files under the instance folder), whose pool-slot
claims reclaim dead runs before they wait (:mod:`reer_assets.runtime.recovery`, through the storage of
:mod:`reer_assets.runtime.dagster_internals`). docs/reliability.md, "After a crash".
"""

from __future__ import annotations

from reer_assets.runtime import recovery
from reer_assets.runtime.dagster_internals import ReclaimingInstance


class ReerInstance(ReclaimingInstance):
    """A ``DagsterInstance`` whose blocked pool-slot claims first free the slots of runs whose worker died,
    and otherwise say who holds the slot (``recovery.on_claim_blocked`` / ``on_claim_waiting``)."""

    claim_hook = recovery.CLAIM_HOOK
