"""A progress bar for file transfers, shown only to a person watching a terminal.

Cron mail and `--json` output must stay free of it, so the bar exists only when stderr is a
terminal and the caller did not disable it. rich is imported only here, and only when a bar
is actually drawn: a cron run never pays for loading it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

# Same shape as campaign_sync.transfer.base.Progress; repeated to keep this module import-light.
Progress = Callable[[int, "int | None"], None]


def wanted(stream: TextIO | None = None, *, enabled: bool = True) -> bool:
    """Whether a bar should be drawn on `stream` (stderr by default)."""
    stream = stream if stream is not None else sys.stderr
    if not enabled or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


@contextmanager
def transfer_progress(
    label: str, *, enabled: bool = True, stream: TextIO | None = None
) -> Iterator[Progress | None]:
    """Yield a `(done, total)` callback that drives a rich bar, or None when none is wanted."""
    stream = stream if stream is not None else sys.stderr
    if not wanted(stream, enabled=enabled):
        yield None
        return

    rp = _rich()
    bar = _bar(
        stream,
        rp.BarColumn(),
        rp.DownloadColumn(),
        rp.TransferSpeedColumn(),
        rp.TimeRemainingColumn(),
    )
    task = bar.add_task(label, total=None)

    def update(done: int, total: int | None) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield update


# (items done so far, bytes of the input read so far or None)
Tick = Callable[[int, "int | None"], None]


@contextmanager
def work_progress(
    label: str,
    unit: str,
    *,
    total: int | None = None,
    size: int | None = None,
    enabled: bool = True,
    stream: TextIO | None = None,
) -> Iterator[Tick | None]:
    """Yield a `(done, read)` callback for long work (rows imported or written, messages
    sent), or None when no bar is wanted. With `size` (bytes of the input) the bar follows
    the bytes read, with rate and ETA; else it follows `done` of `total` when that is known.
    Callers tick once per batch, not per item: a tick costs a lock and a dict update."""
    stream = stream if stream is not None else sys.stderr
    if not wanted(stream, enabled=enabled):
        yield None
        return

    rp = _rich()
    counted = rp.TextColumn(f"{{task.fields[done]}} {unit}")
    columns: tuple[Any, ...]
    if size is not None:
        columns = (counted, rp.BarColumn(), rp.DownloadColumn(), rp.TransferSpeedColumn())
    elif total is not None:
        columns = (rp.BarColumn(), rp.MofNCompleteColumn(), rp.TextColumn(unit))
    else:
        columns = (counted,)  # no end known: no bar, no ETA
    if size is not None or total is not None:
        columns = (*columns, rp.TimeRemainingColumn())
    bar = _bar(stream, *columns)
    task = bar.add_task(label, total=size if size is not None else total, done=0)

    def update(done: int, read: int | None) -> None:
        completed = read if size is not None and read is not None else done
        bar.update(task, completed=completed, done=done)

    with bar:
        yield update


def _rich() -> Any:
    """rich.progress, imported only once a bar is to be drawn (cron never loads rich)."""
    import rich.progress

    return rich.progress


def _bar(stream: TextIO, *columns: Any) -> Any:
    """A rich Progress after the label column. rich's Console honours NO_COLOR itself;
    transient, so the finished bar leaves no trace."""
    from rich.console import Console

    rp = _rich()
    return rp.Progress(
        rp.TextColumn("{task.description}"),
        *columns,
        console=Console(file=stream),
        transient=True,
    )
