"""Dispatch's SQL on a PostgreSQL store: exactly-once sends when several hosts dispatch.

The same `sends` table as on SQLite, one row per job and address (UNIQUE (job, email)).

Claim: one INSERT … ON CONFLICT (job, email) DO UPDATE … WHERE state = 'deferred'
RETURNING id, in autocommit, so it is committed when it returns, before the SMTP
transaction. Of two runs claiming the same address at once (on one host or two) the second
waits for the first's row and then finds it `sending`: no row comes back, and it leaves the
address alone. A `deferred` row is taken over the same way, by whoever updates it first.

Liveness of a claim. A pid means nothing on another host, and a run's record is no proof
either: a run that ignored the job lock can have its record marked interrupted by the run
that holds it. So a run that claims sends holds a session advisory lock of its own while it
does (`claiming`), keyed by its run id; the server drops that lock when the session ends for
any reason (the run finishing, kill -9, the host gone: TCP keepalives, see connection.py).
A `sending` row is dead exactly when nobody holds its run's lock: it becomes `unknown`, never
sent again. The run lock uses the two-key form of advisory locks (the schema's hash, the run
id), a key space apart from the job locks' single bigint keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from ..sends import SENDS_OF_JOB
from ..statuses import unsubscription_wins
from .connection import driver
from .runs import record_finished

if TYPE_CHECKING:
    from ...config.model import BounceLimits
    from ..base import Store

# (id, email, message_id, run_id) of a dead send.
DeadSend = tuple[int, str, str, int | None]
# (email, fields, unsubscribed, outbounced) of a newly confirmed member.
Candidate = tuple[str, dict[str, Any], bool, bool]

# The run lock's two keys: the schema's (lock keys are per schema) and the run id's, which
# must fit an int4; ids 2**31 apart share a lock, the safe direction (a late report).
_RUN_KEYS = "hashtext(current_schema() || '/run'), mod({run_id}, 2147483648)::integer"
# Whether some session holds the run lock of `s.run_id` (false for a NULL run id). pg_locks
# shows a two-key advisory lock as classid and objid, with objsubid = 2.
_RUN_LOCK_HELD = """EXISTS (
    SELECT 1 FROM pg_locks AS l
    WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid = hashtext(current_schema() || '/run')::oid
      AND l.objid = mod(s.run_id, 2147483648)::integer::oid)"""


def cutoff(store: Store, job: str) -> str | None:
    """When the job first ran (None: it never did)."""
    row = store.conn.execute("SELECT first_seen FROM jobs WHERE name = %s", (job,)).fetchone()
    return str(row[0]) if row else None


def blocklist(store: Store) -> list[str]:
    """Every blocklist pattern."""
    return [str(row[0]) for row in store.conn.execute("SELECT pattern FROM blocklist")]


def candidates(
    store: Store, job: str, list_name: str, since: str, latest: str, limits: BounceLimits
) -> list[Candidate]:
    """Members of `list_name` (not removed) confirmed after `since` that `job` has neither
    sent to nor holds, in confirmation order, each with whether an unsubscription or the
    bounce limits exclude it. `latest`: the latest moment a confirmation can have happened.

    Text columns are COLLATE "C", so the order is SQLite's byte order."""
    # An unsubscription counts unless the address confirmed double opt-in again after it
    # (an import re-activates such a recipient; the unsubscriber row stays).
    wins = unsubscription_wins("r.doi_confirmed_at", "u.unsubscribed_at", "%(latest)s")
    query = f"""
        SELECT r.email, r.fields,
            r.status <> 'active' OR EXISTS (
                SELECT 1 FROM unsubscribers AS u
                WHERE u.email = r.email AND u.list IN ('', %(list)s) AND {wins}),
            r.email IN (
                SELECT email FROM bounces GROUP BY email
                HAVING count(*) FILTER (WHERE type = 'hard') >= %(hard)s
                    OR count(*) FILTER (WHERE type = 'soft') >= %(soft)s)
        FROM recipients AS r JOIN lists AS l ON l.id = r.list_id
        WHERE l.name = %(list)s AND r.status <> 'removed' AND r.doi_confirmed_at > %(since)s
          AND NOT EXISTS (
            SELECT 1 FROM sends AS s
            WHERE s.job = %(job)s AND s.email = r.email AND s.state <> 'deferred')
        ORDER BY r.doi_confirmed_at, r.email
    """
    params = {
        "list": list_name,
        "latest": latest,
        "hard": limits.hard_limit,
        "soft": limits.soft_limit,
        "since": since,
        "job": job,
    }
    return [
        (str(email), dict(fields or {}), bool(unsubscribed), bool(bounced))
        for email, fields, unsubscribed, bounced in store.conn.execute(query, params)
    ]


@contextmanager
def claiming(store: Store, run_id: int | None) -> Iterator[None]:
    """Hold run `run_id`'s lock for the block: its `sending` rows count as alive meanwhile.

    Taken with a try-lock: only a run of another schema whose schema name hashes alike and
    whose id matches can hold it, and waiting for that run would hang this one. Its rows
    would then count as alive while that run lasts, the safe direction."""
    if run_id is None:  # a run without a record claims nothing
        yield
        return
    keys = _RUN_KEYS.format(run_id="%s")
    conn = store.conn
    conn.execute(f"SELECT pg_try_advisory_lock({keys})", (run_id,))
    try:
        yield
    finally:
        # A lost connection has released the lock already; nothing to report here.
        with suppress(driver().Error):
            conn.execute(f"SELECT pg_advisory_unlock({keys})", (run_id,))


