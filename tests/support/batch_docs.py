"""Small English documents and synthesis-workload extras for the batch-mode tests (tests/unit/test_batch_api.py,
tests/vllm/test_run_batch.py): texts with no request, so synthesis has to ask the generator for one."""

from __future__ import annotations

from pathlib import Path

from reer_assets.core.schemas import DOCUMENTS
from reer_assets.lib import storage

TEXTS = [
    "The tram stopped at the bridge and a woman in a green coat stepped out into the rain, holding a paper bag of "
    "oranges against her chest. Nobody on the platform looked up; the city had its own weather to attend to.",
    "Every spring the allotments by the railway come back to life. Old men argue over bean poles, children chase "
    "the cats between the sheds, and the first radishes are eaten raw, still gritty, before anyone gets home.",
    "Our town library opens at nine, but the queue starts at half past eight: students with laptops, a retired "
    "engineer who reads every newspaper, and a boy who returns the same book about volcanoes each week.",
    "The night ferry smells of diesel and coffee. Lorry drivers sleep in the lounge chairs while a family plays "
    "cards by the window, and somewhere below deck a dog barks at every wave that hits the hull.",
]


def write_documents(folder: Path, given: int = 0, count: int = len(TEXTS)) -> Path:
    """A raw_documents Parquet of ``count`` English texts; the first ``given`` come with their request."""
    rows = []
    for k, text in enumerate(TEXTS[:count]):
        row = DOCUMENTS.empty_row()
        row.update(id=f"doc_{k}", domain="essays", language="en", text=text, status="accepted",
                   given_request="Describe a small scene from daily life in a town." if k < given else None)
        rows.append(row)
    path = folder / "documents.parquet"
    storage.write_parquet(DOCUMENTS.frame(rows), path)
    return path


def synthesis_extras(tmp_path: Path, documents: Path, max_tokens: int = 64) -> dict:
    return {"documents": str(documents), "out": str(tmp_path / "out" / "queries.parquet"),
            "work": str(tmp_path / "work"), "config_hash": "cfg-batch-test",
            "config": {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "max_tokens": max_tokens, "seed": 0, "qc": {}}}
