"""How well a generator follows the engine's formats on the bundled items.

Runs the real search with one step per item and counts: initial thinking that closes
``</think>``, and segment-edit outputs that hold a parseable ``<refine>`` block.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from reer_assets import data
from reer_assets.core.refinement import ReerSearch, SearchConfig, SearchItem


@dataclass
class FormatReport:
    items: int
    think_closed: int
    edit_outputs: int
    edit_parsed: int
    items_edited: int  # items whose initial thinking was usable, so the search asked for edits
    items_with_refine: int
    seconds: float

    def as_dict(self) -> dict:
        return {
            "items": self.items,
            "think_closed_rate": round(self.think_closed / max(1, self.items), 3),
            "refine_output_rate": round(self.edit_parsed / max(1, self.edit_outputs), 3),
            "items_with_refine_rate": round(self.items_with_refine / max(1, self.items), 3),
            "edited_items": self.items_edited,
            "edited_items_with_refine_rate": round(self.items_with_refine / max(1, self.items_edited), 3),
            "seconds_per_item": round(self.seconds / max(1, self.items), 2),
        }


def bundled_items(limit: int | None = None) -> list[SearchItem]:
    items = [SearchItem(p["id"], p["request"], p["text"]) for p in data.corpus()]
    return items[:limit] if limit else items


def check_formats(generator, scorer, max_tokens: int = 768, limit: int | None = None, seed: int = 0) -> FormatReport:
    config = SearchConfig(max_step=1, num_expansion=2, max_tokens=max_tokens, edit_max_tokens=400,
                          stop_thresh=0.0, min_rollout_tokens=1)
    search = ReerSearch(generator, scorer, config, seed=seed)
    report = FormatReport(0, 0, 0, 0, 0, 0, 0.0)
    started = time.perf_counter()
    for item in bundled_items(limit):
        trace = search.run(item)
        report.items += 1
        report.think_closed += int(trace.initial_closed)
        outputs = [c for step in trace.steps for c in step.candidates]
        report.edit_outputs += len(outputs)
        report.edit_parsed += sum(1 for c in outputs if c.text is not None)
        report.items_edited += int(bool(outputs))
        report.items_with_refine += int(any(c.text is not None for c in outputs))
    report.seconds = time.perf_counter() - started
    return report
