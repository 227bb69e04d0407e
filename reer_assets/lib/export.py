"""`reer export`: the current SFT dataset in the formats training tools read as they are.

``trl``: ``train.parquet`` with a ``messages`` column (system, user, assistant turns), which
``datasets.load_dataset("parquet", data_files=...)`` reads and TRL's SFTTrainer trains on without
conversion. ``sharegpt``: ``train.json`` (``system`` plus ``conversations`` of human/gpt turns) and
the ``dataset_info.json`` LLaMA-Factory reads. Both come with a dataset card (``README.md``): the
config, the filter funnel, token statistics, the models of every role, the source licences and
the lineage ids.
``deepwriting``: ``train.parquet`` and ``train.jsonl`` in the verl layout DeepWriting-20K uses (and the
``deepwriting`` reader reads back): ``prompt`` as chat messages holding the request, ``question`` the
same request as text (what the official REER code reads), ``solution`` = ``<think>\n`` + thinking +
``\n</think>\n`` + answer, ``extra_info.index`` the dataset row id, ``data_source``, ``ability`` and
``reward_model`` (``ground_truth``: the answer).

``reer-official``: not the SFT dataset but the searched trajectories of ``refined_trajectories`` (every
domain, or ``--domain``), one file per item in the official REER code's output layout
(:func:`export_official`; ``reer import official`` reads it back; docs/interop.md).

Beside the dataset: :func:`writingbench_scores` turns ``benchmark_scores``' judge rows into
WritingBench's own score files (``reer eval export-scores --format writingbench``).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Callable

import polars as pl

FORMATS = ("trl", "sharegpt", "deepwriting", "reer-official")
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


def export(fmt: str, out: Path, tokenizer_path: str | None = None, domains: list[str] | None = None) -> dict[str, Any]:
    """Write the current SFT dataset in ``fmt`` under ``out`` (``reer-official``: the trajectories of
    ``domains``, default every materialised one); return what was written."""
    from reer_assets.lib import duckdb_store

    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "reer-official":
        return export_official(out, domains)
    dataset = current_dataset()
    folder = Path(dataset["path"])
    frame = pl.read_parquet(folder / "train.parquet")
    rows = frame["messages"].to_list()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if fmt == "trl":
        frame.select("id", "domain", "messages").write_parquet(out / "train.parquet")
        written.append("train.parquet")
    elif fmt == "deepwriting":
        layout = pl.DataFrame(deepwriting_rows(dataset_rows(frame)), schema=DEEPWRITING_SCHEMA)
        layout.write_parquet(out / "train.parquet")
        layout.write_ndjson(out / "train.jsonl")
        written += ["train.parquet", "train.jsonl"]
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


DEEPWRITING_SCHEMA = {
    "data_source": pl.String,
    "prompt": pl.List(pl.Struct({"role": pl.String, "content": pl.String})),
    "ability": pl.String,
    "reward_model": pl.Struct({"style": pl.String, "ground_truth": pl.String}),
    "extra_info": pl.Struct({"index": pl.String, "split": pl.String, "domain": pl.String, "trajectory_id": pl.String,
                             "document_id": pl.String, "final_score": pl.Float64}),
    "question": pl.String,
    "solution": pl.String,
}


def deepwriting_solution(thinking: str, answer: str) -> str:
    """The verl/DeepWriting ``solution``: the thinking in one ``<think>`` block, then the bare answer."""
    return "<think>\n" + thinking.strip() + "\n</think>\n" + answer.strip()


def deepwriting_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Dataset rows ({id, domain, query, thinking, reference, …}) in the DeepWriting-20K (verl) layout."""
    return [{
        "data_source": f"reer/{r['domain']}",
        "prompt": [{"role": "user", "content": r["query"].strip()}],
        "ability": "writing",
        "reward_model": {"style": "model", "ground_truth": r["reference"].strip()},
        "extra_info": {"index": r["id"], "split": "train", "domain": r["domain"],
                       "trajectory_id": r.get("trajectory_id"), "document_id": r.get("document_id"),
                       "final_score": r.get("final_score")},
        "question": r["query"].strip(),
        "solution": deepwriting_solution(r["thinking"], r["reference"]),
    } for r in rows]


def dataset_rows(chat: pl.DataFrame) -> list[dict[str, Any]]:
    """The request, thinking and answer of each sft_dataset row, from the filtered_dataset rows it was
    made of (the chat rows only hold them wrapped in the inference prompt), in the dataset's order."""
    from reer_assets.lib import storage

    wanted = chat["id"].to_list()
    parts = []
    for domain in sorted(set(chat["domain"].to_list())):
        found = storage.read_output("filtered_dataset", "dataset", domain)
        parts.append(found.filter(pl.col("id").is_in(wanted)).select("id", "query", "thinking", "reference"))
    found = pl.concat(parts) if parts else pl.DataFrame(schema={"id": pl.String, "query": pl.String,
                                                                 "thinking": pl.String, "reference": pl.String})
    joined = chat.select("id", "domain", "trajectory_id", "document_id", "final_score").join(found, on="id", how="left")
    missing = joined.filter(pl.col("query").is_null())["id"].to_list()
    if missing:
        raise ValueError(f"{len(missing)} sft_dataset rows (e.g. {missing[0]}) are no longer in filtered_dataset: "
                         "materialise sft_dataset again, then export")
    return joined.to_dicts()


