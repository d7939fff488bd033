"""Shared helpers for the reliability suite: run this tree's CLI as a child, kill it, inspect.

The `campaign-sync` on PATH may be an editable install of another checkout, so children are
started through a shim directory whose `campaign_sync` and `campaign_sync_cli` entries are
symlinks into this tree: whatever is installed, the code under test is the code next to this
file.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TREE = Path(__file__).resolve().parent.parent
BENCH_GEN = TREE / "bench" / "gen_recipients.py"

# Every child's exit code, by name, as docs/commands.md documents them.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_MISSING, EXIT_LOCKED = 0, 1, 2, 3, 75

_SHIM: Path | None = None


def shim_dir() -> Path:
    """A directory that makes `import campaign_sync_cli` resolve to this tree's cli/."""
    global _SHIM
    if _SHIM is None:
        folder = Path(tempfile.mkdtemp(prefix="campaign-sync-shim-"))
        (folder / "campaign_sync").symlink_to(TREE / "campaign_sync")
        (folder / "campaign_sync_cli").symlink_to(TREE / "cli")
        _SHIM = folder
    return _SHIM


def cli_argv(*args: str, signal_at: str | None = None) -> list[str]:
    """argv that runs this tree's `campaign-sync` with `args`, as cron would run the script;
    with `signal_at`, the child sends itself SIGTERM at that point (see arm_signal)."""
    arm = (
        f"sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        f"import faults; faults.arm_signal({signal_at!r}); "
        if signal_at
        else ""
    )
    code = (
        f"import sys; sys.path.insert(0, {str(shim_dir())!r}); "
        "sys.argv[0] = 'campaign-sync'; "
        f"{arm}from campaign_sync_cli.main import main; main()"
    )
    return [sys.executable, "-c", code, *args]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: plain output (no terminal), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGN_SYNC")}
    env.update({"NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "200"})
    env.update(extra or {})
    return env


def run_cli(
    config: Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    stdin: bytes | None = None,
    signal_at: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_argv("--config", str(config), *args, signal_at=signal_at),
        capture_output=True,
        text=True,
        env=child_env(env),
        timeout=timeout,
        input=stdin.decode() if stdin is not None else None,
    )


def start_cli(
    config: Path, *args: str, env: dict[str, str] | None = None, **kw: Any
) -> subprocess.Popen[str]:
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(
        cli_argv("--config", str(config), *args), text=True, env=child_env(env), **kw
    )


def assert_no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    for stream in (proc.stdout, proc.stderr):
        assert "Traceback (most recent call last)" not in stream, stream[-3000:]


def json_out(proc: subprocess.CompletedProcess[str]) -> Any:
    """The one JSON document a --json run printed on stdout."""
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(
            f"stdout is not one JSON document (exit {proc.returncode}):\n"
            f"{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-2000:]}"
        ) from None


# --------------------------------------------------------------------------- a signal at a point


# Where a run can be told to stop, in the order it passes them. Each is a real moment of a
# real run; the signal is raised in the process itself (signal.raise_signal runs the handler
# before it returns), so it lands exactly there, every time.
SIGNAL_POINTS = (
    "start",  # recording the run as `running`
    "before-commit",  # the import's data and its `succeeded` record written, not committed
    "after-commit",  # that COMMIT has just returned
    "after-action",  # archiving or deleting the source file
    "finishing",  # recording the outcome and logging it
    "notice",  # sending the notices
    "close",  # closing the store's connection
    "output",  # printing the result
)


def arm_signal(point: str) -> None:
    """In a child about to run the CLI: SIGTERM itself once, at `point` of SIGNAL_POINTS."""
    assert point in SIGNAL_POINTS, point
    fired: list[str] = []

    def fire(at: str) -> None:
        if at == point and not fired:
            fired.append(at)
            signal.raise_signal(signal.SIGTERM)

    _signal_at_commit(fire)
    from campaign_sync_cli import output

    from campaign_sync.ops import notify, runner
    from campaign_sync.store.sqlite import runs

    for module, name, at in (
        (runs, "start", "start"),
        (runner, "_after", "after-action"),
        (runner, "_close", "finishing"),
        (notify, "notify", "notice"),
        (output, "show_run", "output"),
    ):
        _signal_on_entry(module, name, lambda at=at: fire(at))


def _signal_on_entry(module: Any, name: str, fire: Any) -> None:
    original = getattr(module, name)

    def entered(*args: Any, **kwargs: Any) -> Any:
        fire()
        return original(*args, **kwargs)

    setattr(module, name, entered)


def _signal_at_commit(fire: Any) -> None:
    """Connections that signal around the COMMIT that makes a run `succeeded`, and in close."""

    class Connection(sqlite3.Connection):
        finishing = False  # the open transaction records a succeeded run

        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if sql.startswith("UPDATE runs SET status = ?") and args[0][0] == "succeeded":
                self.finishing = True
            if sql != "COMMIT" or not self.finishing:
                return super().execute(sql, *args)
            fire("before-commit")
            cursor = super().execute(sql, *args)
            self.finishing = False
            fire("after-commit")
            return cursor

        def close(self) -> None:
            fire("close")
            super().close()

    connect = sqlite3.connect

    def connect_signalling(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        return connect(*args, factory=Connection, **kwargs)

    sqlite3.connect = connect_signalling  # type: ignore[assignment]


# --------------------------------------------------------------------------- kill mid-run

# Kill moments are measured in the child's own progress, not in seconds: the bytes it has read
# and written so far (rchar + wchar of /proc/PID/io: source files, the CSV, the store, the WAL,
# sockets). The same run does the same I/O on a fast machine and on a loaded one, so a kill
# aimed at 40 % of a reference run's I/O lands in the same phase whatever the clock says, and
# a trial cannot miss the run because a neighbour slowed it down.

POLL_SECONDS = 0.001


@dataclass
class Kill:
    """One kill: where it was aimed and what the child did before it died."""

    at_bytes: int
    returncode: int | None
    killed: bool  # False: the child finished before its I/O reached at_bytes


def io_bytes(pid: int) -> int | None:
    """How many bytes process `pid` has read and written so far; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return None
    fields = dict(line.split(": ") for line in text.splitlines())
    return int(fields["rchar"]) + int(fields["wchar"])


def io_of_run(
    proc: subprocess.Popen[str], timeout: float = 300, mark: Callable[[], bool] | None = None
) -> tuple[int, int | None]:
    """Let `proc` finish: the I/O it did (the last sample before it exited), and the I/O it
    had done when `mark()` first held (None if it never did)."""
    deadline = time.monotonic() + timeout
    seen, marked = 0, None
    while proc.poll() is None:
        assert time.monotonic() < deadline, "the reference run did not finish"
        seen = max(seen, io_bytes(proc.pid) or 0)
        if marked is None and mark is not None and mark():
            marked = seen
        time.sleep(POLL_SECONDS)
    proc.communicate()
    assert proc.returncode == 0, f"the reference run failed: exit {proc.returncode}"
    return seen, marked


def kill_at_io(proc: subprocess.Popen[str], at_bytes: int, timeout: float = 300) -> Kill:
    """SIGKILL `proc` as soon as its I/O reaches `at_bytes` (or let it finish first)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        assert time.monotonic() < deadline, "the run neither finished nor reached its kill point"
        done = io_bytes(proc.pid)
        if done is not None and done >= at_bytes:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(POLL_SECONDS)
    proc.communicate(timeout=60)
    return Kill(at_bytes, proc.returncode, killed=proc.returncode == -signal.SIGKILL)


def close_listener(listener: Any, thread: Any) -> None:
    """Stop a test server's accept thread, then close its socket, in that order.

    Closing a listening socket while another thread is about to call accept() on it lets
    that thread block on whatever socket the fd number belongs to next: a later test's
    webhook server, whose connections it then steals (seen as "HTTP 400" and "Broken pipe"
    in notices of unrelated tests). shutdown() wakes a blocked accept() on Linux; the join
    makes sure the thread is gone before the number can be reused.
    """
    import contextlib
    import socket

    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)
    thread.join(timeout=30)
    assert not thread.is_alive(), "the test server's accept thread did not stop"
    listener.close()


def seeded_points(seed: int, trials: int, low: float, high: float) -> list[float]:
    """`trials` kill points spread over [low, high): one per equal slice, jittered.

    Stratifying instead of drawing freely guarantees every phase of a run (start-up, fetch,
    parse, merge, commit, after-actions) is hit by some trial, whatever the seed.
    """
    rng = random.Random(seed)
    width = (high - low) / trials
    return [low + width * (i + rng.random()) for i in range(trials)]


# --------------------------------------------------------------------------- the store


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def recipient_digest(db: Path, list_name: str = "newsletter") -> tuple[int, str]:
    """(row count, a hash over every row's email/status/fields/doi) of a list: cheap to compare
    for 200,000 rows, exact enough to tell the before- from the after-state."""
    rows = query(
        db,
        "SELECT count(*), coalesce(sum(length(r.email) + length(r.fields) + "
        "length(r.status) + coalesce(length(r.doi_confirmed_at), 0)), 0), "
        "coalesce(group_concat(substr(r.email, 1, 3), ''), '') "
        "FROM recipients r JOIN lists l ON l.id = r.list_id WHERE l.name = ?",
        (list_name,),
    )
    count, total, sample = rows[0]
    import hashlib

    return int(count), f"{total}:{hashlib.sha256(sample.encode()).hexdigest()[:16]}"


def run_statuses(db: Path, job: str) -> list[str]:
    return [status for (status,) in query(db, "SELECT status FROM runs WHERE job = ?", (job,))]


# --------------------------------------------------------------------------- a disk that fails


@contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """`folder` as a fresh tmpfs of `size` (e.g. "600k"): a disk that really fills up.
    Needs root (skips otherwise); always unmounted afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    _mount_or_skip(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder)])
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True, timeout=60)


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """A folder (bind-mounted onto itself, read-only) or a file (immutable, chattr +i) that
    nobody can write, root included. Skips where that cannot be done; always undone."""
    if path.is_dir():
        _mount_or_skip(["mount", "--bind", str(path), str(path)])
        try:
            _mount_or_skip(["mount", "-o", "remount,bind,ro", str(path)])
            yield
        finally:
            subprocess.run(["umount", str(path)], check=True, timeout=60)
        return
    _mount_or_skip(["chattr", "+i", str(path)])
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True, timeout=60)


def _mount_or_skip(argv: list[str]) -> None:
    import pytest

    if os.geteuid() != 0:
        pytest.skip(f"`{argv[0]}` needs root")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.skip(f"`{' '.join(argv)}` is not possible here: {done.stderr.strip()}")


# --------------------------------------------------------------------------- inputs


def generate_recipients(out: Path, rows: int, seed: int = 1, delimiter: str = ",") -> Path:
    """A realistic recipient CSV from the bench generator (deterministic for a seed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            str(BENCH_GEN),
            str(out),
            "--rows",
            str(rows),
            "--seed",
            str(seed),
            "--delimiter",
            delimiter,
        ],
        check=True,
        timeout=120,
    )
    return out


def peak_rss_run(
    argv: list[str], env: dict[str, str], timeout: float, workdir: Path
) -> tuple[int, int, str, str]:
    """Run argv; return (exit code, peak RSS in KiB of that child alone, stdout, stderr).

    os.wait4 gives the rusage of exactly this child, where RUSAGE_CHILDREN would mix in every
    earlier child of the test process.
    """
    out_path, err_path = workdir / "child.out", workdir / "child.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return (
        proc.returncode,
        usage.ru_maxrss,
        out_path.read_text(errors="replace"),
        err_path.read_text(errors="replace"),
    )


