"""Writing an export's packed chunks in order while child processes produce some of them.

A big recipient export spends most of its time inside SQLite (JSON extraction, status
checks). Threads do not help there: two connections in two threads of one process each
took 3.5x the CPU of one alone (SQLite, as Python links it, serialises them on a
process-wide lock), while two processes run side by side at full speed. So exports.py reads
a big list in parts, keyed on the address: part 0 in this process, each later part in a
child process, and this module writes every chunk strictly in order.

Where the parts meet is settled while part 0 already runs (`Handover`): finding a cut
means counting the list, so each child counts and reports the key its part would start
after; at part 0's next chunk boundary every part gets its final range.

The child protocol: its stdin brings the plan (one JSON line, exports.py's business) and
later its range (one JSON line); its stdout reports ``cut <json key>``, then one line
``offset length count`` per chunk appended to the spool file, a private temporary file it
gets as an open descriptor (unlinked from the start: a crash leaves nothing behind). The
writer thread takes chunks up in order: part 0's through a short queue from the reading
thread, a child's from its spool once the parts before it are written. Memory stays flat.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path
from queue import Queue
from typing import IO, Protocol

from ...errors import StoreError

QUEUED_CHUNKS = 4  # chunks of part 0 waiting for the writer thread

Chunk = tuple[str, int]  # rows packed by SQLite, and how many


class ChunkWriter(Protocol):
    def write_packed(self, packed: str, count: int) -> None: ...


@dataclass
class ChildPart:
    """A later part: the command that produces it (given the spool's descriptor number as
    its last argument), the plan line for its stdin, and the folder it runs in."""

    argv: list[str]
    plan: bytes
    cwd: str | None = None


class _Child:
    """One child process producing a part into its spool file."""

    def __init__(self, part: ChildPart, number: int, folder: Path):
        self.number = number
        self.cut: str | None = None
        self.reported = threading.Event()  # the cut is known, or the child is gone
        self.skipped = False
        self._spool: IO[bytes] = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115
        self._errors: IO[bytes] = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115
        fd = self._spool.fileno()
        try:
            self._process = subprocess.Popen(
                [*part.argv, str(fd)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._errors,
                pass_fds=(fd,),
                cwd=part.cwd,
            )
        except BaseException:
            self._spool.close()
            self._errors.close()
            raise
        assert self._process.stdin is not None and self._process.stdout is not None
        self._stdin, self._stdout = self._process.stdin, self._process.stdout
        # From a thread: a plan bigger than the pipe must not block this one.
        threading.Thread(target=self._start, args=(part.plan,), daemon=True).start()

    def _start(self, plan: bytes) -> None:
        try:
            self._stdin.write(plan.rstrip(b"\n") + b"\n")
            self._stdin.flush()
            line = self._stdout.readline().decode("utf-8")
            if line.startswith("cut "):
                self.cut = json.loads(line[4:])
        except (OSError, ValueError):
            pass  # the child died: chunks() reports why
        finally:
            self.reported.set()

    def send_range(self, after: str, last: str) -> None:
        """Start the part on the keys after `after` up to `last`."""
        try:
            self._stdin.write(json.dumps({"after": after, "last": last}).encode() + b"\n")
            self._stdin.close()
        except OSError:
            pass  # the child died: chunks() reports why

    def skip(self) -> None:
        """Part 0 covered everything before this child reported: it has nothing to do."""
        self.skipped = True
        self.kill()

    def chunks(self) -> Iterator[Chunk]:
        """The part's chunks in order, each as soon as the child has written it."""
        if self.skipped:
            return
        for line in self._stdout:
            start, length, count = (int(word) for word in line.split())
            yield _read(self._spool.fileno(), start, length).decode("utf-8"), count
        if self._process.wait() != 0:
            raise StoreError(f"export part {self.number} failed: {self.reason()}")

    def reason(self) -> str:
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "no answer"
        self._errors.seek(0)
        lines = self._errors.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else f"exit status {self._process.returncode}"

    def kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()

    def close(self) -> None:
        self.kill()
        self._process.wait()
        for stream in (self._stdin, self._stdout, self._spool, self._errors):
            with suppress(OSError):
                stream.close()


def _read(fd: int, start: int, length: int) -> bytes:
    pieces = []
    while length:
        piece = os.pread(fd, length, start)
        if not piece:
            raise StoreError(f"export spool file ended early at byte {start}")
        pieces.append(piece)
        start += len(piece)
        length -= len(piece)
    return b"".join(pieces)