def writingbench_scores(judgments: pl.DataFrame) -> dict[tuple[str, str], dict[str, Any]]:
    """WritingBench score lines per (benchmark, model label) from judge rows (``judgments.parquet``).

    Each line is ``{"index": …, "scores": {criterion: [{"score": …, "reason": …}]}}``, one per item, in
    the order the items were judged; an index that is an integer in text is written as an integer, as
    in WritingBench's files. Only rubric judgments count (pairwise rows are left out), and an item with
    a failed judgment is left out and listed under ``incomplete``, as ``writingbench_summary`` leaves it
    out of its means: WritingBench's ``calculate_scores.py`` cannot read a score that is not there.
    """
    out: dict[tuple[str, str], dict[str, Any]] = {}
    rubric = judgments.filter((pl.col("mode") == "rubric") & pl.col("pair_winner").is_null())
    for row in rubric.iter_rows(named=True):
        group = out.setdefault((row["benchmark"], row["model_label"]), {"items": {}, "failed": set()})
        item = group["items"].setdefault(str(row["item_id"]), {})
        if row["status"] != "ok" or row["score"] is None:
            group["failed"].add(str(row["item_id"]))
            continue
        score = row["score"]
        item.setdefault(row["criterion"], []).append(
            {"score": int(score) if float(score).is_integer() else score, "reason": row["reason"]})
    return {key: {"lines": [{"index": _index(i), "scores": scores} for i, scores in group["items"].items()
                            if i not in group["failed"]],
                  "incomplete": sorted(group["failed"])} for key, group in out.items()}


def _index(item_id: str) -> int | str:
    return int(item_id) if item_id.isdigit() and str(int(item_id)) == item_id else item_id


def export_writingbench_scores(out: Path, judgments_path: str | Path | None = None) -> dict[str, Any]:
    """Write ``<out>/<benchmark>/<model label>.jsonl`` for every WritingBench benchmark and model in
    ``judgments_path`` (default: the last ``benchmark_scores`` run's ``judgments.parquet``): a folder
    WritingBench's ``calculate_scores.py --score_dir`` reads as it is, one file per model."""
    from reer_assets.lib import storage

    path = Path(judgments_path) if judgments_path else storage.output_path("benchmark_scores", "judgments")
    if not storage.exists(path):
        raise FileNotFoundError(f"no judge scores at {path}: materialise benchmark_scores with a judge first")
    groups = writingbench_scores(storage.read_parquet(path))
    if not groups:
        raise ValueError(f"{path} has no WritingBench (rubric) judgments")
    files = []
    for (benchmark, label), group in sorted(groups.items()):
        target = out / benchmark / f"{label}.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in group["lines"]),
                          encoding="utf-8")
        files.append({"benchmark": benchmark, "model_label": label, "path": str(target),
                      "items": len(group["lines"]), "incomplete": group["incomplete"]})
    return {"format": "writingbench", "judgments": str(path), "out": str(out), "files": files}


def _counter(tokenizer_path: str | None) -> tuple[Callable[[str], int], str]:
    """A token counter: the given tokenizer (a folder or ``tokenizer.json``), else whitespace words."""
    if not tokenizer_path:
        return (lambda text: len(text.split())), "whitespace words (pass --tokenizer for model tokens)"
    from tokenizers import Tokenizer

    path = Path(tokenizer_path)
    tok = Tokenizer.from_file(str(path / "tokenizer.json" if path.is_dir() else path))
    return (lambda text: len(tok.encode(text, add_special_tokens=False).ids)), str(tokenizer_path)


def export_official(out: Path, domains: list[str] | None = None) -> dict[str, Any]:
    """The ``refined_trajectories`` rows of ``domains`` (default: every domain that has them) as official
    REER output files, one per item; rows that are not ``ok`` have no official form and are only counted."""
    from reer_assets.lib.domains import domain_names
    from reer_assets.core.ingest.official import export_rows
    from reer_assets.lib import storage

    names = domains or [d for d in domain_names() if storage.exists(storage.output_path("refined_trajectories",
                                                                                         "trajectories", d))]
    if not names:
        raise FileNotFoundError("refined_trajectories has not been materialised for any domain yet")
    rows = [row for d in names for row in storage.read_output("refined_trajectories", "trajectories", d).to_dicts()]
    written = export_rows(rows, out)
    return {**written, "version": f"refined_trajectories[{','.join(names)}]", "domains": names}
