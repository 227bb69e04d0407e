"""`reer export`: the current SFT dataset in the formats training tools read as they are.

``trl``: ``train.parquet`` with a ``messages`` column (system, user, assistant turns), which
``datasets.load_dataset("parquet", data_files=...)`` reads and TRL's SFTTrainer trains on without
conversion. ``sharegpt``: ``train.json`` (``system`` plus ``conversations`` of human/gpt turns) and
the ``dataset_info.json`` LLaMA-Factory reads. Both come with a dataset card (``README.md``): the
config, the filter funnel, token statistics, the models of every role, the source licences and
the lineage ids.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Callable

import polars as pl

FORMATS = ("trl", "sharegpt")
SHAREGPT_ROLES = {"user": "human", "assistant": "gpt"}


def current_dataset() -> dict[str, Any]:
    """The sft_dataset version the graph last materialised (its pointer file)."""
    from reer_assets.lib.storage import read_pointer

    try:
        return read_pointer("sft_dataset")
    except FileNotFoundError:
        raise FileNotFoundError("sft_dataset has not been materialised yet: run `make demo` or materialise it in the UI") from None


def to_sharegpt(messages: list[dict[str, str]]) -> dict[str, Any]:
    system = "".join(m["content"] for m in messages if m["role"] == "system")
    turns = [{"from": SHAREGPT_ROLES[m["role"]], "value": m["content"]} for m in messages if m["role"] != "system"]
    return {"system": system, "conversations": turns}


def token_statistics(rows: list[list[dict[str, str]]], count: Callable[[str], int]) -> dict[str, Any]:
    """Tokens of the user and assistant turns (thinking and answer apart), per row."""
    parts: dict[str, list[int]] = {"prompt": [], "thinking": [], "answer": [], "total": []}
    for messages in rows:
        prompt = sum(count(m["content"]) for m in messages[:-1])
        thinking, _, answer = messages[-1]["content"].partition("</think>")
        t, a = count(thinking), count(answer)
        for key, value in (("prompt", prompt), ("thinking", t), ("answer", a), ("total", prompt + t + a)):
            parts[key].append(value)
    return {key: {"mean": round(statistics.fmean(v), 1), "median": statistics.median(v), "max": max(v),
                  "sum": sum(v)} if v else None for key, v in parts.items()}


def render_export_card(dataset: dict[str, Any], fmt: str, rows: int, tokens: dict, tokenizer_name: str,
                       sources: pl.DataFrame, dataset_card: str) -> str:
    lines = [f"# REER SFT dataset `{dataset['version']}` ({fmt} export)", "",
             f"{rows} rows. Lineage: dataset version `{dataset['version']}` (table `datasets`; its rows in "
             "`dataset_members`, each traceable with `reer lineage trace <row id>`).", "",
             f"## Token statistics (tokenizer: {tokenizer_name})", "", "| part | mean | median | max | total |",
             "|---|---|---|---|---|"]
    for part, stats in tokens.items():
        if stats:
            lines.append(f"| {part} | {stats['mean']} | {stats['median']} | {stats['max']} | {stats['sum']} |")
    lines += ["", "## Models and sources", "", "| generator | scorer | query synthesis | licence | domain | rows |",
              "|---|---|---|---|---|---|"]
    for r in sources.iter_rows(named=True):
        lines.append(f"| {r['generator_model']} | {r['scorer_model']} | {r['synthesis_model'] or '(given request)'} "
                     f"| {r['license'] or 'unknown'} | {r['domain']} | {r['rows']} |")
    runs = sorted({run for r in sources.iter_rows(named=True) for run in (r["search_runs"] or []) + (r["curation_runs"] or []) if run})
    lines += ["", f"Dagster runs: {', '.join(f'`{r}`' for r in runs) or 'n/a'}", "",
              "## How it was made (the dataset's own card)", "", dataset_card.split("\n", 1)[1].strip()]
    return "\n".join(lines) + "\n"


def export(fmt: str, out: Path, tokenizer_path: str | None = None) -> dict[str, Any]:
    """Write the current SFT dataset in ``fmt`` under ``out``; return what was written."""
    from reer_assets.lib import duckdb_store

    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    dataset = current_dataset()
    folder = Path(dataset["path"])
    frame = pl.read_parquet(folder / "train.parquet")
    rows = frame["messages"].to_list()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if fmt == "trl":
        frame.select("id", "domain", "messages").write_parquet(out / "train.parquet")
        written.append("train.parquet")
    else:
        records = [{"id": i, **to_sharegpt(m)} for i, m in zip(frame["id"].to_list(), rows)]
        (out / "train.json").write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
        info = {"reer_sft": {"file_name": "train.json", "formatting": "sharegpt",
                             "columns": {"messages": "conversations", "system": "system"},
                             "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human",
                                      "assistant_tag": "gpt"}}}
        (out / "dataset_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        written += ["train.json", "dataset_info.json"]
    count, tokenizer_name = _counter(tokenizer_path)
    tokens = token_statistics(rows, count)
    sources = duckdb_store.query(duckdb_store.named_query("dataset_sources"), [dataset["version"]])
    card = render_export_card(dataset, fmt, len(rows), tokens, tokenizer_name, sources,
                              (folder / "README.md").read_text(encoding="utf-8"))
    (out / "README.md").write_text(card, encoding="utf-8")
    written.append("README.md")
    return {"format": fmt, "version": dataset["version"], "rows": len(rows), "out": str(out), "files": written,
            "tokens": tokens}


def _counter(tokenizer_path: str | None) -> tuple[Callable[[str], int], str]:
    """A token counter: the given tokenizer (a folder or ``tokenizer.json``), else whitespace words."""
    if not tokenizer_path:
        return (lambda text: len(text.split())), "whitespace words (pass --tokenizer for model tokens)"
    from tokenizers import Tokenizer

    path = Path(tokenizer_path)
    tok = Tokenizer.from_file(str(path / "tokenizer.json" if path.is_dir() else path))
    return (lambda text: len(tok.encode(text, add_special_tokens=False).ids)), str(tokenizer_path)
