"""SIGINT and SIGTERM during a run: where they stop it, and where they are only noted.

What a run reports is decided by what the store holds, never by where a signal happened
to land. The windows, in the order a run passes them:

1. Before the run is recorded (waiting for a busy store, writing the `running` row): a
   signal stops it; nothing changed ("interrupted before anything was changed", exit 1).
2. The work, up to the COMMIT of its changes: a signal raises KeyboardInterrupt, the open
   transaction is rolled back, and the run is recorded `interrupted` (exit 1).
3. The COMMIT itself: a signal cannot land inside it. Python runs handlers between
   bytecodes, so KeyboardInterrupt comes either before `execute("COMMIT")` starts (window 2)
   or after it returned (window 4); a read or write the signal interrupts at the system
   level is retried by SQLite. A failing COMMIT is a store error, not an interrupt.
4. After the COMMIT returned, the run is succeeded whatever lands next: the after-actions
   (archiving the source), the notices, closing the connection, printing the result. An
   interrupt in the after-actions still raises (they are cut short); the runner then asks
   the store, finds the run succeeded and keeps it so, with a warning (exit 0).

Window 4 also holds the answer to "what happened": reading the run's row, recording the
outcome, closing the store, printing. A second signal there must not cut that short, so
outside `interruptible()` blocks a signal is only noted. The blocks are the work (windows
1-2 and the after-actions) and the notices: slow steps a signal must be able to stop.
A noted signal stops the next interruptible block at its start, and one that had nothing
left to stop becomes a warning (`late()`).

Without `install()` (the engine called from Python, not from the CLI) Python's own SIGINT
handling applies and these blocks change nothing.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class _State:
    raising = False  # inside an interruptible() block
    noted: list[str] = []  # signals that arrived outside one, not acted on yet
    seen = 0  # signals handled so far, acted on or not


_state = _State()


def install() -> None:
    """Route SIGINT and SIGTERM (cron's `timeout`) through this module."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _handle)


def _handle(signum: int, _frame: FrameType | None) -> None:
    _state.seen += 1
    if _state.raising:
        raise KeyboardInterrupt
    _state.noted.append(signal.Signals(signum).name)


@contextmanager
def interruptible() -> Iterator[None]:
    """A block a signal may stop with KeyboardInterrupt; one noted before it stops it at
    once. The caller handles the KeyboardInterrupt (it can also come as the block ends)."""
    outer = _state.raising
    _state.raising = True
    try:
        if _state.noted:
            _state.noted.clear()
            raise KeyboardInterrupt
        yield
    finally:
        _state.raising = outer


def seen() -> int:
    """How many signals have arrived so far: a run of several files compares it after each
    file, since a signal that ended one file's run (or came while its notice went out)
    must stop the files after it too."""
    return _state.seen


def late() -> str | None:
    """A warning for signals noted since the last look that nothing acted on (the run had
    ended), or None; the next look starts afresh."""
    if not _state.noted:
        return None
    names = " and ".join(dict.fromkeys(_state.noted))
    _state.noted.clear()
    return f"{names} arrived after the run had ended; it stopped nothing"
