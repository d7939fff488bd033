"""Writing an export's packed chunks in order while several connections produce them.

A big recipient export spends most of its time inside SQLite (JSON extraction, status
checks), and SQLite releases the GIL while it steps through a query: one connection keeps
one core busy. So export.py cuts a big list at a key into parts, each read by a connection
of its own, and this module writes their chunks strictly in order:

* part 0 is read in the calling thread and handed to the writer thread through a short
  queue (the writer formats one chunk while SQLite produces the next);
* every later part is read in a thread of its own into a private spool file (unlinked at
  once, so nothing is left behind by a crash); the writer takes it up when the parts before
  it are written.

Memory stays flat: a spool holds packed text on disk and only (offset, length, count)
references in memory.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Generator, Iterator
from contextlib import closing
from pathlib import Path
from queue import Queue
from typing import IO, Protocol

QUEUED_CHUNKS = 4  # chunks of part 0 waiting for the writer thread

Chunk = tuple[str, int]  # rows packed by SQLite, and how many


class ChunkWriter(Protocol):
    def write_packed(self, packed: str, count: int) -> None: ...


class _Spool:
    """Chunks of one part on disk, readable while they are still being written."""

    def __init__(self, folder: Path):
        self._file: IO[bytes] = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115
        self._fd = self._file.fileno()
        self._end = 0
        self._refs: Queue[tuple[int, int, int] | None] = Queue()

    def put(self, packed: str, count: int) -> None:
        data = memoryview(packed.encode("utf-8"))
        start = self._end
        while data:
            written = os.pwrite(self._fd, data, self._end)
            self._end += written
            data = data[written:]
        self._refs.put((start, self._end - start, count))

    def finish(self) -> None:
        self._refs.put(None)

    def chunks(self) -> Iterator[Chunk]:
        """The chunks in order, waiting for each until the part's thread has finished."""
        while (ref := self._refs.get()) is not None:
            start, length, count = ref
            yield self._read(start, length).decode("utf-8"), count

    def _read(self, start: int, length: int) -> bytes:
        pieces = []
        while length:
            piece = os.pread(self._fd, length, start)
            if not piece:
                raise OSError(f"spool file ended early at byte {start}")
            pieces.append(piece)
            start += len(piece)
            length -= len(piece)
        return b"".join(pieces)

    def close(self) -> None:
        self._file.close()


def write_in_order(
    writer: ChunkWriter, parts: list[Generator[Chunk, None, None]], spool_dir: Path
) -> None:
    """Write every chunk of parts[0], then of parts[1], … with `writer`.

    parts[0] is iterated in this thread; each later part in a thread of its own (a part that
    opens a connection must open it inside its iterator, in that thread). The first error
    anywhere stops every thread and is raised here; so is an interrupt of this thread.
    """
    stop = threading.Event()
    failed: list[BaseException] = []
    spools = [_Spool(spool_dir) for _ in parts[1:]]
    direct: Queue[Chunk | None] = Queue(maxsize=QUEUED_CHUNKS)

    def fail(exc: BaseException) -> None:
        failed.append(exc)
        stop.set()

    def fill(part: Generator[Chunk, None, None], spool: _Spool) -> None:
        try:
            with closing(part):  # here: its connection belongs to this thread
                for chunk in part:
                    if stop.is_set():
                        break
                    spool.put(*chunk)
        except BaseException as exc:  # handed to the calling thread, raised there
            fail(exc)
        finally:
            spool.finish()

    def drain() -> None:
        # Always read part 0's queue to its end, so the calling thread never blocks on a
        # full queue after a failure here.
        for chunk in iter(direct.get, None):
            if not stop.is_set():
                try:
                    writer.write_packed(*chunk)
                except BaseException as exc:
                    fail(exc)
        for spool in spools:
            for chunk in spool.chunks():
                if not stop.is_set():
                    try:
                        writer.write_packed(*chunk)
                    except BaseException as exc:
                        fail(exc)

    threads = [
        threading.Thread(target=fill, args=(part, spool), name=f"export-part-{n}", daemon=True)
        for n, (part, spool) in enumerate(zip(parts[1:], spools, strict=True), start=1)
    ]
    threads.append(threading.Thread(target=drain, name="export-writer", daemon=True))
    for thread in threads:
        thread.start()
    try:
        for chunk in parts[0]:
            if stop.is_set():
                break
            direct.put(chunk)
    except BaseException as exc:
        fail(exc)
    finally:
        direct.put(None)
        for thread in threads:
            thread.join()
        for spool in spools:
            spool.close()
    if failed:
        raise failed[0]
