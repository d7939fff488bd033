"""store.sqlite.parts.write_in_order with real child processes that speak its protocol.

The child here is a small script, not the export, so that its pace is under the test's
control: it reports its cut, waits for its range and then writes `chunks` chunks, `pause`
seconds apart. (The export's own child is exercised by tests/test_export.py.)
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from campaign_sync.store.sqlite.parts import ChildPart, write_in_order

CHILD = """
import json, os, sys, time
fd = int(sys.argv[-1])
plan = json.loads(sys.stdin.readline())
print("cut " + json.dumps(plan["cut"]), flush=True)
if not json.loads(sys.stdin.readline() or "null"):
    sys.exit(0)
print(os.getpid(), file=sys.stderr, flush=True)
end = 0
for n in range(plan["chunks"]):
    data = f"child-{n}".encode()
    os.pwrite(fd, data, end)
    print(f"{end} {len(data)} 1", flush=True)
    end += len(data)
    time.sleep(plan["pause"])
"""


class Recorder:
    def __init__(self, fail_on: str | None = None):
        self.written: list[str] = []
        self.fail_on = fail_on

    def write_packed(self, packed: str, count: int) -> None:
        if self.fail_on and packed.startswith(self.fail_on):
            raise ValueError(f"cannot write {packed}")
        self.written.append(packed)


def child(chunks: int, pause: float) -> ChildPart:
    plan = json.dumps({"cut": "m", "chunks": chunks, "pause": pause}).encode()
    return ChildPart([sys.executable, "-c", CHILD], plan)


def first_part() -> Callable[[Callable[[str], str]], Generator[tuple[str, int], None, None]]:
    """Part 0: waits until the child has reported (so the child has work), then one chunk."""

    def chunks(limit: Callable[[str], str]) -> Generator[tuple[str, int], None, None]:
        deadline = time.monotonic() + 30
        while limit("") == "z":  # 'z' is the end: no cut settled yet
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield "part-0", 1

    return chunks


def children_alive() -> list[int]:
    return [
        int(pid)
        for pid in os.listdir("/proc")
        if pid.isdigit() and _parent(int(pid)) == os.getpid() and _is_script(int(pid))
    ]


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _is_script(pid: int) -> bool:
    try:
        return b"-c" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


def writer_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "export-writer"]


def test_parts_are_written_in_order(tmp_path: Path):
    recorder = Recorder()
    write_in_order(recorder, first_part(), [child(3, 0)], "z", tmp_path)
    assert recorder.written == ["part-0", "child-0", "child-1", "child-2"]
    assert children_alive() == [] and writer_threads() == []


def test_a_writer_failure_in_a_child_part_stops_at_once(tmp_path: Path):
    recorder = Recorder(fail_on="child-1")
    start = time.monotonic()
    with pytest.raises(ValueError, match="cannot write child-1"):
        write_in_order(recorder, first_part(), [child(100, 0.1)], "z", tmp_path)
    # Without stopping at once it would wait for the child's 100 chunks (10 s).
    assert time.monotonic() - start < 5
    assert recorder.written == ["part-0", "child-0"]
    assert children_alive() == [] and writer_threads() == []


def test_an_interrupt_while_later_parts_are_written_kills_the_children(tmp_path: Path):
    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    # Part 0 is done within a second; the child then needs 10 s: the interrupt comes while
    # this thread waits for the writer.
    signal.setitimer(signal.ITIMER_REAL, 1.5)
    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            write_in_order(Recorder(), first_part(), [child(100, 0.1)], "z", tmp_path)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert 1.4 < time.monotonic() - start < 5
    assert children_alive() == [] and writer_threads() == []


def test_a_child_that_part_0_did_not_need_is_stopped(tmp_path: Path):
    def everything(limit: Callable[[str], str]) -> Iterator[tuple[str, int]]:
        yield "part-0", 1  # done before the child reports: it covered everything

    recorder = Recorder()
    write_in_order(recorder, everything, [child(3, 0)], "z", tmp_path)  # type: ignore[arg-type]
    assert recorder.written == ["part-0"]
    assert children_alive() == [] and writer_threads() == []
