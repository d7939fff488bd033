"""Dispatch's SQL on an SQLite store: who is due, claiming and settling sends, dead sends.

The `sends` table (migration 2) holds one row per job and address. A claim is one
conditional INSERT … ON CONFLICT, committed before the SMTP transaction, so of two
overlapping runs only one gets it. A `sending` row whose run is gone is a dead send: its
outcome is unknown and it is never sent again. A run is known gone by its record, and on
this host also by its pid (a run that ignored the job lock may have had its record marked
interrupted while it was still sending).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .. import list_id
from ..sends import SENDS_OF_JOB
from ..statuses import unsubscription_wins
from .runs import process_alive, record_finished
from .statuses import outbounced_sql

if TYPE_CHECKING:
    from ...config.model import BounceLimits
    from ..base import Store

# (id, email, message_id, run_id) of a dead send.
DeadSend = tuple[int, str, str, int | None]
# (email, fields, unsubscribed, outbounced) of a newly confirmed member.
Candidate = tuple[str, dict[str, Any], bool, bool]


def cutoff(store: Store, job: str) -> str | None:
    """When the job first ran (None: it never did)."""
    row = store.conn.execute("SELECT first_seen FROM jobs WHERE name = ?", (job,)).fetchone()
    return str(row[0]) if row else None


def blocklist(store: Store) -> list[str]:
    """Every blocklist pattern."""
    return [row[0] for row in store.conn.execute("SELECT pattern FROM blocklist")]


def candidates(
    store: Store, job: str, list_name: str, since: str, latest: str, limits: BounceLimits
) -> list[Candidate]:
    """Members of `list_name` (not removed) confirmed after `since` that `job` has neither
    sent to nor holds, in confirmation order, each with whether an unsubscription or the
    bounce limits exclude it. `latest`: the latest moment a confirmation can have happened."""
    conn = store.conn
    found = list_id(conn, list_name, create=False)
    if found is None:
        return []
    outbounced, bounce_params = outbounced_sql(limits)
    # An unsubscription counts unless the address confirmed double opt-in again after it
    # (an import re-activates such a recipient; the unsubscriber row stays).
    wins = unsubscription_wins("r.doi_confirmed_at", "u.unsubscribed_at", "?")
    query = f"""
        SELECT r.email, r.fields,
            r.status != 'active' OR EXISTS (
                SELECT 1 FROM unsubscribers AS u
                WHERE u.email = r.email AND u.list IN ('', ?) AND {wins}) AS unsubscribed,
            r.email IN ({outbounced}) AS outbounced
        FROM recipients AS r
        WHERE r.list_id = ? AND r.status != 'removed' AND r.doi_confirmed_at > ?
          AND NOT EXISTS (
            SELECT 1 FROM sends AS s
            WHERE s.job = ? AND s.email = r.email AND s.state != 'deferred')
        ORDER BY r.doi_confirmed_at, r.email
    """
    params = (list_name, latest, *bounce_params, found, since, job)
    return [
        (email, json.loads(fields or "{}"), bool(unsubscribed), bool(bounced))
        for email, fields, unsubscribed, bounced in conn.execute(query, params).fetchall()
    ]


@contextmanager
def claiming(store: Store, run_id: int | None) -> Iterator[None]:
    """While the block runs, run `run_id` may hold sends. Nothing to do here: its pid says
    whether it is alive."""
    yield


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
    """
    conn = store.conn
    now = store.now()
    with store.transaction():
        cursor = conn.execute(
            """
            INSERT INTO sends (job, email, list, mailing, mailing_id, message_id, state,
                               attempts, run_id, created_at, updated_at)
            VALUES (?, ?, ?, ?, ?, ?, 'sending', 1, ?, ?, ?)
            ON CONFLICT (job, email) DO UPDATE SET
                state = 'sending', attempts = attempts + 1, list = excluded.list,
                mailing = excluded.mailing, mailing_id = excluded.mailing_id,
                message_id = excluded.message_id, run_id = excluded.run_id,
                updated_at = excluded.updated_at
            WHERE sends.state = 'deferred'
            """,
            (job, email, list_name, mailing, mailing_id, message_id, run_id, now, now),
        )
        if cursor.rowcount != 1:
            return None
        row = conn.execute(
            "SELECT id FROM sends WHERE job = ? AND email = ?", (job, email)
        ).fetchone()
    return int(row[0])


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
    with store.transaction():
        # Taken under the write lock, like an import's change time: an export's watermark
        # is then either before this bounce or after it is committed.
        now = store.now()
        conn.execute(
            "UPDATE sends SET state = ?, detail = ?, updated_at = ? WHERE id = ?",
            (state, detail, now, send_id),
        )
        if bounce is not None:
            email, kind, source = bounce
            conn.execute(
                "INSERT INTO bounces (email, type, bounced_at, source, detail, changed_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (email, kind, now, source, detail, now),
            )


