"""Programs that do the heavy model work out of the Dagster process, through Dagster Pipes.

Each module runs as ``python -m reer_assets.workloads.<name>`` under a Pipes client (subprocess
here; Ray, Kubernetes or Slurm clients later) and imports ``dagster_pipes`` only, never ``dagster``.
Each also exposes ``run(extras, log)`` so the same work can be called directly.
"""
