"""The backend-parity tests compare hf, vLLM and a vLLM server on one model: the embedded generator."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def embedded_scorer(embedded_loaded):
    from reer_assets.backends.hf import HFScorer

    return HFScorer(embedded_loaded, model_id="reer-embedded")