def dedent(text: str) -> str:
    return textwrap.dedent(text)


# --------------------------------------------------------------------------- a faulty network


@dataclass
class Fault:
    """What the proxy does to one connection.

    kind: "pass" | "reset" (RST to both ends) | "close" (FIN to both ends) | "stall" (stop
    forwarding, keep both sockets open). It strikes once `after` bytes have gone `direction`
    ("down": server to client, "up": client to server); with `chunks`, once that many reads
    have gone that way instead (an SSH handshake is a fixed sequence of packets). `action`,
    if any, runs just before the fault strikes: with "reset" and a kill of the server's
    session processes, the server crashed mid-transfer.
    """

    kind: str = "pass"
    after: int = 0
    direction: str = "down"
    chunks: int | None = None
    action: Callable[[], object] | None = None


class FaultProxy:
    """A loopback TCP proxy in front of a real server that breaks chosen connections.

    `faults` apply to the first connections, in order; later connections pass untouched, so a
    client that retries gets through. `log` records (connection, direction, bytes) per read.
    """

    def __init__(self, upstream: tuple[str, int], faults: list[Fault] | None = None):
        import socket
        import threading

        self.upstream = upstream
        self.faults = list(faults or [])
        self.log: list[tuple[int, str, int]] = []
        self.struck: list[int] = []  # connection numbers a fault hit
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self._listener.getsockname()[:2]
        self._sockets: list[Any] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        import contextlib

        self._stop.set()
        if self._thread.is_alive():
            close_listener(self._listener, self._thread)
        else:
            self._listener.close()
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        import socket
        import threading

        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                number = self.connections
                self.connections += 1
                fault = self.faults[number] if number < len(self.faults) else Fault()
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            state = {"down": [0, 0], "up": [0, 0], "done": False}
            for src, dst, direction in ((client, server, "up"), (server, client, "down")):
                threading.Thread(
                    target=self._pump,
                    args=(number, fault, state, src, dst, direction, (client, server)),
                    daemon=True,
                ).start()

    def _pump(self, number, fault, state, src, dst, direction, pair) -> None:  # noqa: ANN001
        import contextlib
        import socket
        import struct

        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data or state["done"]:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            counts = state[direction]
            counts[0] += len(data)
            counts[1] += 1
            self.log.append((number, direction, len(data)))
            due = (
                fault.kind != "pass"
                and direction == fault.direction
                and (
                    counts[1] >= fault.chunks
                    if fault.chunks is not None
                    else counts[0] > fault.after
                )
            )
            if due:
                state["done"] = True
                self.struck.append(number)
                if fault.action is not None:
                    fault.action()
                if fault.kind == "stall":
                    return  # nothing more flows either way; the sockets stay open
                for sock in pair:
                    with contextlib.suppress(OSError):
                        if fault.kind == "reset":
                            # linger 0: close sends RST, as a crashed middlebox would
                            sock.setsockopt(
                                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                            )
                        sock.close()
                return
            try:
                dst.sendall(data)
            except OSError:
                return
