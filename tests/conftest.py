"""Shared fixtures: the real embedded generator and scorer, each built once (cached across runs) and loaded once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DAGSTER_HOME", str(REPO / "dagster_home"))
# Several pytest-xdist workers on two cores (make test runs three, make check two): each worker (and every
# process it starts) gets one torch/OpenMP thread, so that the workers never run twice as many spinning
# OpenMP threads as there are cores. Measured on the
# scorer-mode tests beside a busy core: 171 s with torch's default two threads, 86 s with one
# (README, "How long the tests take"). A one-process run (PYTEST_WORKERS=0) keeps torch's default.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, "1")

# vLLM on the CPU runs its worker in the engine process (REER_VLLM_CPU_EXECUTOR=uni,
# backends/vllm_server.cpu_single_process): a server starts in 0.66× the time, an in-process engine in 0.23×
# (scripts/bench_vllm_start.py). Two tests keep vLLM's default multiprocess executor and check its clean shutdown
# (tests/vllm/test_cli_json.py: `reer score` on the engine, `reer serve` stopped by SIGTERM).
os.environ.setdefault("REER_VLLM_CPU_EXECUTOR", "uni")
# vLLM's KV cache on the CPU, 1 GiB per engine (vLLM's own setting). Left to vLLM, it is the host-memory share
# (0.1 of 23.5 GiB) minus the engine process's resident memory, which is negative for an engine started inside
# a test process that already holds models (met in a three-worker run: "requested memory for kv (-0.26/2.35
# GiB)"); 1 GiB is far more than the embedded model's contexts need, and less than vLLM would take.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

# The domain partitions are fixed when reer_assets.defs.partitions is first imported. Tests that point
# REER_DOMAINS_FILE at a tiny domain (named after a bundled one) must not be the first to import it, or every
# later test of that process would see one partition: fix them here, from the bundled domains.
import reer_assets.defs.partitions  # noqa: E402,F401


@pytest.fixture(scope="session")
def embedded_path() -> Path:
    from reer_assets.backends.embedded import ensure_embedded_model

    return ensure_embedded_model()


@pytest.fixture(scope="session")
def embedded_loaded(embedded_path):
    from reer_assets.backends.hf import LoadedModel

    return LoadedModel.load(embedded_path, device="cpu")


@pytest.fixture(scope="session")
def embedded_generator(embedded_loaded):
    from reer_assets.backends.hf import HFGenerator

    return HFGenerator(embedded_loaded, model_id="reer-embedded")


@pytest.fixture(scope="session")
def scorer_path() -> Path:
    """The embedded scorer build (a base model that reads the thinking; docs/embedded-model.md)."""
    from reer_assets.backends.embedded_scorer import ensure_scorer_model

    return ensure_scorer_model()


@pytest.fixture(scope="session")
def scorer_loaded(scorer_path):
    from reer_assets.backends.hf import LoadedModel

    return LoadedModel.load(scorer_path, device="cpu")


@pytest.fixture(scope="session")
def embedded_scorer(scorer_loaded):
    """The default scorer: the embedded scorer build (the generator has its own fixtures above)."""
    from reer_assets.backends.hf import HFScorer

    return HFScorer(scorer_loaded, model_id="reer-embedded-scorer")


@pytest.fixture(scope="session")
def bundled_item():
    from reer_assets import data
    from reer_assets.core.refinement import SearchItem

    piece = next(p for p in data.corpus("creative_writing") if p["language"] == "en")
    return SearchItem(item_id=piece["id"], query=piece["request"], reference=piece["text"])


@pytest.fixture(scope="session")
def vllm_server(embedded_path, tmp_path_factory):
    """A real OpenAI-compatible vLLM server for the embedded model on a free loopback port.

    Started once per session (about 30-60 s on two cores) and stopped with its engine
    process group at the end.
    """
    from reer_assets.backends.vllm_server import start_vllm_server

    log_path = tmp_path_factory.mktemp("vllm") / "server.log"
    server = start_vllm_server(str(embedded_path), None, log_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def vllm_engine(embedded_path):
    """The in-process vLLM engine on the embedded model, loaded once per session."""
    from reer_assets.backends.vllm_engine import EngineSettings, VLLMEngine

    engine = VLLMEngine(EngineSettings(str(embedded_path)))
    yield engine
    engine.close()


# Test modules that share one server per worker: the vLLM modules that use the session vLLM server and
# engine (vllm_server, vllm_engine above); the group runs whole on one worker, so each starts once. The vLLM
# modules that start their own engines (test_eval_answer_served, test_run_batch) are handed out on their own,
# like any module.
SESSION_VLLM_MODULES = ("test_backend_parity", "test_cli_json", "test_guided_judge", "test_judge_vllm",
                        "test_many_servers", "test_openai_graph")
SHARED_SERVER_GROUPS = (*((f"tests/vllm/{name}.py", "vllm") for name in SESSION_VLLM_MODULES),
                        ("tests/scale/test_slurm", "slurm"))


# The longest scopes (a module, or a group above), longest first, as measured in a three-worker run: they are
# handed out first, so that no long one starts last while the other workers sit idle (README, "How long the
# tests take"). Everything else follows in collection order.
LONGEST_FIRST = ("vllm", "tests/reliability/test_kill_trials.py", "tests/scale/test_ray_two_nodes.py", "slurm",
                 "tests/e2e/test_graph.py", "tests/e2e/test_ui.py", "tests/vllm/test_eval_answer_served.py",
                 "tests/vllm/test_run_batch.py", "tests/unit/test_gpu_check.py", "tests/reliability/test_idempotence.py",
                 "tests/e2e/test_sources_graph.py", "tests/reliability/test_network.py",
                 "tests/reliability/test_resume.py", "tests/scale/test_ray_runner.py")


def scope_of(nodeid: str) -> str:
    """What the scheduler hands out whole: the module, or its shared-server group."""
    path = nodeid.split("::", 1)[0]
    return next((group for prefix, group in SHARED_SERVER_GROUPS if path.startswith(prefix)), path)


@pytest.hookimpl(trylast=True)  # after pytest's own teardown, which ends the module fixtures that use them
def pytest_runtest_teardown(item, nextitem):
    """Stop the session vLLM server and engine once their group's last test on this worker is done, rather
    than at the end of the session: the group runs first (LONGEST_FIRST) and an idle server still takes
    about 2% of a core (0.7 s of CPU in 30 s, measured). Were a later test to ask for them, pytest would
    start them again (``FixtureDef.finish`` clears the cached value)."""
    if scope_of(item.nodeid) != "vllm" or (nextitem is not None and scope_of(nextitem.nodeid) == "vllm"):
        return
    for name in ("vllm_server", "vllm_engine"):
        for fixturedef in item.session._fixturemanager.getfixturedefs(name, item) or ():
            fixturedef.finish(item._request)


def pytest_collection_modifyitems(config, items):
    rank = {scope: index for index, scope in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(scope_of(item.nodeid), len(rank)))  # stable: the rest keep their order


def pytest_xdist_make_scheduler(config, log):
    """``make test`` runs three pytest-xdist workers, ``make check`` two. Work is handed out a module at a time (its module fixtures
    are built once), except that the modules of one shared server go together (SHARED_SERVER_GROUPS)."""
    from xdist.scheduler import LoadScopeScheduling

    class ByModuleAndServer(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    config.option.loadscopereorder = False  # keep LONGEST_FIRST (xdist would sort scopes by their number of tests)
    return ByModuleAndServer(config, log)
