"""Job locks on a PostgreSQL store: session advisory locks, held by the run's own connection.

A job runs at most once at a time across every host that shares the store. Its lock is a
session-level advisory lock on `hashtextextended('<schema>/job/<job>', 0)`: taken with a
try-lock (busy -> exit 75 at once, nothing changed) and released by the server when the
session ends for any reason: the run finishing, its process killed, its host powered off
(TCP keepalives, see connection.py, notice that within about a minute).

That makes the lock the liveness test for runs of every host: a `running` run is dead when
no session holds its job's lock (a pid means nothing on another host). Where a session does
hold it, only the newest running run of the job can be its holder's, because a run records
itself after taking the lock and finishes before letting it go; older ones are dead.

Two job names whose hashes collide share a lock: the second gets a false "busy" (75), the
safe direction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from ...errors import JobLocked
from .connection import driver

if TYPE_CHECKING:
    import psycopg


def job_key(schema: str, job: str) -> str:
    """The text whose hash is the job's lock key (lock keys are per schema)."""
    return f"{schema}/job/{job}"


@contextmanager
def job_lock(conn: psycopg.Connection[Any], schema: str, job: str) -> Iterator[None]:
    """Hold the job's lock for the block on `conn` (autocommit), or raise JobLocked (75).

    Raises psycopg.Error as it comes when the server cannot be asked; the caller words it.
    """
    key = job_key(schema, job)
    row = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)).fetchone()
    if not (row and row[0]):
        raise JobLocked(
            f"another run of '{job}' is in progress; this one changed nothing "
            "(see `campaign-sync list-jobs --running`)"
        )
    try:
        yield
    finally:
        # A lost connection has released the lock already; nothing to report here.
        with suppress(driver().Error):
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))


# Running runs whose process is gone: no session of this database holds their job's lock, or
# a newer running run of the job exists (the lock is that one's). pg_locks shows a bigint
# advisory key as classid (high 32 bits) and objid (low 32 bits), with objsubid = 1.
DEAD_RUNNING_RUNS = """
WITH running AS (
    SELECT id, job, max(id) OVER (PARTITION BY job) AS newest
    FROM runs WHERE status = 'running'
),
held AS (
    SELECT (l.classid::bigint << 32) | l.objid::bigint AS key
    FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
)
SELECT r.id, r.job FROM running r
WHERE r.id <> r.newest
   OR NOT EXISTS (
       SELECT 1 FROM held WHERE held.key = hashtextextended(%(schema)s || '/job/' || r.job, 0)
   )
ORDER BY r.id
"""


# The same, for the connection's own schema (a store's connection has it as search path).
DEAD_RUNNING_RUNS_HERE = DEAD_RUNNING_RUNS.replace("%(schema)s", "current_schema()")


def dead_running_runs(conn: psycopg.Connection[Any], schema: str) -> list[tuple[int, str]]:
    """(run id, job) of every `running` run, of any host, whose process has died."""
    rows = conn.execute(DEAD_RUNNING_RUNS, {"schema": schema}).fetchall()
    return [(int(run_id), str(job)) for run_id, job in rows]
