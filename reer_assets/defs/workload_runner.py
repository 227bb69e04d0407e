"""Launching a workload through the Pipes client and collecting its summary."""


from typing import Any

import dagster as dg

from reer_assets.defs.resources import workload_command


def run_workload(
    context: dg.AssetExecutionContext,
    pipes: dg.PipesSubprocessClient,
    name: str,
    extras: dict[str, Any],
    env: dict[str, str],
) -> dict[str, Any]:
    """Run ``reer_assets.workloads.<name>`` out of process; return the summary it reported."""
    invocation = pipes.run(context=context, command=workload_command(name), extras=extras, env=env)
    messages = invocation.get_custom_messages()
    return messages[-1] if messages else {}
