"""Network exposure: every server the project starts binds to the loopback interface by default.

``make ui`` is started the way make runs it (its recipe, read with ``make -n``, with a free port and a
temporary DAGSTER_HOME); every listening socket of its process tree (webserver, daemon, code server)
must be on 127.0.0.1 or ::1 (the code servers it starts talk over unix sockets). The vLLM server
launcher passes ``--host 127.0.0.1``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request

import psutil
import pytest

from tests.reliability.conftest import REPO, free_port, new_home, run_env

LOOPBACK = {"127.0.0.1", "::1"}


def ui_recipe() -> str:
    """The shell command ``make ui`` runs (dry run: nothing is built or started)."""
    out = subprocess.run(["make", "-n", "-s", "ui"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    lines = [line for line in out.splitlines() if " dev " in line and "dagster" in line]
    assert len(lines) == 1, out
    return lines[0]


def test_make_ui_binds_loopback():
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^ui:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe and "dagster dev -h 127.0.0.1 " in recipe.group(1), "make ui must pass -h 127.0.0.1"
    assert "-h 127.0.0.1" in ui_recipe()


def _listening(root: psutil.Process) -> set[tuple[str, int, int]]:
    """(address, port, pid) of every listening TCP socket of ``root`` and its descendants."""
    found = set()
    for process in [root, *root.children(recursive=True)]:
        try:
            connections = process.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for conn in connections:
            if conn.status == psutil.CONN_LISTEN:
                found.add((conn.laddr.ip, conn.laddr.port, process.pid))
    return found


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]


def _all_servers_up(port: int) -> bool:
    data = _graphql(port, "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } "
                          "instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }")
    locations = data["workspaceOrError"]["locationEntries"]
    daemons = [d for d in data["instance"]["daemonHealth"]["allDaemonStatuses"] if d["required"]]
    return bool(locations) and all(e["loadStatus"] == "LOADED" for e in locations) and all(d["healthy"] for d in daemons)


@pytest.mark.slow
def test_dagster_dev_as_make_ui_starts_it_listens_on_loopback_only(tmp_path):
    home = new_home(tmp_path, "home")
    port = free_port()
    env = {**run_env(home, REPO / "reer_assets" / "domains.yaml"), "PORT": str(port)}
    log = open(tmp_path / "ui.log", "wb")
    process = subprocess.Popen(["bash", "-c", ui_recipe()], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        deadline, ready = time.monotonic() + 180, False
        while time.monotonic() < deadline and not ready:
            assert process.poll() is None, (tmp_path / "ui.log").read_text(errors="replace")[-4000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as response:
                    ready = response.status == 200
            except OSError:
                time.sleep(1.0)  # wait: a polling interval until the webserver answers
        assert ready, (tmp_path / "ui.log").read_text(errors="replace")[-4000:]
        # scan once every server it starts is up (the code location loaded, every required daemon healthy),
        # as the webserver itself reports it, and again at the end, so a late bind does not pass unseen
        while not _all_servers_up(port):
            assert process.poll() is None, (tmp_path / "ui.log").read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, "the code location or the daemon never came up"
            time.sleep(0.5)  # wait: a polling interval
        first = _listening(psutil.Process(process.pid))
        _graphql(port, "{ assetNodes { assetKey { path } } }")  # use it: the code server answers
        last = _listening(psutil.Process(process.pid))
        print(f"\nlistening sockets of `make ui`: {sorted(first | last)}")
        assert any(p == port for _, p, _ in first), first
        exposed = [s for s in first | last if s[0] not in LOOPBACK]
        assert not exposed, f"listening beyond loopback: {exposed}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # what Ctrl-C in `make ui` amounts to
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        try:  # and nothing of its tree (code servers, daemon) outlives it
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)
        log.close()


def test_vllm_server_launcher_binds_loopback(tmp_path, monkeypatch):
    """The launcher's command, captured without starting vLLM."""
    from reer_assets.backends import vllm_server

    seen = []

    class FakeProcess:
        pid, returncode = 0, 1

        def __init__(self, command, **kwargs):
            seen.append(command)

        def poll(self):
            return 1

    monkeypatch.setattr(vllm_server.subprocess, "Popen", FakeProcess)
    with pytest.raises(RuntimeError, match="exited"):
        vllm_server.start_vllm_server("/models/x", None, tmp_path / "vllm.log", timeout_s=1)
    command = seen[0]
    assert command[command.index("--host") + 1] == "127.0.0.1"
