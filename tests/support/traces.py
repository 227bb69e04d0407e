"""Comparing search results across runs: exact for everything but scores, which get a tolerance.

Scores of the same text can differ in the last bits when a scorer batches requests differently
(a resumed item rescoring one candidate alone, say). docs/reliability.md states what "identical
after resume" means: the same ids, statuses, texts, choices and token counts, and scores equal
within SCORE_TOLERANCE.
"""

from __future__ import annotations

import math
from typing import Any

SCORE_TOLERANCE = 1e-6


def assert_same(a: Any, b: Any, path: str = "", tol: float = SCORE_TOLERANCE) -> None:
    """Recursive equality of JSON-like values; floats within ``tol`` (absolute)."""
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), f"{path}: {a!r} != {b!r}"
        assert math.isclose(a, b, rel_tol=0, abs_tol=tol), f"{path}: {a} != {b} (beyond {tol})"
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{path}.{key}", tol)
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        assert len(a) == len(b), f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]", tol)
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"
