"""Run records on a PostgreSQL store, with runs of every host in one table.

A `running` run is alive while some session holds its job's advisory lock (locks.py): the
pid and host are shown, never trusted, since a pid means nothing on another host. Status
commands read that verdict without writing; the next run of any job, on any host, records
dead runs as `interrupted`.
"""

from __future__ import annotations

import os
import socket
from typing import Any

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
from . import NOW_SQL
from .connection import driver
from .locks import DEAD_RUNNING_RUNS_HERE

Connection = Any  # psycopg.Connection, imported lazily

_PRUNABLE = PRUNABLE.format(p="%s")


def start(conn: Connection, job: str, job_type: str, started: str) -> int:
    """Record a new running run (its own small transaction) and return its id."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO jobs (name, first_seen) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (job, started),
        )
        row = conn.execute(
            "INSERT INTO runs (job, type, status, pid, host, started) "
            "VALUES (%s, %s, 'running', %s, %s, %s) RETURNING id",
            (job, job_type, os.getpid(), socket.gethostname(), started),
        ).fetchone()
    return int(row[0])


def finish(conn: Connection, result: RunResult) -> None:
    """Write the run's outcome; the caller decides which transaction this joins."""
    assignments = ", ".join(f"{column} = %s" for column in FINISH_COLUMNS)
    conn.execute(
        f"UPDATE runs SET {assignments} WHERE id = %s", (*finish_values(result), result.run_id)
    )


def record_finished(
    conn: Connection,
    job: str,
    job_type: str,
    when: tuple[str, str],
    texts: tuple[str, str],
) -> int:
    """Record a run that is over as it starts (an erasure, a settlement): succeeded,
    `when` (started, finished), `texts` (counts as JSON, message); returns its id. In the
    caller's transaction."""
    row = conn.execute(
        "INSERT INTO runs (job, type, status, pid, host, started, finished, counts, message) "
        "VALUES (%s, %s, 'succeeded', %s, %s, %s, %s, %s, %s) RETURNING id",
        (job, job_type, os.getpid(), socket.gethostname(), *when, *texts),
    ).fetchone()
    assert row is not None
    return int(row[0])


def mark_interrupted(conn: Connection, job: str | None = None) -> None:
    """Mark `running` runs of any host whose job lock nobody holds as `interrupted`.

    With `job` given, the caller holds that job's lock, so every running row of the job is
    dead (the lock is this run's, which has no row yet).
    """
    dead = {run_id for run_id, _ in _dead(conn)}
    if job is not None:
        rows = conn.execute(
            "SELECT id FROM runs WHERE status = 'running' AND job = %s", (job,)
        ).fetchall()
        dead |= {int(row[0]) for row in rows}
    if not dead:
        return
    with conn.transaction():
        conn.execute(
            f"UPDATE runs SET status = 'interrupted', finished = {NOW_SQL}, "
            "error = coalesce(error, %s) WHERE id = ANY(%s) AND status = 'running'",
            (DEAD_RUN_ERROR, sorted(dead)),
        )


def succeeded(conn: Connection, run_id: int) -> bool:
    """Whether the run's row says `succeeded` (its data transaction committed)."""
    row = conn.execute("SELECT status = 'succeeded' FROM runs WHERE id = %s", (run_id,)).fetchone()
    return bool(row and row[0])


def first_seen(conn: Connection, job: str) -> str | None:
    """When the store first saw a run of `job` (its schedule counts from then)."""
    row = conn.execute("SELECT first_seen FROM jobs WHERE name = %s", (job,)).fetchone()
    return str(row[0]) if row else None


def already_imported(conn: Connection, job: str, sha256: str) -> int | None:
    """The id of the newest run of `job` that imported a file with this checksum (its
    record may have been pruned since; the checksum never is)."""
    row = conn.execute(
        "SELECT run_id FROM imported_files WHERE job = %s AND sha256 = %s", (job, sha256)
    ).fetchone()
    return int(row[0]) if row else None


def remember_import(conn: Connection, job: str, sha256: str, run_id: int, at: str) -> None:
    """Note that run `run_id` imported a file with this checksum; in the caller's
    transaction, the one that commits the import."""
    conn.execute(
        "INSERT INTO imported_files (job, sha256, run_id, imported_at) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (job, sha256) DO UPDATE SET run_id = excluded.run_id, "
        "imported_at = excluded.imported_at",
        (job, sha256, run_id, at),
    )


def prunable(conn: Connection, before: str) -> dict[str, int]:
    """Per job, how many run records retention would remove (see runs.PRUNABLE)."""
    return prunable_per_job(conn, _PRUNABLE, before)


def prune(conn: Connection, before: str) -> dict[str, int]:
    """Remove the run records retention lets go; per job, how many went (one transaction:
    the counts are those of the rows deleted)."""
    if not prunable(conn, before):
        return {}
    with conn.transaction():
        rows = conn.execute(f"DELETE FROM runs WHERE {_PRUNABLE} RETURNING job", (before,))
        removed: dict[str, int] = {}
        for (job,) in rows.fetchall():
            removed[str(job)] = removed.get(str(job), 0) + 1
    return dict(sorted(removed.items()))


def last_success(conn: Connection, job: str) -> dict[str, Any] | None:
    """The newest run that did its job: succeeded, or skipped."""
    found = _select(
        conn,
        "SELECT * FROM runs WHERE job = %s AND status IN ('succeeded', 'skipped') "
        "ORDER BY id DESC LIMIT 1",
        (job,),
    )
    return found[0] if found else None


def last_watermark(conn: Connection, job: str) -> str | None:
    """Up to when the last successful export of `job` to its target included changes."""
    row = conn.execute(
        "SELECT watermark FROM runs WHERE job = %s AND status = 'succeeded' "
        "AND watermark IS NOT NULL ORDER BY id DESC LIMIT 1",
        (job,),
    ).fetchone()
    return row[0] if row else None


def history(
    conn: Connection, job: str | None, limit: int, statuses: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """The newest `limit` runs (of `job`; with stored status in `statuses`), newest first."""
    where = ["job = %s"] if job else []
    if statuses:
        where.append(f"status IN ({', '.join('%s' for _ in statuses)})")
    query = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
    params = ((job,) if job else ()) + statuses + (limit,)
    return _select(conn, query + " ORDER BY id DESC LIMIT %s", params)


def latest_per_job(conn: Connection) -> dict[str, dict[str, Any]]:
    """The newest run of every job that ever ran (see LATEST_PER_JOB)."""
    found = _select(conn, LATEST_PER_JOB)
    return {record["job"]: record for record in found}


def running(conn: Connection) -> dict[str, dict[str, Any]]:
    found = _select(conn, "SELECT * FROM runs WHERE status = 'running' ORDER BY id")
    return {record["job"]: record for record in found if record["status"] == "running"}


def _dead(conn: Connection) -> list[tuple[int, str]]:
    rows = conn.execute(DEAD_RUNNING_RUNS_HERE).fetchall()
    return [(int(run_id), str(job)) for run_id, job in rows]


def _select(conn: Connection, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    cursor = conn.cursor(row_factory=driver().rows.dict_row)
    records = [as_record(row) for row in cursor.execute(query, params).fetchall()]
    if any(record["status"] == "running" for record in records):
        dead = {run_id for run_id, _ in _dead(conn)}
        records = [
            seen_dead(record)
            if record["status"] == "running" and record["run_id"] in dead
            else record
            for record in records
        ]
    return records
