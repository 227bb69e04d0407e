"""A tiny domain for the per-domain stages (raw_documents -> filtered_dataset), as tests/assets/test_stages.py
builds it: two short bundled pieces that come with their request (so synthesis needs no model), the
``test`` profile cut further through run config, workloads run in process."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

DOMAIN = "education"  # a partition of the bundled domains; its source is replaced by two short pieces
DOMAIN_STAGES = ("raw_documents", "synthesized_queries", "refined_trajectories", "filtered_dataset")
# max_step 1 with the test profile's token limits: the embedded model closes its thinking, so the search
# runs and writes steps and candidates (with max_tokens 96, as test_stages uses, every item is rejected at z0)
RUN_CONFIG = {"refined_trajectories": {"max_step": 1}}


def write_domains_file(folder: Path, pieces: int = 2) -> Path:
    """A ``domains.yaml`` in ``folder`` whose domain reads ``pieces.jsonl`` (the shortest English bundled pieces
    that come with a request); returns the yaml's path.

    The pieces file is kept at a fixed place in the temporary folder: document ids hash the source's path, and
    the seeds of the search derive from them, so a fixed path makes what the toy model writes the same in
    every run (with a fresh temporary path, whether its first thinking can be split into segments, and so
    whether there are search steps at all, changes from run to run).
    """
    from reer_assets import data

    chosen = sorted((p for p in data.corpus() if p.get("request_given") and p["language"] == "en"),
                    key=lambda p: len(p["text"]))[:pieces]
    text = "".join(json.dumps({"id": p["id"], "request": p["request"], "text": p["text"]}) + "\n" for p in chosen)
    source = Path(tempfile.gettempdir()) / "reer-tests" / f"tiny-domain-{pieces}" / "pieces.jsonl"
    if not source.exists() or source.read_text(encoding="utf-8") != text:
        source.parent.mkdir(parents=True, exist_ok=True)
        tmp = source.with_name(f".{source.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, source)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "domains.yaml").write_text(f"domains:\n  {DOMAIN}:\n    languages: [en]\n    sources:\n"
                                         f"      - reader: generic\n        path: {source}\n", encoding="utf-8")
    return folder / "domains.yaml"


# search seeds tried in turn when a test needs search steps (``materializer(..., require_steps=True)``)
SEARCH_SEEDS = (0, 1, 2, 3, 4, 5)


def materializer(resources: dict, instance=None, run_config: dict | None = None, require_steps: bool = False):
    """``materialize(name)``: one asset of the definitions (the domain's partition when partitioned).

    ``require_steps``: whether a search with no step at all (every rollout rejected at z0, which depends on what
    this machine's build of the toy model writes) is searched again with the next of ``SEARCH_SEEDS``, until one
    writes candidates; the seed found is kept for later materialisations, so they reuse that search.
    """
    import dagster as dg

    from reer_assets.definitions import defs
    from reer_assets.lib import storage

    instance = instance or dg.DagsterInstance.ephemeral()
    configs = {k: dict(v) for k, v in (RUN_CONFIG if run_config is None else run_config).items()}

    def once(name: str) -> dg.ExecuteInProcessResult:
        asset = defs.get_assets_def(name)
        config = configs.get(name)
        result = dg.materialize([asset], partition_key=DOMAIN if asset.partitions_def else None, resources=resources,
                                instance=instance, run_config={"ops": {name: {"config": config}}} if config else None)
        assert result.success, name
        return result

    def materialize(name: str) -> dg.ExecuteInProcessResult:
        if name != "refined_trajectories" or not require_steps:
            return once(name)
        for seed in SEARCH_SEEDS:
            configs[name] = {**configs.get(name, {}), "seed": seed}
            result = once(name)
            if storage.read_output(name, "candidates", DOMAIN).height:
                return result
        raise AssertionError(f"no search step with any of the seeds {SEARCH_SEEDS}: the toy model's every "
                             "initial thinking was rejected")

    return materialize


def metadata(result, name: str) -> dict:
    event = result.asset_materializations_for_node(name)[0]
    return {k: getattr(v, "value", v) for k, v in event.metadata.items()}
