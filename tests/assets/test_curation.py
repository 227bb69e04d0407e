"""Curation logic on hand-made trajectory rows: every row kept, reasons recorded, best rollout wins."""

import json

import polars as pl

from reer_assets.core.chat_format import conversation
from reer_assets.core.curation import FilterConfig
from reer_assets.core.schemas import TRAJECTORIES
from reer_assets.core.chat_format import to_chat
from reer_assets.core.curation import filter_trajectories

TRAJECTORY_SCHEMA = TRAJECTORIES.schema

GOOD = ("Alright, the user wants a warm note for new neighbours, and I will keep it short and friendly. "
        "The reader is a family who just moved in, so I will mention the bakery and the park nearby.\n\n"
        "For structure I will open with a welcome, then two useful tips, then an invitation for tea. "
        "That should work; I'll write it now.")


REFERENCES = [
    "Rain fell on the harbour all night, and the ferries waited with their lights on.",
    "Welcome to the street! The bakery opens at seven and the park gate is behind the school.",
    "Our quarterly numbers show steady growth in the north and a dip in coastal stores.",
    "Mix two cups of flour with a pinch of salt, then add warm water slowly while stirring.",
    "The committee thanks every volunteer who repainted the library benches this spring.",
]


def trajectory(i, query_id, query, thinking=GOOD, status="ok", rollout=0, final=1.0):
    row = {k: None for k in TRAJECTORY_SCHEMA}
    trace = {"status": status, "reject_reason": None if status == "ok" else "initial_rollout_too_short",
             "initial_closed": True, "initial_score": 1.5, "final_score": final}
    row.update(id=f"t{i}", query_id=query_id, document_id=f"d{query_id}", domain="x", rollout=rollout, status=status,
               query=query, reference=REFERENCES[i % len(REFERENCES)],
               initial_score=1.5, final_score=final, final_thinking=thinking, trace_json=json.dumps(trace))
    return row


def test_filter_keeps_every_row_with_reasons():
    frame = pl.DataFrame([
        trajectory(1, "q1", "Write a welcome note for new neighbours."),
        trajectory(2, "q2", "Write a welcome note for new neighbours!"),  # near-duplicate query
        trajectory(3, "q3", "Describe the river at dawn.", thinking=GOOD + "\n</refine>"),
        trajectory(4, "q4", "Write a toast.", status="rejected"),
    ], schema=TRAJECTORY_SCHEMA)
    out = filter_trajectories(frame, FilterConfig(), "cfg")
    assert out.height == 4
    status = dict(zip(out["trajectory_id"], out["status"]))
    reasons = dict(zip(out["trajectory_id"], out["reject_reasons"].to_list()))
    assert status["t1"] == "accepted"
    assert any(r.startswith("near_duplicate_query:") for r in reasons["t2"])
    assert "malformed_tags:tag_inside_thinking" in reasons["t3"]
    assert reasons["t4"] == ["search_rejected:initial_rollout_too_short"]


def test_best_rollout_of_a_query_wins():
    frame = pl.DataFrame([
        trajectory(1, "q1", "Write a welcome note.", rollout=0, final=1.2),
        trajectory(2, "q1", "Write a welcome note.", rollout=1, final=0.9),
    ], schema=TRAJECTORY_SCHEMA)
    out = filter_trajectories(frame, FilterConfig(), "cfg").sort("trajectory_id")
    assert out["status"].to_list() == ["rejected", "accepted"]
    assert out["reject_reasons"][0].to_list()[0].startswith("worse_rollout_than:")


def test_chat_format():
    frame = filter_trajectories(pl.DataFrame([trajectory(1, "q1", "Write a note.")], schema=TRAJECTORY_SCHEMA),
                                FilterConfig(), "cfg")
    messages = to_chat(frame)["messages"][0].to_list()
    assert messages == conversation("Write a note.", GOOD, REFERENCES[1])  # the one inference format
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[2]["content"] == "<think>\n" + GOOD + "\n</think>\n<answer>\n" + REFERENCES[1] + "\n</answer>"


def test_not_empty_check_fails_when_every_row_is_rejected(tmp_path, monkeypatch):
    import dagster as dg

    from reer_assets.defs.curation.checks import filtered_dataset_not_empty
    from reer_assets.lib.storage import asset_dir

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    rejected = filter_trajectories(pl.DataFrame([trajectory(4, "q4", "Write a toast.", status="rejected")],
                                                schema=TRAJECTORY_SCHEMA), FilterConfig(), "cfg")
    out = asset_dir("filtered_dataset", "essays") / "dataset.parquet"
    out.parent.mkdir(parents=True)
    rejected.write_parquet(out)
    context = dg.build_asset_check_context()
    result = filtered_dataset_not_empty(context)
    assert not result.passed and result.metadata["accepted"].value == {"essays": 0}
