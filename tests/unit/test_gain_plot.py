"""refined_trajectories' gain per segment position: the numbers from a partition's search steps (the
same as sql/queries/search/1_gain_by_position.sql) and the plot embedded in its metadata."""

from __future__ import annotations

import base64
import io
import json

import polars as pl


def frames():
    # t1: 5 segments, steps at 0, 1, 2 (accepted at 0 and 2); t2: 2 segments, steps at 0 and 1 (none accepted)
    trajectories = pl.DataFrame({
        "id": ["t1", "t2", "t3"],
        "initial_score": [1.0, 0.8, None],
        "trace_json": [json.dumps({"initial_segments": ["a", "b", "c", "d", "e"]}),
                       json.dumps({"initial_segments": ["a", "b"]}),
                       json.dumps({"initial_segments": []})],  # rejected: no steps
    })
    steps = pl.DataFrame({
        "id": ["s1", "s2", "s3", "s4", "s5"],
        "trajectory_id": ["t1", "t1", "t1", "t2", "t2"],
        "step_index": pl.Series([0, 1, 2, 0, 1], dtype=pl.Int32),
        "segment": ["a", "b", "c", "a", "b"],
        "choice": pl.Series([1, None, 0, None, None], dtype=pl.Int32),
        "best_score": [0.9, 0.9, 0.6, 0.8, 0.8],
    })
    return trajectories, steps


def test_position_gains_groups_steps_by_fifth_of_the_thinking():
    from reer_assets.core.trajectories import position_gains

    gains = position_gains(*frames())
    rows = {r["position_fifth"]: r for r in gains.to_dicts()}
    # t1: step 0 -> fifth 0 (gain 0.1), step 1 -> fifth 1 (0), step 2 -> fifth 2 (0.3); t2: steps 0, 1 -> fifths 0, 2
    assert rows[0] == {"position_fifth": 0, "steps": 2, "accepted": 1, "mean_gain": 0.05}
    assert rows[1] == {"position_fifth": 1, "steps": 1, "accepted": 0, "mean_gain": 0.0}
    assert rows[2] == {"position_fifth": 2, "steps": 2, "accepted": 1, "mean_gain": 0.15}
    assert sorted(rows) == [0, 1, 2]


def test_gain_metadata_embeds_a_png_and_a_table():
    from PIL import Image

    from reer_assets.defs.refinement.assets import gain_metadata

    meta = gain_metadata("essays", *frames())
    table = meta["gain_by_position"].value
    assert table.splitlines()[0] == "| segment position | steps | accepted | mean gain |"
    assert "| 0-20% | 2 | 1 | 0.05 |" in table
    markdown = meta["gain_plot"].value
    assert markdown.startswith("![gain per segment position](data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(markdown.split(",", 1)[1].rstrip(")"))))
    assert image.format == "PNG" and image.size[0] > 200 and image.size[1] > 100


def test_no_steps_no_plot():
    from reer_assets.defs.refinement.assets import gain_metadata

    trajectories, steps = frames()
    meta = gain_metadata("essays", trajectories, steps.head(0))
    assert meta == {"gain_by_position": meta["gain_by_position"]} and "no search steps" in meta["gain_by_position"].value
