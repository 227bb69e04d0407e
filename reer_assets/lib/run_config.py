"""The run configs of the assets, from one base: :class:`RunConfig`. The fields several stages share are
declared once, in the groups below (a seed, sampling, a fine-tuning recipe, how a benchmark is answered);
a stage's config (``defs/<stage>/assets.py``) lists the groups it takes and declares only its own fields.
A field a run leaves unset (None) comes from the run profile's section (:class:`ProfiledConfig`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import dagster as dg

from reer_assets.lib.profiles import profile


class RunConfig(dg.Config):
    """The base of every asset's run config."""


class SeedConfig(RunConfig):
    seed: int = 0  # the seed of the stage's random draws


class ProfileConfig(RunConfig):
    profile: Optional[str] = None  # the run profile (default REER_PROFILE, else default)


class ProfiledConfig(ProfileConfig):
    """A run config whose unset fields come from one section of the run profile.

    A subclass names its ``section`` and declares the knobs a run may override (``Optional``, default
    None); :meth:`resolved` is that section with every field that is set laid over it, plus the
    fields the section does not have (a seed, a failure bound). One merge rule for every stage.
    """

    section: ClassVar[str]

    def resolved(self) -> dict[str, Any]:
        base = dict(profile(self.profile)[self.section])
        return {**base, **{k: v for k, v in self.model_dump().items() if k != "profile" and v is not None}}


class SamplingConfig(ProfiledConfig):
    """Generation overrides: the longest completion and the temperature."""

    max_tokens: Optional[int] = None
    temperature: Optional[float] = None


class NucleusSamplingConfig(SamplingConfig):
    """Sampling with top-p and top-k overrides too."""

    top_p: Optional[float] = None
    top_k: Optional[int] = None


class RecipeConfig(ProfiledConfig):
    """A fine-tuning recipe (core/training.py: ``paper``, ``lora``, ``embedded``) and its common overrides."""

    recipe: Optional[str] = None
    epochs: Optional[float] = None
    learning_rate: Optional[float] = None


class AnsweringConfig(ProfiledConfig):
    """How held-out or benchmark prompts are answered (workloads/answering.py; docs/evaluation.md)."""

    prompts_per_domain: Optional[int] = None  # the first N bundled benchmark prompts of each domain (None: all)
    backend: Optional[str] = None  # hf | vllm | openai (default: the generator role's backend)
    max_in_flight: Optional[int] = None  # requests in flight
    servers: Optional[dict[str, str]] = None  # openai: each model's server, {label | checkpoint id | "*": "URL[#name]"}
