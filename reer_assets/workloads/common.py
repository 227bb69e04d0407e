"""What every workload shares: the Pipes entry point and durable per-item checkpoints."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from reer_assets.core.atomic_write import atomic_write_text

Extras = dict[str, Any]
Log = Callable[[str], None]


def pipes_main(run: Callable[[Extras, Log], dict[str, Any]]) -> None:
    """Run ``run`` under Dagster Pipes; its summary goes back as one custom message.

    ``python -m reer_assets.workloads.<stage> EXTRAS.json`` runs it without Dagster instead (logs on
    stderr, the summary as JSON on stdout): how a launcher such as ``accelerate launch`` starts it.
    """
    if len(sys.argv) > 1:
        summary = run(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8")), stderr_log)
        print(json.dumps(summary, default=str))
        return
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        summary = run(dict(pipes.extras), pipes.log.info)
        pipes.report_custom_message(summary)


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class ItemCheckpoints:
    """One JSON file per finished item; the atomic rename is the completion marker.

    A resumed run skips every item that has a file; a crash mid-write leaves at most a
    ``.<item>.json.*.tmp`` file, which neither ``has`` nor iteration ever sees.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, item_id: str) -> Path:
        return self.folder / f"{item_id}.json"

    def has(self, item_id: str) -> bool:
        return self._path(item_id).exists()

    def load(self, item_id: str) -> dict[str, Any]:
        return json.loads(self._path(item_id).read_text(encoding="utf-8"))

    def save(self, item_id: str, payload: dict[str, Any]) -> None:
        atomic_write_text(self._path(item_id), json.dumps(payload, ensure_ascii=False))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for path in sorted(self.folder.glob("*.json")):
            yield json.loads(path.read_text(encoding="utf-8"))


def quiet_libraries() -> None:
    for name in ("transformers", "torch", "httpx", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
