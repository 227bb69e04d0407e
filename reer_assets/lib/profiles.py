"""Named run profiles: the knobs a whole materialisation uses unless a run overrides them.

``default`` follows the official REER code and the paper's settings (docs/algorithm.md): every
switch that departs from them is off. ``demo`` is small enough for `make demo` to finish on two
CPU cores and ``test`` is smaller still; both turn on the switches the embedded model needs.
Chosen by REER_PROFILE or by each asset's ``profile`` config field (``lib/run_config.py``).

A profile's ``search`` section holds only what differs from ``SearchConfig``'s defaults (core/refinement.py);
:func:`profile` returns it resolved: the defaults overlaid by those differences.
"""

from __future__ import annotations

from typing import Any

from reer_assets import settings
from reer_assets.core.refinement import SearchConfig

PROFILES: dict[str, dict[str, Any]] = {
    "default": {
        # the official code's settings: SearchConfig's defaults (core/refinement.py), nothing differs
        "search": {},
        "synthesis": {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "max_tokens": 256},
        # the paper's recipe (core/training.py): full fine-tuning, lr 2e-5, 3 epochs, global batch 96
        "finetune": {"recipe": "paper"},
        "benchmark": {"max_tokens": 2048, "temperature": 0.7, "top_p": 0.9, "top_k": 40},
        "filters": {},
        # the built-in ablations (docs/experiments.md): the paper's recipe for its epochs, 3 seeds
        "experiment": {"variants": ["searched", "initial", "no_thinking", "random_edits", "shuffled"], "no_reflection": False, "recipe": "paper", "seeds": 3,
                       "budget": "steps", "max_steps": None, "train_tokens": None, "prompts_per_domain": None,
                       "max_tokens": 2048},
    },
    "demo": {
        "search": {"max_step": 3, "max_tokens": 640, "edit_max_tokens": 320,
                   # the toy model's closed thinkings are short; the paper-scale floor of 100 drops most
                   "min_rollout_tokens": 48, "ban_foreign_tags": True,
                   "num_rollouts": 2,
                   # as in test: at 100 characters a domain's every thinking can be one segment (docs/algorithm.md)
                   "min_segment_chars": 40},
        "synthesis": {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "max_tokens": 96},
        # the embedded recipe: a learning rate a 1M-parameter model moves with, no accumulation
        "finetune": {"recipe": "embedded", "epochs": 2},
        "benchmark": {"max_tokens": 384, "temperature": 0.7, "top_p": 0.9, "top_k": 40},
        # the toy embedded model rarely writes clean tags; the demo keeps such rows to show the whole graph
        "filters": {"reject_malformed_tags": False},
        # sized so that `make demo` ablates all six domains in a few minutes on two cores: 1 seed, 12 steps
        # per checkpoint, all 10 held-out prompts per domain (60 in all), short answers
        "experiment": {"variants": ["searched", "initial", "no_thinking", "random_edits", "shuffled"], "no_reflection": False, "recipe": "embedded", "seeds": 1,
                       "budget": "steps", "max_steps": 12, "train_tokens": None, "prompts_per_domain": 10,
                       "max_tokens": 128},
    },
    # the smallest settings that still exercise every code path (the test suite uses it)
    "test": {
        "search": {"max_step": 2, "max_tokens": 480, "edit_max_tokens": 256, "min_rollout_tokens": 48,
                   "ban_foreign_tags": True,
                   # the toy model's paragraphs are short: at 100 characters most of its thinkings are one
                   # segment and rejected before any step (docs/algorithm.md, deviation table)
                   "min_segment_chars": 40},
        "synthesis": {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "max_tokens": 64},
        "finetune": {"recipe": "embedded", "epochs": 1},
        "benchmark": {"max_tokens": 64, "temperature": 0.7, "top_p": 0.9, "top_k": 40},
        "filters": {"reject_malformed_tags": False},
        "experiment": {"variants": ["searched", "initial", "no_thinking", "random_edits", "shuffled"], "no_reflection": False, "recipe": "embedded", "seeds": 1,
                       "budget": "steps", "max_steps": 2, "train_tokens": None, "prompts_per_domain": 1,
                       "max_tokens": 16},
    },
}


def profile_name(override: str | None = None) -> str:
    name = override or settings.profile_name() or "default"
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}")
    return name


def search_settings(override: str | None = None) -> SearchConfig:
    """A profile's search settings: ``SearchConfig``'s defaults overlaid by the profile's ``search`` section."""
    return SearchConfig.from_dict(PROFILES[profile_name(override)]["search"])


def profile(override: str | None = None) -> dict[str, Any]:
    """A profile with its ``search`` section resolved (every SearchConfig field, see :func:`search_settings`)."""
    name = profile_name(override)
    return {**PROFILES[name], "search": search_settings(name).to_dict()}
