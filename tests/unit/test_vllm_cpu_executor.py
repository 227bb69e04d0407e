"""REER_VLLM_CPU_EXECUTOR: which vLLM executor the CPU command lines and the in-process engine ask for, and
that the environment the engine needs while it starts does not outlive the start (a later subprocess must
not inherit it). The engines themselves run in tests/vllm (uni) and test_cli_json (mp)."""

from __future__ import annotations

import os

import pytest

from reer_assets.backends import vllm_server
from reer_assets.settings import environment as _environ  # what VLLMEngine starts its engine under

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("value, uni", [(None, False), ("mp", False), ("uni", True), (" UNI ", True)])
def test_the_setting_picks_the_flags_and_the_environment(monkeypatch, value, uni):
    if value is None:
        monkeypatch.delenv(vllm_server.CPU_EXECUTOR_ENV, raising=False)
    else:
        monkeypatch.setenv(vllm_server.CPU_EXECUTOR_ENV, value)
    command = vllm_server.server_command("/models/m", 8000, cpu=True)
    flag = ["--distributed-executor-backend", "uni"]
    assert (command[-2:] == flag) is uni, command
    assert vllm_server.cpu_executor_env() == ({"VLLM_ENABLE_V1_MULTIPROCESSING": "0"} if uni else {})
    assert vllm_server.cpu_executor_kwargs() == ({"distributed_executor_backend": "uni"} if uni else {})
    # on a GPU the CPU setting is not asked for
    assert "--distributed-executor-backend" not in vllm_server.server_command("/models/m", 8000, cpu=False)


def test_an_unknown_value_is_refused_naming_the_setting(monkeypatch):
    monkeypatch.setenv(vllm_server.CPU_EXECUTOR_ENV, "ray")
    with pytest.raises(ValueError, match="REER_VLLM_CPU_EXECUTOR='ray': expected mp"):
        vllm_server.cpu_executor_args()


def test_the_start_environment_is_restored(monkeypatch):
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    monkeypatch.setenv("REER_PROBE", "before")
    with _environ({"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "REER_PROBE": "during"}):
        assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and os.environ["REER_PROBE"] == "during"
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ and os.environ["REER_PROBE"] == "before"
    with pytest.raises(RuntimeError), _environ({"REER_PROBE": "during"}):
        raise RuntimeError("the engine failed to start")
    assert os.environ["REER_PROBE"] == "before"
