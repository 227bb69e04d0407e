"""Durable files: a write that after a crash is either absent or complete (``workloads/common.py``'s item
checkpoints, ``backends/batch.py``'s batch files), and the folder fsync that makes a rename survive a power loss."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Make a rename (or a new file) in ``folder`` durable: fsync the directory itself."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary name in the same folder, fsync it, rename it over ``path``, then fsync
    the folder, so that after a crash ``path`` is either absent or complete, and once this
    returns it survives a power loss too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
