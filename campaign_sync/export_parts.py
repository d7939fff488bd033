"""Writing an export's packed chunks in order while child processes produce some of them.

A big recipient export spends most of its time inside SQLite (JSON extraction, status
checks). Threads do not help there: two connections in two threads of one process each
took 3.5x the CPU of one alone (SQLite, as Python links it, serialises them on a
process-wide lock), while two processes run side by side at full speed. So export.py cuts a
big list at a key into parts: part 0 is read in this process, each later part by a child
process, and this module writes every chunk strictly in order:

* part 0's chunks go from the reading thread to the writer thread through a short queue
  (the writer formats one chunk while SQLite produces the next);
* a child appends its chunks to a private spool file (unlinked from the start, so nothing
  is left behind by a crash; it gets the open file, not a name) and reports each one as a
  line "offset length count" on its stdout; the writer takes them up, in order, once the
  parts before are written.

Memory stays flat: spooled text lives on disk, and only the child's short lines pass
through pipes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Generator, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from queue import Queue
from typing import IO, Protocol

from .errors import StoreError

QUEUED_CHUNKS = 4  # chunks of part 0 waiting for the writer thread

Chunk = tuple[str, int]  # rows packed by SQLite, and how many


class ChunkWriter(Protocol):
    def write_packed(self, packed: str, count: int) -> None: ...


@dataclass
class ChildPart:
    """A later part: the command that produces it (given the spool's descriptor number as
    its last argument) and what to send on its stdin."""

    argv: list[str]
    stdin: bytes
    env: dict[str, str] | None = None


class _Spooled:
    """One child process producing a part into its spool file."""

    def __init__(self, part: ChildPart, number: int, folder: Path):
        self.number = number
        self._spool: IO[bytes] = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115
        self._errors: IO[bytes] = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115
        fd = self._spool.fileno()
        self._process = subprocess.Popen(
            [*part.argv, str(fd)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._errors,
            pass_fds=(fd,),
            env=part.env,
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._refs = self._process.stdout
        # Written from a thread: a spec bigger than the pipe must not block this one.
        threading.Thread(target=self._send, args=(part.stdin,), daemon=True).start()

    def _send(self, data: bytes) -> None:
        stdin = self._process.stdin
        assert stdin is not None
        try:
            stdin.write(data)
            stdin.close()
        except OSError:
            pass  # the child died; chunks() reports why

    def chunks(self) -> Iterator[Chunk]:
        """The part's chunks in order, each as soon as the child has written it."""
        for line in self._refs:
            start, length, count = (int(word) for word in line.split())
            yield _read(self._spool.fileno(), start, length).decode("utf-8"), count
        if self._process.wait() != 0:
            self._errors.seek(0)
            lines = self._errors.read().decode("utf-8", "replace").strip().splitlines()
            reason = lines[-1] if lines else f"exit status {self._process.returncode}"
            raise StoreError(f"export part {self.number} failed: {reason}")

    def kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()

    def close(self) -> None:
        self.kill()
        self._process.wait()
        self._refs.close()
        self._spool.close()
        self._errors.close()


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


def write_in_order(
    writer: ChunkWriter,
    first: Generator[Chunk, None, None],
    later: list[ChildPart],
    spool_dir: Path,
) -> None:
    """Write every chunk of `first` (read in this thread), then of each later part.

    The children start at once and run meanwhile. The first error anywhere stops the
    export and is raised here; so is an interrupt of this thread (the children are killed).
    """
    stop = threading.Event()
    failed: list[BaseException] = []
    direct: Queue[Chunk | None] = Queue(maxsize=QUEUED_CHUNKS)
    children: list[_Spooled] = []

    def fail(exc: BaseException) -> None:
        failed.append(exc)
        stop.set()

    def write(chunks: Iterator[Chunk]) -> None:
        for chunk in chunks:
            if not stop.is_set():
                try:
                    writer.write_packed(*chunk)
                except BaseException as exc:
                    fail(exc)

    def drain() -> None:
        # Always read part 0's queue to its end, so the reading thread never blocks on a
        # full queue after a failure here.
        write(iter(direct.get, None))
        for child in children:
            if stop.is_set():
                return
            try:
                write(child.chunks())
            except BaseException as exc:
                fail(exc)

    worker = threading.Thread(target=drain, name="export-writer", daemon=True)
    try:
        for number, part in enumerate(later, start=1):
            children.append(_Spooled(part, number, spool_dir))
        worker.start()
        with closing(first):
            for chunk in first:
                if stop.is_set():
                    break
                direct.put(chunk)
    except BaseException as exc:
        fail(exc)
    finally:
        direct.put(None)
        if failed:
            for child in children:
                child.kill()  # a writer waiting for a child's next line gets its end
        if worker.ident is not None:
            worker.join()
        for child in children:
            child.close()
    if failed:
        raise failed[0]


def serve_part(chunks: Iterator[Chunk], spool_fd: int) -> None:
    """The child's side: append each chunk to the spool, then report it on stdout."""
    end = 0
    for packed, count in chunks:
        data = memoryview(packed.encode("utf-8"))
        start = end
        while data:
            written = os.pwrite(spool_fd, data, end)
            end += written
            data = data[written:]
        sys.stdout.write(f"{start} {end - start} {count}\n")
        sys.stdout.flush()
