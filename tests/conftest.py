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
# Two pytest-xdist workers on two cores: each worker (and every process it starts) gets one torch/OpenMP
# thread, so that two workers never run four spinning OpenMP threads on two cores. Measured on the
# scorer-mode tests beside a busy core: 171 s with torch's default two threads, 86 s with one
# (README, "How long the tests take"). A one-process run (PYTEST_WORKERS=0) keeps torch's default.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, "1")

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


# Test modules that share one server per worker: every vLLM test module uses the session vLLM server and
# engine, the Ray modules a Ray head; each group runs whole on one worker, so each server starts once.
SHARED_SERVER_GROUPS = (("tests/vllm/", "vllm"), ("tests/scale/test_ray", "ray"), ("tests/scale/test_slurm", "slurm"))


def pytest_xdist_make_scheduler(config, log):
    """``make test`` runs two pytest-xdist workers. Work is handed out a module at a time (its module fixtures
    are built once), except that the modules of one shared server go together (SHARED_SERVER_GROUPS)."""
    from xdist.scheduler import LoadScopeScheduling

    class ByModuleAndServer(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return next((group for prefix, group in SHARED_SERVER_GROUPS if path.startswith(prefix)), path)

    return ByModuleAndServer(config, log)
