"""Never pay for the same model call twice: scores and generations cached by content.

A search item that was interrupted half-way is searched again from the start on resume;
with seeded backends it asks for exactly the same calls, and these wrappers answer them
from a per-item JSON-lines file instead of the model. Scores are cached as raw token
log-probs, so the key needs no objective settings (clipping happens after the cache).

Keys hash the model id with the full request: the scorer model, the rendered messages,
the assistant-side prefix and the continuation; for generations also the prefill, ``n``,
the sampling settings and the seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable

from reer_assets.core.protocols import Completion, GenerationRequest, Generator, Scorer, ScoreRequest, ScoreResult


def _key(kind: str, model_id: str, payload: Any) -> str:
    blob = json.dumps([kind, model_id, payload], sort_keys=True, ensure_ascii=False, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()


class CallCache:
    """An append-only JSON-lines file of ``{"key", "value"}``, loaded into memory on open.

    Each record is flushed and fsynced as it is written, so a kill loses at most the call
    in progress; a torn last line (a crash mid-write) is ignored on load.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self.values: dict[str, Any] = {}
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        if self.path and self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a write cut short by a crash
                self.values[record["key"]] = record["value"]

    def get(self, key: str) -> Any | None:
        with self._lock:
            value = self.values.get(key)
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
            return value

    def put_many(self, items: Iterable[tuple[str, Any]]) -> None:
        items = list(items)
        with self._lock:
            for key, value in items:
                self.values[key] = value
            if self.path is None or not items:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                for key, value in items:
                    handle.write(json.dumps({"key": key, "value": value}, ensure_ascii=False) + "\n")
                handle.flush()
                os.fsync(handle.fileno())


def _through_cache(cache: CallCache, keys: list[str], requests: list, fetch: Callable[[list], list],
                   encode: Callable[[Any], Any]) -> tuple[list[Any], int]:
    """Stored values for ``keys``; the missing ones fetched in one call, encoded and stored.

    Returns the values in request order and how many requests reached ``fetch``.
    """
    values = [cache.get(k) for k in keys]
    missing = [i for i, value in enumerate(values) if value is None]
    if missing:
        fresh = [encode(answer) for answer in fetch([requests[i] for i in missing])]
        cache.put_many((keys[i], value) for i, value in zip(missing, fresh))
        for i, value in zip(missing, fresh):
            values[i] = value
    return values, len(missing)


class CachingScorer:
    """A Scorer that asks the wrapped one only for requests it has not seen."""

    def __init__(self, inner: Scorer, cache: CallCache):
        self.inner = inner
        self.cache = cache
        self.model_id = inner.model_id
        self.calls = 0  # requests that reached the wrapped scorer

    def key(self, request: ScoreRequest) -> str:
        return _key("score", self.model_id, [request.messages, request.prefix, request.continuation])

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        values, calls = _through_cache(self.cache, [self.key(r) for r in requests], requests, self.inner.score, asdict)
        self.calls += calls
        return [ScoreResult(**value) for value in values]


class CachingGenerator:
    """A Generator that replays seeded requests it has already answered."""

    def __init__(self, inner: Generator, cache: CallCache):
        self.inner = inner
        self.cache = cache
        self.model_id = inner.model_id
        self.calls = 0

    def key(self, request: GenerationRequest) -> str:
        return _key("generate", self.model_id, [request.messages, request.prefill, request.n,
                                                asdict(request.sampling), request.seed])

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        values, calls = _through_cache(self.cache, [self.key(r) for r in requests], requests, self.inner.generate,
                                       lambda completions: [asdict(c) for c in completions])
        self.calls += calls
        return [[Completion(**c) for c in value] for value in values]
