"""The workload runners, one module each: ``local.py`` (``subprocess``, ``in_process``), ``ray.py``,
``k8s.py``, ``slurm.py``; ``common.py`` what they share. Each remote module declares its settings
(``REER_<KIND>_*``) and renders what it submits with pure functions (the config tests render them);
:class:`reer_assets.runtime.runner.WorkloadRunner`, the Dagster resource, chooses one per run."""
