"""One exclusive file lock between processes (``fcntl.flock``), for work only one process may do at a time:
building an embedded model (``backends/embedded.py``), reclaiming dead runs (``runtime/recovery.py``)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # not POSIX: no lock (one process at a time is then the caller's to ensure)
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created with its folder when missing, never truncated) for the
    block; another process asking for the same path waits until it ends."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        if fcntl is None:
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
