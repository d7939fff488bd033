"""Run records and the per-job lock on an SQLite store.

A process that died leaves a `running` row behind. Status commands only read: they show
such a row as `interrupted` when its pid no longer exists on this host, and never wait for
the store's write lock to say so. The next run of any job writes it (`mark_interrupted`),
and for its own job it needs no pid: it holds the job's lock, so no other run of the job is alive.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ... import store
from ...core import workdir
from ...errors import ConfigError, JobLocked
from ...result import RunResult
from ..runs import (
    DEAD_RUN_ERROR,
    FINISH_COLUMNS,
    LATEST_PER_JOB,
    PRUNABLE,
    as_record,
    finish_values,
    prunable_per_job,
    seen_dead,
)

_PRUNABLE = PRUNABLE.format(p="?")
# The lock file is opened again by every run: created 0600 when missing, never via a link.
_LOCK_FILE = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


@contextmanager
def job_lock(work_dir: Path, job: str) -> Iterator[None]:
    """Hold the job's lock for the block, or raise JobLocked at once (exit 75).

    flock is released by the kernel when the process dies, so a crash never leaves a
    stale lock behind.
    """
    lock_dir = work_dir / "locks"
    try:
        # A private folder of our own (made 0700, a planted link refused), so no one else
        # can put a name where the lock file is opened.
        lock_dir = workdir.private_folder(work_dir, "locks")
        fd = os.open(lock_dir / f"{job}.lock", _LOCK_FILE, 0o600)
    except OSError as exc:
        raise ConfigError(
            f"cannot use {lock_dir}: {exc.strerror}; set `work_dir` to a folder this user "
            "can write",
            key="work_dir",
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobLocked(
                f"another run of '{job}' is in progress; this one changed nothing "
                "(see `campaign-sync list-jobs --running`)"
            ) from None
        yield
    finally:
        os.close(fd)


def start(conn: sqlite3.Connection, job: str, job_type: str, started: str) -> int:
    """Record a new running run (its own small transaction) and return its id."""
    with store.transaction(conn):
        conn.execute("INSERT OR IGNORE INTO jobs (name, first_seen) VALUES (?, ?)", (job, started))
        cursor = conn.execute(
            "INSERT INTO runs (job, type, status, pid, host, started) "
            "VALUES (?, ?, 'running', ?, ?, ?)",
            (job, job_type, os.getpid(), socket.gethostname(), started),
        )
    return int(cursor.lastrowid or 0)


def finish(conn: sqlite3.Connection, result: RunResult) -> None:
    """Write the run's outcome; the caller decides which transaction this joins."""
    assignments = ", ".join(f"{column} = ?" for column in FINISH_COLUMNS)
    conn.execute(
        f"UPDATE runs SET {assignments} WHERE id = ?", (*finish_values(result), result.run_id)
    )


def record_finished(
    conn: sqlite3.Connection, job: str, job_type: str, when: tuple[str, str], texts: tuple[str, str]
) -> int:
    """Record a run that is over as it starts (an erasure, a settlement): succeeded,
    `when` (started, finished), `texts` (counts as JSON, message); returns its id. In the
    caller's transaction."""
    cursor = conn.execute(
        "INSERT INTO runs (job, type, status, pid, host, started, finished, counts, message) "
        "VALUES (?, ?, 'succeeded', ?, ?, ?, ?, ?, ?)",
        (job, job_type, os.getpid(), socket.gethostname(), *when, *texts),
    )
    return int(cursor.lastrowid or 0)


def mark_interrupted(conn: sqlite3.Connection, job: str | None = None) -> None:
    """Mark `running` runs whose process is gone as `interrupted`.

    With `job` given, the caller holds that job's lock, so every running row of the job
    is dead whatever its pid says (a pid can be reused).
    """
    rows = conn.execute(
        "SELECT id, job, pid, host FROM runs WHERE status = 'running'"
        + (" AND job = ?" if job else ""),
        (job,) if job else (),
    ).fetchall()
    here = socket.gethostname()
    dead = [
        run_id for run_id, run_job, pid, host in rows if run_job == job or _gone(pid, host, here)
    ]
    if not dead:
        return
    finished = store.now()
    with store.transaction(conn):
        conn.executemany(
            "UPDATE runs SET status = 'interrupted', finished = ?, "
            "error = coalesce(error, ?) WHERE id = ? AND status = 'running'",
            [(finished, DEAD_RUN_ERROR, run_id) for run_id in dead],
        )


def _gone(pid: int | None, host: str | None, here: str) -> bool:
    """Whether a run's process is known to be gone (only a pid on this host can be checked)."""
    return host == here and not process_alive(pid)


