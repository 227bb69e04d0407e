"""How and where runs run, under Dagster: the workload runners (``runner.py``, ``runners/``: a subprocess,
a Ray job, a Kubernetes pod, a Slurm job), the instance whose pool-slot claims reclaim dead runs
(``instance.py``), that reclaiming (``recovery.py``) and every use of Dagster's private API
(``dagster_internals.py``). Imports workloads only by module name (they run elsewhere), never defs/."""
