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
from typing import TextIO

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

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.progress import Progress as RichProgress

    # rich's Console honours NO_COLOR itself; transient so the finished bar leaves no trace.
    console = Console(file=stream)
    bar = RichProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    task = bar.add_task(label, total=None)

    def update(done: int, total: int | None) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield update
