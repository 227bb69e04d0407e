"""The official REER code's output files, read into our rows and written back (docs/interop.md).

The official ``synthesize.py`` writes one file per item, ``{file_prefix}_{uid}_rk{rank}_meta.jsonl``,
holding ONE JSON document (``indent=2``) despite the suffix: the item's fields and ``alist``, one entry
per rollout. Its "ppl" / ``avg_token_logp`` numbers are ``-mean(clip(log p, -2, 0))`` over the
reference's tokens after its first segment: a clipped mean NLL, lower is better, the same quantity as
our score. They map onto our score columns unchanged.

Every file gets a :class:`FileRecord` (imported, with counts, or rejected, with a reason); a rollout
that cannot be read becomes a ``rejected`` trajectory with its reason, so nothing is skipped silently.
Free of Dagster and torch.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from reer_assets.core.chat_format import THINK_OPEN
from reer_assets.core.ids import config_hash, stable_id
from reer_assets.core.ingest.cleaning import text_hash
from reer_assets.core.ingest.readers.reer import split_solution
from reer_assets.core.language import EN, ZH, prompt_language
from reer_assets.core.schemas import CANDIDATES, DOCUMENTS, QUERIES, SEARCH_STEPS, TRAJECTORIES
from reer_assets.core.trace import Candidate, SearchTrace, Step
from reer_assets.core.trajectories import explode, trajectory_row

SOURCE = "reer-official"  # provenance marker: trace config ``imported``, documents.reader, prompt_set_version
CONFIG_HASH = config_hash({"imported": SOURCE})
SCORER_UNRECORDED = "unrecorded"  # the official files do not name the posterior (scorer) model
NO_SCORE = 1000.0  # the official code's score when the scorer returned no log-probs
SEPARATOR = "\n\n"  # the official recomposition of stripped segments
FILE_GLOB = "*_meta.jsonl"
_NAME = re.compile(r"_rk(?P<rank>\d+)_meta\.jsonl$")
_NAME_UID = re.compile(r"_(?P<uid>[^_]+)_rk\d+_meta\.jsonl$")  # a guess, for files whose JSON cannot be read
_STEP = re.compile(r"^refine_thinking_step_No\.(\d+)$")
_EXPANSION = re.compile(r"^expansion_No\.(\d+)_of_segment$")
_CHOICE = re.compile(r"^refinement_No\.(\d+)$")
# the openers the official code prefixes to the initial rollout (longest first, so "Alright, the user" wins)
OPENERS = ("Okay, I am given", "Alright, the user", "Alright", "好的", "嗯")
ROLLOUT_FIELDS = ("ntokens", "initial_response", "initial_ppl", "thinking_segments")
STEP_FIELDS = ("segment_to_refine", "choice", "chosen_refinement", "after_avg_token_logp", "possible_refinements")
CANDIDATE_FIELDS = ("id", "refinement", "raw_output", "avg_token_logp")
GAP_REASON = "no_refine_block (not kept by the official code)"
NO_SCORE_REASON = "scorer_returned_nothing"


class Malformed(ValueError):
    """A rollout (or step, or candidate) the official layout does not allow; the message is the reason."""


@dataclass
class FileRecord:
    """What became of one file (or one expected uid that has no file)."""

    file: str
    status: str  # imported | rejected | absent
    reason: str | None = None
    uid: str | None = None
    rank: int | None = None
    rollouts: int = 0
    rejected_rollouts: int = 0
    early_stops: int = 0
    steps: int = 0
    candidates: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ImportBatch:
    """Every file's record and the rows of the imported ones, in our tables' Parquet layout."""

    domain: str
    records: list[FileRecord] = field(default_factory=list)
    documents: list[dict] = field(default_factory=list)
    queries: list[dict] = field(default_factory=list)
    trajectories: list[dict] = field(default_factory=list)
    digest: str = ""  # hash of every file's name and bytes: the import's identity (fingerprints, run ids)

    def frames(self) -> dict[str, Any]:
        """documents, queries, trajectories, search_steps, candidates as Polars frames (our schemas)."""
        steps, candidates = explode(self.trajectories)
        return {"documents": DOCUMENTS.frame(self.documents), "queries": QUERIES.frame(self.queries),
                "trajectories": TRAJECTORIES.frame(self.trajectories), "search_steps": steps, "candidates": candidates}

    def summary(self) -> dict[str, Any]:
        by_status: dict[str, int] = {}
        for record in self.records:
            by_status[record.status] = by_status.get(record.status, 0) + 1
        return {"domain": self.domain, "files": len([r for r in self.records if r.status != "absent"]),
                **{k: by_status.get(k, 0) for k in ("imported", "rejected", "absent")},
                "trajectories": len(self.trajectories),
                "rejected_rollouts": sum(r.rejected_rollouts for r in self.records),
                "steps": sum(r.steps for r in self.records), "candidates": sum(r.candidates for r in self.records),
                "digest": self.digest}


# --- reading ---------------------------------------------------------------------------------------

def official_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files named on the command line as they are; folders give their ``*_meta.jsonl`` files, sorted."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.glob(FILE_GLOB) if p.is_file()))
        else:
            found.append(path)  # a missing file is recorded as rejected, not raised
    return found


def rank_of(name: str) -> int | None:
    match = _NAME.search(name)
    return int(match["rank"]) if match else None


def file_prefix(name: str, uid: str, rank: int | None) -> str | None:
    """The ``file_prefix`` part of an official file name (None when the name is not the official one)."""
    tail = f"_{uid}_rk{rank}_meta.jsonl"
    return name[: -len(tail)] if rank is not None and name.endswith(tail) else None


def answer_of(initial_response: str) -> str:
    """The official ``answer`` field: the text after the last ``</answer>`` (the whole rollout when none)."""
    return initial_response.split("<answer>")[-1].split("</answer>")[-1].strip()


def posterior_input(thinking: str, reference: str) -> str:
    """The official ``raw_input_for_posterior``: the assistant text the scorer read, reference included."""
    return f"{THINK_OPEN}{thinking}\n</think>\n<answer>\n{reference}\n</answer>"


def recomposed(before: list[str], text: str, after: list[str]) -> str:
    """A candidate's full thinking as the official code builds it: the chosen segments before, the
    rewrite, the original (stripped) segments after, joined by blank lines, empty sides left out."""
    head, tail, out = SEPARATOR.join(before), SEPARATOR.join(after), text
    if head:
        out = f"{head}{SEPARATOR}{out}"
    if tail:
        out = f"{out}{SEPARATOR}{tail}"
    return out


def _score(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Malformed(f"{where} is not a number")
    return float(value)


def _opener(text: str) -> str:
    return next((o for o in OPENERS if text.startswith(o)), "")


def _candidates(raw: Any, where: str, notes: list[str]) -> list[Candidate]:
    """Candidates by their official id; a missing id below the largest (an output without <refine>,
    which the official code drops) becomes a skipped candidate, so indices equal the official ids."""
    if not isinstance(raw, list):
        raise Malformed(f"{where}.possible_refinements is not a list")
    by_id: dict[int, Candidate] = {}
    for position, entry in enumerate(raw):
        if not isinstance(entry, dict) or len(entry) != 1:
            raise Malformed(f"{where}.possible_refinements[{position}] is not one expansion_No.<k>_of_segment entry")
        (key, body), = entry.items()
        match = _EXPANSION.match(key)
        if not match or not isinstance(body, dict):
            raise Malformed(f"{where}.possible_refinements[{position}]: unexpected key {key!r}")
        missing = [f for f in CANDIDATE_FIELDS if f not in body]
        if missing:
            raise Malformed(f"{where}.{key} lacks {', '.join(missing)}")
        k = int(match[1])
        if body["id"] != k or k in by_id:
            raise Malformed(f"{where}.{key}: id {body['id']!r} does not match the key or repeats")
        if not isinstance(body["refinement"], str) or not isinstance(body["raw_output"], str):
            raise Malformed(f"{where}.{key}: refinement and raw_output must be text")
        score = _score(body["avg_token_logp"], f"{where}.{key}.avg_token_logp")
        by_id[k] = Candidate(text=body["refinement"], raw=body["raw_output"],
                             score=None if score == NO_SCORE else score,
                             skipped_reason=NO_SCORE_REASON if score == NO_SCORE else None)
    if by_id and len(by_id) <= max(by_id):
        notes.append(f"{where}: {max(by_id) + 1 - len(by_id)} candidate(s) without <refine> were not kept "
                     "by the official code; recorded as skipped")
    return [by_id.get(k) or Candidate(text=None, raw="", score=None, skipped_reason=GAP_REASON)
            for k in range(max(by_id) + 1 if by_id else 0)]


def rollout_trace(entry: Any, rollout: int, item: dict, reference: str, provenance: dict,
                  notes: list[str]) -> SearchTrace:
    """One ``alist`` entry as our SearchTrace; raises :class:`Malformed` with the reason."""
    where = f"alist[{rollout}]"
    if not isinstance(entry, dict):
        raise Malformed(f"{where} is not an object")
    missing = [f for f in ROLLOUT_FIELDS if f not in entry]
    if missing:
        raise Malformed(f"{where} lacks {', '.join(missing)}")
    response, segments, ppl = entry["initial_response"], entry["thinking_segments"], entry["initial_ppl"]
    if not isinstance(response, str):
        raise Malformed(f"{where}.initial_response is not text")
    if not isinstance(segments, list) or not all(isinstance(s, str) for s in segments):
        raise Malformed(f"{where}.thinking_segments is not a list of text")
    if not isinstance(ppl, list) or not ppl:
        raise Malformed(f"{where}.initial_ppl is not a list [score, ...]")
    initial = _score(ppl[0], f"{where}.initial_ppl[0]")
    if initial == NO_SCORE:
        raise Malformed(f"{where}: {NO_SCORE_REASON} (initial_ppl {NO_SCORE})")
    if not isinstance(entry["ntokens"], int):
        raise Malformed(f"{where}.ntokens is not an integer")
    query = item["q"]
    generator = entry.get("generator") or item.get("generator") or "unrecorded"
    thinking = response.split("</think>")[0]
    trace = SearchTrace(
        item_id=str(provenance["uid"]), rollout=rollout,
        language=(ZH if item["is_chinese"] else EN) if isinstance(item.get("is_chinese"), bool)
        else prompt_language(query),
        seed=None, generator_model=str(generator), scorer_model=SCORER_UNRECORDED, prompt_set_version=SOURCE,
        config=provenance, opener=_opener(response), initial_raw=THINK_OPEN + response, initial_thinking=thinking,
        initial_closed="</think>" in response, initial_tokens=entry["ntokens"], initial_score=initial,
        initial_segments=list(segments))
    if "answer" in entry and entry["answer"] != answer_of(response):
        notes.append(f"{where}.answer differs from the text after </answer> (not kept)")
    numbers = sorted(int(m[1]) for key in entry if (m := _STEP.match(key)))
    if numbers != list(range(1, len(numbers) + 1)):
        raise Malformed(f"{where}: refine_thinking_step numbers are not 1..n: {numbers}")
    if len(numbers) > len(segments):
        raise Malformed(f"{where}: {len(numbers)} steps for {len(segments)} thinking segments")
    original = [s.strip() for s in segments]
    accepted: list[str] = []
    for number in numbers:
        key = f"refine_thinking_step_No.{number}"
        raw_step = entry[key]
        if not isinstance(raw_step, dict):
            raise Malformed(f"{where}.{key} is not an object")
        lacking = [f for f in STEP_FIELDS if f not in raw_step]
        if lacking:
            raise Malformed(f"{where}.{key} lacks {', '.join(lacking)}")
        i = number - 1
        candidates = _candidates(raw_step["possible_refinements"], f"{where}.{key}", notes)
        choice_text = raw_step["choice"]
        if choice_text == "original":
            choice = None
        elif isinstance(choice_text, str) and (m := _CHOICE.match(choice_text)):
            choice = int(m[1])
            if choice >= len(candidates) or candidates[choice].score is None:
                raise Malformed(f"{where}.{key}: choice {choice_text} names no scored candidate")
        else:
            raise Malformed(f"{where}.{key}: choice {choice_text!r} is neither 'original' nor 'refinement_No.<k>'")
        after_score = _score(raw_step["after_avg_token_logp"], f"{where}.{key}.after_avg_token_logp")
        chosen = candidates[choice].text if choice is not None else original[i]
        if raw_step["segment_to_refine"] != original[i]:
            notes.append(f"{where}.{key}.segment_to_refine differs from thinking_segments[{i}] (the latter kept)")
        if raw_step["chosen_refinement"] != chosen:
            notes.append(f"{where}.{key}.chosen_refinement differs from the chosen candidate (the candidate kept)")
        for k, cand in enumerate(candidates):
            body = next((e[f"expansion_No.{k}_of_segment"] for e in raw_step["possible_refinements"]
                         if f"expansion_No.{k}_of_segment" in e), None)
            if body is not None and body.get("raw_input_for_posterior") != posterior_input(
                    recomposed(accepted, cand.text or "", original[i + 1:]), reference):
                notes.append(f"{where}.{key}.expansion_No.{k}: raw_input_for_posterior differs from the recomposed "
                             "thinking and reference (not kept)")
        trace.steps.append(Step(index=i, segment=original[i], candidates=candidates, choice=choice,
                                best_score=after_score))
        accepted.append(chosen)  # type: ignore[arg-type]
    if numbers:
        if "finalized_avg_token_logp" not in entry or "corrected_thinking" not in entry:
            raise Malformed(f"{where} has refine steps but lacks corrected_thinking or finalized_avg_token_logp")
        final = _score(entry["finalized_avg_token_logp"], f"{where}.finalized_avg_token_logp")
        corrected = accepted + original[len(numbers):]
        if entry["corrected_thinking"] != corrected:
            notes.append(f"{where}.corrected_thinking differs from the steps' choices (rebuilt from the steps)")
        if final != trace.steps[-1].best_score:
            notes.append(f"{where}.finalized_avg_token_logp differs from the last step's after_avg_token_logp")
        edited = any(s.choice is not None for s in trace.steps)
        # the final thinking is the text the final score belongs to: z0 exactly when no rewrite was kept
        trace.final_thinking = SEPARATOR.join(corrected) if edited else thinking
        trace.final_score = final
        visited_all = len(numbers) == len(segments)
        trace.stopped_reason = "all_segments_visited" if visited_all else "stopped_before_last_segment"
    else:
        if "corrected_thinking" in entry or "finalized_avg_token_logp" in entry:
            notes.append(f"{where} has a finalized thinking but no refine steps (not kept)")
        trace.skipped_search = True
        trace.final_thinking, trace.final_score = thinking, initial
        trace.stopped_reason = "official_early_stop"
    n_scored = sum(1 for s in trace.steps for c in s.candidates if c.text is not None)
    trace.tokens = {"prompt": 0, "completion": entry["ntokens"], "scored": 0,
                    "generator_calls": 1 + len(trace.steps), "scorer_calls": 1 + n_scored}
    return trace


def rejected_trace(item: dict, rollout: int, provenance: dict, reason: str, query: str) -> SearchTrace:
    """A rollout that could not be read: kept as a rejected trajectory, so it is accounted for."""
    return SearchTrace(item_id=str(provenance["uid"]), rollout=rollout, language=prompt_language(query), seed=None,
                       generator_model=str(item.get("generator") or "unrecorded"), scorer_model=SCORER_UNRECORDED,
                       prompt_set_version=SOURCE, config=provenance, status="rejected",
                       reject_reason=f"official_rollout_malformed: {reason}",
                       stopped_reason="official_rollout_malformed")


def read_file(path: Path, domain: str) -> tuple[FileRecord, dict | None, dict | None, list[dict]]:
    """One official file: its record, and when imported its document row, query row and trajectory rows."""
    record = FileRecord(file=str(path), status="rejected", rank=rank_of(path.name))
    if (guess := _NAME_UID.search(path.name)) is not None:
        record.uid = guess["uid"]  # replaced by the document's own uid once it is read
    try:
        data = path.read_bytes()
    except OSError as exc:
        record.reason = f"unreadable: {exc.strerror or exc}"
        return record, None, None, []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        record.reason = f"not_utf8: byte {exc.start}"
        return record, None, None, []
    if not text.strip():
        record.reason = "empty_file"
        return record, None, None, []
    try:
        item = json.loads(text)
    except json.JSONDecodeError as exc:
        record.reason = f"invalid_json (truncated?): {exc.msg} at line {exc.lineno} column {exc.colno}"
        return record, None, None, []
    if not isinstance(item, dict):
        record.reason = "not_a_json_object"
        return record, None, None, []
    uid = item.get("uid")
    if uid is None and isinstance(item.get("extra_info"), dict):
        uid = item["extra_info"].get("index")
    record.uid = str(uid) if uid is not None else None
    if "alist" not in item:
        record.reason = "missing_alist: the official code had not finished this item (its own resume redoes it)"
        return record, None, None, []
    for name in ("q", "ref"):
        if not isinstance(item.get(name), str) or not item[name].strip():
            record.reason = f"missing_field: {name}"
            return record, None, None, []
    if record.uid is None:
        record.reason = "missing_field: uid (nor extra_info.index)"
        return record, None, None, []
    if not isinstance(item["alist"], list) or not item["alist"]:
        record.reason = "empty_alist" if isinstance(item["alist"], list) else "alist_not_a_list"
        return record, None, None, []
    uid, rank, query, reference = record.uid, record.rank, item["q"], item["ref"]
    if rank is None:
        record.notes.append("the file name is not {prefix}_{uid}_rk{rank}_meta.jsonl: rank unknown")
    prefix = file_prefix(path.name, uid, rank)
    if rank is not None and prefix is None:
        record.notes.append(f"the file name does not carry uid {uid}")
    language = prompt_language(query)
    if isinstance(item.get("is_chinese"), bool) and (ZH if item["is_chinese"] else EN) != language:
        record.notes.append("is_chinese disagrees with the CJK rule of docs/algorithm.md §1 (is_chinese kept)")
    provenance = {"imported": SOURCE, "file": path.name, "uid": uid, "rank": rank, "file_prefix": prefix,
                  "keys": list(item), "item": {k: v for k, v in item.items() if k not in ("q", "ref", "alist")}}
    # the official input's own solution may carry a published thinking before </think>: keep it beside ours
    published = split_solution(item["old_solution"])[1] if isinstance(item.get("old_solution"), str) else None
    doc_id = stable_id("doc", domain, SOURCE, uid, text_hash(reference), text_hash(query))
    document = DOCUMENTS.empty_row() | {
        "id": doc_id, "domain": domain, "reader": SOURCE, "source_uri": path.resolve().as_uri(), "source_id": uid,
        "language": language, "text": reference, "text_hash": text_hash(reference), "given_request": query,
        "source_meta": json.dumps({"imported": SOURCE, "file": path.name, "uid": uid, "rank": rank},
                                  ensure_ascii=False, sort_keys=True),
        "status": "accepted", "reject_reasons": [], "config_hash": CONFIG_HASH, "published_thinking": published}
    query_row = QUERIES.empty_row() | {
        "id": stable_id("query", doc_id, CONFIG_HASH), "document_id": doc_id, "domain": domain, "language": language,
        "query": query, "reference": reference, "synthesized": False, "status": "accepted", "reject_reasons": [],
        "config_hash": CONFIG_HASH, "published_thinking": published}
    rows = []
    for k, entry in enumerate(item["alist"]):
        try:
            trace = rollout_trace(entry, k, item, reference, provenance, record.notes)
        except Malformed as exc:
            trace = rejected_trace(item, k, provenance, str(exc), query)
            record.rejected_rollouts += 1
        traj_id = stable_id("traj", query_row["id"], rank, k, CONFIG_HASH)
        row = trajectory_row(query_row, traj_id, trace, CONFIG_HASH, 0.0)
        row["seconds"] = None  # not recorded by the official code
        rows.append(row)
        record.rollouts += 1
        record.early_stops += int(trace.status == "ok" and trace.skipped_search)
        record.steps += len(trace.steps)
        record.candidates += sum(len(s.candidates) for s in trace.steps)
    record.status = "imported"
    return record, document, query_row, rows


def expected_uids(input_path: Path) -> list[str]:
    """The uids an official run was given (its input: a JSON list with ``index``, or Parquet with
    ``extra_info.index``), so the items that have no output file can be named."""
    if input_path.suffix == ".parquet":
        import polars as pl

        frame = pl.read_parquet(input_path, columns=["extra_info"])
        return [str(v["index"]) for v in frame["extra_info"].to_list()]
    return [str(entry["index"]) for entry in json.loads(input_path.read_text(encoding="utf-8"))]


def import_paths(paths: Iterable[str | Path], domain: str, expected: Iterable[str] | None = None) -> ImportBatch:
    """Every official file under ``paths``; with ``expected`` uids, one ``absent`` record per uid without a file."""
    batch = ImportBatch(domain=domain)
    digest = hashlib.sha256()
    seen: dict[str, str] = {}
    for path in official_files(paths):
        digest.update(path.name.encode("utf-8") + b"\0")
        try:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        except OSError:
            pass
        record, document, query, rows = read_file(path, domain)
        batch.records.append(record)
        if record.status != "imported":
            continue
        if record.uid in seen:
            record.notes.append(f"uid {record.uid} is also in {seen[record.uid]}: both imported (rank in the id)")
        seen.setdefault(record.uid, path.name)  # type: ignore[arg-type]
        if all(d["id"] != document["id"] for d in batch.documents):
            batch.documents.append(document)
            batch.queries.append(query)
        batch.trajectories.extend(rows)
    for uid in expected or ():
        if str(uid) not in seen and all(r.uid != str(uid) for r in batch.records):
            batch.records.append(FileRecord(
                file="", status="absent", uid=str(uid),
                reason="no output file: the run stopped before this item, or the official code dropped it "
                       "(a rollout under 100 tokens or a one-segment thinking writes no file)"))
    batch.digest = digest.hexdigest()[:16]
    return batch


# --- writing ---------------------------------------------------------------------------------------

def rollout_entry(trace: SearchTrace, reference: str) -> dict[str, Any]:
    """Our SearchTrace as one official ``alist`` entry (key order as the official code writes it)."""
    response = trace.initial_raw[len(THINK_OPEN):] if trace.initial_raw.startswith(THINK_OPEN) else trace.initial_raw
    entry: dict[str, Any] = {
        "ntokens": trace.initial_tokens, "initial_response": response, "answer": answer_of(response),
        "initial_ppl": [trace.initial_score, []], "generator": trace.generator_model,
        "thinking_segments": list(trace.initial_segments)}
    if trace.skipped_search:
        return entry
    original = [s.strip() for s in trace.initial_segments]
    accepted: list[str] = []
    for step in trace.steps:
        i = step.index
        chosen = step.candidates[step.choice].text if step.choice is not None else original[i]
        possible = []
        for k, cand in enumerate(step.candidates):
            if cand.text is None:
                continue  # the official code keeps no candidate without <refine>
            thinking = recomposed(accepted, cand.text, original[i + 1:])
            possible.append({f"expansion_No.{k}_of_segment": {
                "id": k, "refinement": cand.text, "generator": trace.generator_model, "raw_output": cand.raw,
                "raw_input_for_posterior": posterior_input(thinking, reference),
                "avg_token_logp": NO_SCORE if cand.score is None else cand.score}})
        entry[f"refine_thinking_step_No.{i + 1}"] = {
            "segment_to_refine": step.segment.strip(), "choice": "original" if step.choice is None
            else f"refinement_No.{step.choice}", "chosen_refinement": chosen,
            "after_avg_token_logp": step.best_score, "possible_refinements": possible}
        accepted.append(chosen)  # type: ignore[arg-type]
    entry["corrected_thinking"] = accepted + original[len(trace.steps):]
    entry["finalized_avg_token_logp"] = trace.final_score
    return entry


def item_document(rows: list[dict]) -> tuple[str, dict[str, Any]]:
    """One query's trajectory rows (status ``ok``) as (file name, official document)."""
    first = rows[0]
    traces = [SearchTrace.from_json(r["trace_json"]) for r in rows]
    provenance = traces[0].config if traces[0].config.get("imported") == SOURCE else None
    query, reference = first["query"], first["reference"]
    alist = [rollout_entry(t, reference) for t in traces]
    if provenance:
        uid, rank, prefix = provenance["uid"], provenance["rank"], provenance["file_prefix"]
        values = {**provenance["item"], "q": query, "ref": reference, "alist": alist}
        document = {k: values[k] for k in provenance["keys"] if k in values}
        document.update({k: v for k, v in values.items() if k not in document})
        name = provenance["file"] if prefix is None else f"{prefix}_{uid}_rk{rank}_meta.jsonl"
        return name, document
    uid = first["query_id"]
    chinese = traces[0].language == ZH
    document = {"uid": uid, "old_solution": None, "is_chinese": chinese, "q": query, "ref": reference, "history": [],
                "question": query, "extra_info": {"index": uid},
                "gen_role": f"initial_thinking_{'cn' if chinese else 'en'}",
                "generator": traces[0].generator_model, "alist": alist}
    return f"reer_{uid}_rk0_meta.jsonl", document


def render(document: dict[str, Any]) -> str:
    """The file's text as the official code writes it."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def export_rows(rows: list[dict], out: Path) -> dict[str, Any]:
    """Write trajectory rows (our Parquet layout) as official files under ``out``, one per query.

    Rows that are not ``ok`` (rejected, failed) have no official form and are counted, not written.
    """
    out.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[dict]] = {}
    skipped: dict[str, int] = {}
    for row in rows:
        if row.get("status") != "ok" or not row.get("trace_json"):
            skipped[row.get("status") or "unknown"] = skipped.get(row.get("status") or "unknown", 0) + 1
            continue
        groups.setdefault(row["query_id"], []).append(row)
    files: list[str] = []
    for query_id in groups:
        name, document = item_document(sorted(groups[query_id], key=lambda r: r["rollout"]))
        if name in files:
            raise ValueError(f"two items would both be written to {name}")
        (out / name).write_text(render(document), encoding="utf-8")
        files.append(name)
    return {"format": SOURCE, "out": str(out), "files": files, "items": len(files),
            "rows": sum(len(g) for g in groups.values()), "not_written": skipped}