def claim(
    store: Store,
    job: str,
    email: str,
    *,
    list_name: str,
    mailing: str,
    mailing_id: str,
    message_id: str,
    run_id: int | None,
) -> int | None:
    """Mark the send `sending` (committed) and return its id; None if another run holds or
    finished it.

    A new address is inserted; an existing row is taken over only while it is `deferred`.
    One statement in autocommit: committed as it returns, atomic against any other run's.
    """
    now = store.now()
    row = store.conn.execute(
        """
        INSERT INTO sends (job, email, list, mailing, mailing_id, message_id, state,
                           attempts, run_id, created_at, updated_at)
        VALUES (%s, %s, %s, %s, %s, %s, 'sending', 1, %s, %s, %s)
        ON CONFLICT (job, email) DO UPDATE SET
            state = 'sending', attempts = sends.attempts + 1, list = excluded.list,
            mailing = excluded.mailing, mailing_id = excluded.mailing_id,
            message_id = excluded.message_id, run_id = excluded.run_id,
            updated_at = excluded.updated_at
        WHERE sends.state = 'deferred'
        RETURNING id
        """,
        (job, email, list_name, mailing, mailing_id, message_id, run_id, now, now),
    ).fetchone()
    return int(row[0]) if row else None


def settle(
    store: Store,
    send_id: int,
    state: str,
    detail: str,
    bounce: tuple[str, str, str] | None = None,
) -> None:
    """Record how a claimed send ended, with its bounce (email, kind, job) in the same
    transaction."""
    conn = store.conn
    if bounce is None:  # one statement: atomic on its own, and no export looks at sends
        conn.execute(
            "UPDATE sends SET state = %s, detail = %s, updated_at = %s WHERE id = %s",
            (state, detail, store.now(), send_id),
        )
        return
    with store.transaction():
        # Taken under the store's write lock, like an import's change time: an export's
        # watermark is then either before this bounce or after it is committed.
        now = store.now()
        conn.execute(
            "UPDATE sends SET state = %s, detail = %s, updated_at = %s WHERE id = %s",
            (state, detail, now, send_id),
        )
        email, kind, source = bounce
        conn.execute(
            "INSERT INTO bounces (email, type, bounced_at, source, detail, changed_at) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (email, kind, now, source, detail, now),
        )


def dead_sends(store: Store, job: str, detail: str, *, mark: bool) -> list[DeadSend]:
    """The job's `sending` rows whose run's lock nobody holds, of any host; with `mark`,
    turned `unknown` (with `detail`) by the same statement that finds them, so a send
    settled meanwhile is neither counted nor changed."""
    where = f"s.job = %s AND s.state = 'sending' AND NOT {_RUN_LOCK_HELD}"
    if mark:
        rows = store.conn.execute(
            "UPDATE sends AS s SET state = 'unknown', updated_at = %s, detail = %s "
            f"WHERE {where} RETURNING s.id, s.email, s.message_id, s.run_id",
            (store.now(), detail, job),
        ).fetchall()
    else:
        rows = store.conn.execute(
            f"SELECT s.id, s.email, s.message_id, s.run_id FROM sends AS s WHERE {where}",
            (job,),
        ).fetchall()
    found = [(int(i), str(email), str(mid), run) for i, email, mid, run in rows]
    return sorted(found)  # in claim order, as on SQLite


# --------------------------------------------------------------------------- operators


def job_sends(store: Store, job: str, state: str | None) -> list[dict[str, Any]]:
    """The job's sends (of one state, if given), oldest claim first."""
    query = SENDS_OF_JOB.format(job="%s") + (" AND state = %s" if state else "") + " ORDER BY id"
    cursor = store.conn.execute(query, (job, state) if state else (job,))
    columns = [column.name for column in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor]


def settle_unknown(
    store: Store, job: str, email: str, state: str, detail: str, record: dict[str, Any]
) -> tuple[str | None, int | None]:
    """Settle the job's `unknown` send to `email` as `state` (with `detail`), and record
    `record` as a run, in one transaction. Returns the send's state before (None: there is
    no such send) and the run's id (None when nothing was settled).

    The row is locked (FOR UPDATE) while it is read: a dispatch of another host claiming it
    at the same moment waits, then finds it settled."""
    conn = store.conn
    with store.transaction():
        row = conn.execute(
            "SELECT id, state FROM sends WHERE job = %s AND email = %s FOR UPDATE",
            (job, email),
        ).fetchone()
        if row is None or row[1] != "unknown":
            return (None if row is None else str(row[1])), None
        now = store.now()
        conn.execute(
            "UPDATE sends SET state = %s, detail = %s, updated_at = %s WHERE id = %s",
            (state, detail, now, row[0]),
        )
        run_id = record_finished(
            conn,
            record["job"],
            record["type"],
            (now, now),
            (json.dumps(record["counts"]), record["message"]),
        )
    return "unknown", run_id
