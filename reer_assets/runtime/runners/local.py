"""The runners on this machine: ``subprocess`` (the default: a child process of the Dagster step, through
``PipesSubprocessClient``) and ``in_process`` (the workload's ``run(extras, log)`` in this process, with its
environment set for the call; the unit tests use it so that every asset has a test of seconds)."""

from __future__ import annotations

import importlib
from typing import Any

import dagster as dg

from reer_assets import settings
from reer_assets.runtime.runners.common import workload_command


def run_in_process(context: dg.AssetExecutionContext, name: str, extras: dict[str, Any],
                   env: dict[str, str]) -> dict[str, Any]:
    """Workload ``name``'s ``run`` in this process; its summary."""
    module = importlib.import_module(f"reer_assets.workloads.{name}")
    with settings.environment(env):
        return module.run(extras, context.log.info)


def run_subprocess(context: dg.AssetExecutionContext, name: str, extras: dict[str, Any], env: dict[str, str]):
    """Workload ``name`` as ``python -m reer_assets.workloads.<name>`` under Pipes; the client's invocation."""
    return dg.PipesSubprocessClient().run(context=context, command=workload_command(name), extras=extras, env=env)
