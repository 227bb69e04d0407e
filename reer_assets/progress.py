"""Progress bars for the long `reer` commands (searching many items, ingesting, model builds).

Off unless the CLI turns them on (:func:`enable`), and then only when stderr is a terminal: bars go
to stderr, never stdout, and ``--json`` turns them off, so a command's output stays machine-readable.
Library code (the embedded model's training loop, the ingest pipeline) calls :func:`bar` and gets
a no-op when bars are off, as they always are inside Dagster runs and tests.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator

_state = {"enabled": False, "active": None}


def enable(on: bool = True) -> bool:
    """Turn bars on (when stderr is a TTY); returns whether they are on."""
    _state["enabled"] = bool(on and sys.stderr.isatty())
    return _state["enabled"]


def enabled() -> bool:
    return bool(_state["enabled"])


@contextmanager
def bar(description: str, total: int | None = None) -> Iterator[Callable[..., None]]:
    """``advance(n=1, description=None)`` for one task; a bar on stderr when on, else a no-op.

    A bar opened while another is showing joins it as a second line (a model build inside a search).
    """
    if not _state["enabled"]:
        yield lambda n=1, description=None: None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    outer = _state["active"]
    progress = outer or Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=Console(file=sys.stderr), transient=True, redirect_stdout=False)
    if outer is None:
        progress.start()
        _state["active"] = progress
    task = progress.add_task(description, total=total)

    def advance(n: int = 1, description: str | None = None) -> None:
        progress.update(task, advance=n, **({"description": description} if description else {}))

    try:
        yield advance
    finally:
        progress.remove_task(task)
        if outer is None:
            progress.stop()
            _state["active"] = None


def iterate(items, description: str, total: int | None = None):
    """``items`` one by one, advancing a bar (``total`` defaults to ``len(items)`` when it has one)."""
    if not _state["enabled"]:
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)
    with bar(description, total) as advance:
        for item in items:
            yield item
            advance()
