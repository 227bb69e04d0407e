"""Stable ids: a short hash of content and config, so the same inputs always get the same id."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def config_hash(config: Any) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()[:16]


def stable_id(prefix: str, *parts: Any) -> str:
    payload = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return f"{prefix}_{hashlib.sha256(payload.encode()).hexdigest()[:20]}"