def dead_sends(store: Store, job: str, detail: str, *, mark: bool) -> list[DeadSend]:
    """The job's `sending` rows whose run is gone; with `mark`, turned `unknown` (with
    `detail`) in the same transaction, so a send settled meanwhile is not counted."""
    if not mark:
        return _dead(store, job)
    with store.transaction():
        dead = _dead(store, job)
        store.conn.executemany(
            "UPDATE sends SET state = 'unknown', updated_at = ?, detail = ? WHERE id = ?",
            [(store.now(), detail, row[0]) for row in dead],
        )
    return dead


def _dead(store: Store, job: str) -> list[DeadSend]:
    rows = store.conn.execute(
        "SELECT s.id, s.email, s.message_id, s.run_id, r.status, r.pid, r.host "
        "FROM sends AS s LEFT JOIN runs AS r ON r.id = s.run_id "
        "WHERE s.job = ? AND s.state = 'sending'",
        (job,),
    ).fetchall()
    return [tuple(row[:4]) for row in rows if not _run_alive(*row[4:])]


def _run_alive(status: str | None, pid: int | None, host: str | None) -> bool:
    """Whether the run that claimed a send may still be sending it.

    The runner marks every other run of the job interrupted once it holds the lock, so the
    run's status alone would call a live run (one that ignored the lock) dead: its process
    is checked too.
    """
    if status == "running":
        return True
    if not pid or pid == os.getpid() or host != socket.gethostname():
        # Another host's run is only known by its record; ours is not `running` any more.
        return False
    # A reused pid only delays the report to a later run; it never causes a resend.
    return process_alive(pid)


# --------------------------------------------------------------------------- operators


def job_sends(store: Store, job: str, state: str | None) -> list[dict[str, Any]]:
    """The job's sends (of one state, if given), oldest claim first."""
    query = SENDS_OF_JOB.format(job="?") + (" AND state = ?" if state else "") + " ORDER BY id"
    cursor = store.conn.cursor()
    cursor.row_factory = sqlite3.Row
    return [dict(row) for row in cursor.execute(query, (job, state) if state else (job,))]


def settle_unknown(
    store: Store, job: str, email: str, state: str, detail: str, record: dict[str, Any]
) -> tuple[str | None, int | None]:
    """Settle the job's `unknown` send to `email` as `state` (with `detail`), and record
    `record` as a run, in one transaction. Returns the send's state before (None: there is
    no such send) and the run's id (None when nothing was settled)."""
    conn = store.conn
    with store.transaction():
        row = conn.execute(
            "SELECT id, state FROM sends WHERE job = ? AND email = ?", (job, email)
        ).fetchone()
        if row is None or row[1] != "unknown":
            return (None if row is None else str(row[1])), None
        now = store.now()
        conn.execute(
            "UPDATE sends SET state = ?, detail = ?, updated_at = ? WHERE id = ?",
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
