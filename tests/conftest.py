"""Shared fixtures: the real embedded model, built once (cached across runs) and loaded once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DAGSTER_HOME", str(REPO / "dagster_home"))


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
def embedded_scorer(embedded_loaded):
    from reer_assets.backends.hf import HFScorer

    return HFScorer(embedded_loaded, model_id="reer-embedded")


@pytest.fixture(scope="session")
def bundled_item():
    from reer_assets import data
    from reer_assets.core.search import SearchItem

    piece = next(p for p in data.corpus("creative_writing") if p["language"] == "en")
    return SearchItem(item_id=piece["id"], query=piece["request"], reference=piece["text"])