class Handover:
    """Where part 0 ends and each child's part lies, settled while part 0 runs.

    Part 0 asks `limit(progress)` before each chunk, with the last key it has written
    ('' at first). Until every child has reported its cut the answer is `end` (no limit);
    at the first chunk boundary after that the parts are settled: each starts after its
    cut or after what part 0 has already written, whichever is later, and ends where the
    next one starts (the last at `end`).
    """

    def __init__(self, children: list[_Child], end: str):
        self._children = children
        self._end = end
        self._part0_last: str | None = None

    @property
    def settled(self) -> bool:
        return self._part0_last is not None

    def limit(self, progress: str) -> str:
        if self._part0_last is None and all(c.reported.is_set() for c in self._children):
            self._settle(progress)
        return self._end if self._part0_last is None else self._part0_last

    def finish(self) -> None:
        """Part 0 has ended: if it was never limited it covered everything."""
        if self._part0_last is None:
            self._part0_last = self._end
            for child in self._children:
                child.skip()

    def _settle(self, progress: str) -> None:
        for child in self._children:
            if child.cut is None:
                raise StoreError(f"export part {child.number} failed: {child.reason()}")
        starts = [max(child.cut or "", progress) for child in self._children]
        ends = [*starts, self._end]
        self._part0_last = ends[0]
        for child, after, last in zip(self._children, ends, ends[1:], strict=False):
            child.send_range(after, last)


def write_in_order(
    writer: ChunkWriter,
    first: Callable[[Callable[[str], str]], Generator[Chunk, None, None]],
    later: list[ChildPart],
    end: str,
    spool_dir: Path,
) -> None:
    """Write every chunk of part 0, then of each later part, `end` being the last key.

    `first(limit)` gives part 0's chunks, read in this thread; it calls `limit(progress)`
    before each chunk for the last key it may go up to (see Handover). The children start
    at once and run meanwhile. The first error anywhere stops the export and is raised
    here; so is an interrupt of this thread (the children are killed).
    """
    stop = threading.Event()
    failed: list[BaseException] = []
    direct: Queue[Chunk | None] = Queue(maxsize=QUEUED_CHUNKS)
    children: list[_Child] = []

    def fail(exc: BaseException) -> None:
        failed.append(exc)
        stop.set()

    def write(chunks: Iterator[Chunk], *, to_the_end: bool) -> None:
        for chunk in chunks:
            if stop.is_set():
                if to_the_end:
                    continue
                return
            try:
                writer.write_packed(*chunk)
            except BaseException as exc:
                fail(exc)

    def drain() -> None:
        # Always read part 0's queue to its end, so the reading thread never blocks on a
        # full queue after a failure here; a child's part is dropped at once.
        write(iter(direct.get, None), to_the_end=True)
        for child in children:
            if stop.is_set():
                return
            try:
                write(child.chunks(), to_the_end=False)
            except BaseException as exc:
                fail(exc)

    worker = threading.Thread(target=drain, name="export-writer", daemon=True)
    try:
        for number, part in enumerate(later, start=1):
            children.append(_Child(part, number, spool_dir))
        handover = Handover(children, end)
        worker.start()
        with closing(first(handover.limit)) as chunks:
            for chunk in chunks:
                if stop.is_set():
                    break
                direct.put(chunk)
        handover.finish()
    except BaseException as exc:
        fail(exc)
    try:
        direct.put(None)
        if failed:
            _kill(children)  # a writer waiting for a child's next line gets its end
        if worker.ident is not None:
            worker.join()  # the later parts are written meanwhile
    except BaseException as exc:  # an interrupt while they are
        fail(exc)
        _kill(children)
        if worker.ident is not None:
            worker.join()
    finally:
        for child in children:
            child.close()
    if failed:
        raise failed[0]


def _kill(children: list[_Child]) -> None:
    for child in children:
        child.kill()


def serve_part(cut: str, chunks: Callable[[str, str], Iterator[Chunk]], spool_fd: int) -> None:
    """The child's side, after reading its plan: report `cut`, wait for the range, then
    append each chunk to the spool and report it on stdout."""
    sys.stdout.write(f"cut {json.dumps(cut)}\n")
    sys.stdout.flush()
    settled = json.loads(sys.stdin.readline() or "null")
    if not settled:
        return  # the parent is gone
    end = 0
    for packed, count in chunks(settled["after"], settled["last"]):
        data = memoryview(packed.encode("utf-8"))
        start = end
        while data:
            written = os.pwrite(spool_fd, data, end)
            end += written
            data = data[written:]
        sys.stdout.write(f"{start} {end - start} {count}\n")
        sys.stdout.flush()