def process_alive(pid: int | None) -> bool:
    """Whether a process with this pid exists on this host."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def succeeded(conn: sqlite3.Connection, run_id: int) -> bool:
    """Whether the run's row says `succeeded` (its data transaction committed)."""
    row = conn.execute("SELECT status = 'succeeded' FROM runs WHERE id = ?", (run_id,)).fetchone()
    return bool(row and row[0])


def first_seen(conn: sqlite3.Connection, job: str) -> str | None:
    """When the store first saw a run of `job` (its schedule counts from then)."""
    row = conn.execute("SELECT first_seen FROM jobs WHERE name = ?", (job,)).fetchone()
    return str(row[0]) if row else None


def already_imported(conn: sqlite3.Connection, job: str, sha256: str) -> int | None:
    """The id of the newest run of `job` that imported a file with this checksum (its
    record may have been pruned since; the checksum never is)."""
    row = conn.execute(
        "SELECT run_id FROM imported_files WHERE job = ? AND sha256 = ?", (job, sha256)
    ).fetchone()
    return int(row[0]) if row else None


def remember_import(conn: sqlite3.Connection, job: str, sha256: str, run_id: int, at: str) -> None:
    """Note that run `run_id` imported a file with this checksum; in the caller's
    transaction, the one that commits the import."""
    conn.execute(
        "INSERT INTO imported_files (job, sha256, run_id, imported_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (job, sha256) DO UPDATE SET run_id = excluded.run_id, "
        "imported_at = excluded.imported_at",
        (job, sha256, run_id, at),
    )


def prunable(conn: sqlite3.Connection, before: str) -> dict[str, int]:
    """Per job, how many run records retention would remove (see runs.PRUNABLE)."""
    return prunable_per_job(conn, _PRUNABLE, before)


def prune(conn: sqlite3.Connection, before: str) -> dict[str, int]:
    """Remove the run records retention lets go; per job, how many went. The write lock is
    taken only when there is something to remove (this runs after every run)."""
    if not prunable(conn, before):
        return {}
    with store.transaction(conn):
        removed = prunable(conn, before)  # again, under the write lock
        conn.execute(f"DELETE FROM runs WHERE {_PRUNABLE}", (before,))
    return removed


def last_success(conn: sqlite3.Connection, job: str) -> dict[str, Any] | None:
    """The newest run that did its job: succeeded, or skipped (the file was already
    imported, or absent with `missing: skip`), which answers a schedule just as well."""
    found = _select(
        conn,
        "SELECT * FROM runs WHERE job = ? AND status IN ('succeeded', 'skipped') "
        "ORDER BY id DESC LIMIT 1",
        (job,),
    )
    return found[0] if found else None


def last_watermark(conn: sqlite3.Connection, job: str) -> str | None:
    """Up to when the last successful export of `job` to its target included changes, if it
    ever ran (runs that wrote to --output have none: they did not reach the partner)."""
    row = conn.execute(
        "SELECT watermark FROM runs WHERE job = ? AND status = 'succeeded' "
        "AND watermark IS NOT NULL ORDER BY id DESC LIMIT 1",
        (job,),
    ).fetchone()
    return row[0] if row else None


def history(
    conn: sqlite3.Connection, job: str | None, limit: int, statuses: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """The newest `limit` runs (of `job`; with stored status in `statuses`), newest first."""
    where = ["job = ?"] if job else []
    if statuses:
        where.append(f"status IN ({', '.join('?' for _ in statuses)})")
    query = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
    params = ((job,) if job else ()) + statuses + (limit,)
    return _select(conn, query + " ORDER BY id DESC LIMIT ?", params)


def latest_per_job(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """The newest run of every job that ever ran (see LATEST_PER_JOB)."""
    found = _select(conn, LATEST_PER_JOB)
    return {record["job"]: record for record in found}


def running(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    found = _select(conn, "SELECT * FROM runs WHERE status = 'running' ORDER BY id")
    return {record["job"]: record for record in found if record["status"] == "running"}


def _select(
    conn: sqlite3.Connection, query: str, params: tuple[Any, ...] = ()
) -> list[dict[str, Any]]:
    cursor = conn.cursor()
    cursor.row_factory = sqlite3.Row
    here = socket.gethostname()
    return [_as_seen(_as_dict(row), here) for row in cursor.execute(query, params).fetchall()]


def _as_seen(record: dict[str, Any], here: str) -> dict[str, Any]:
    """A run as it is: a `running` row whose process is gone reads `interrupted`, as the
    next run will record it (reading it so takes no write, so no wait for a busy store)."""
    if record["status"] == "running" and _gone(record["pid"], record["host"], here):
        return seen_dead(record)
    return record


def _as_dict(raw: sqlite3.Row) -> dict[str, Any]:
    return as_record(dict(zip(raw.keys(), tuple(raw), strict=True)))
