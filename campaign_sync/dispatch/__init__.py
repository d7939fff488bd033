"""Double opt-in dispatch: the latest mailing, once, to every newly confirmed recipient.

Exactly once rests on the `sends` table (store migration 2), one row per job and address:

1. claim: the row is written as `sending` and committed *before* the SMTP transaction. The
   claim is a single conditional statement, so of two overlapping runs only one gets it;
2. send: one SMTP transaction for this recipient;
3. settle: `sent`, `failed` (5xx, hard bounce), `deferred` (4xx soft bounce, or nothing was
   handed over: retried next run) or `unknown` (the session broke after the data went out).

A process killed between 1 and 3 leaves `sending` behind. The next run cannot know whether
the server took the message, so it reports the row as `unknown` and never sends it again:
a missing welcome mail is a support ticket, a duplicate is a spam complaint.

Counts: `sent` accepted by the server; `bounced` refused by it (5xx hard, 4xx soft, each
recorded in `bounces`); `skipped` newly confirmed members left out (unsubscribed, blocklisted,
outbounced, or an address the session cannot carry); `unknown` sends of unknown outcome found
or caused by this run. A dry run counts as `sent` who would be sent to.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import store
from ..core.addresses import Blocklist
from ..core.dates import latest_allowed
from ..errors import InputError, MailError
from ..store.base import Store
from ..store.sqlite import runs
from ..store.statuses import outbounced_sql, unsubscription_wins
from .mailing import Mailing, latest_mailing, new_message_id, personalise

if TYPE_CHECKING:
    from ..config.model import Config, JobConfig, SmtpConfig
    from ..result import RunResult
    from .smtp import SendOutcome, SmtpSession

log = logging.getLogger("campaign_sync")

# How many recipients a dry run names in its message (the count is always complete).
DRY_RUN_LISTED = 200


@dataclass
class Recipient:
    email: str
    fields: dict[str, Any]


@dataclass
class Selection:
    """Who gets the mailing this run, and how many newly confirmed members were left out."""

    due: list[Recipient] = field(default_factory=list)
    skipped: int = 0
    never_ran: bool = False  # no cut-off yet: nobody counts as newly confirmed


def dispatch(
    store: Store,
    config: Config,
    job: JobConfig,
    result: RunResult,
    *,
    dry_run: bool,
) -> None:
    """Run one doi-dispatch: report dead sends, pick recipients, send; counts go on `result`."""
    assert job.list is not None and job.mailings is not None, "validated by the config"
    assert config.smtp is not None, "validated: a doi-dispatch job needs smtp"
    conn = store.conn
    counts = result.counts
    counts.update(sent=0, skipped=0, bounced=0, unknown=0)
    counts["unknown"] = _settle_dead_sends(conn, job.name, result, dry_run=dry_run)
    mailing = latest_mailing(job.mailings)
    _check_template(mailing, config.smtp.sender)
    selection = select_recipients(conn, config, job)
    counts["skipped"] = selection.skipped
    if dry_run:
        counts["sent"] = len(selection.due)
        result.message = _dry_run_message(mailing, selection, config.smtp.sender)
        if selection.never_ran:
            result.message += (
                "\n  (the job has never run: its first run sets the cut-off, and only "
                "confirmations after it are sent)"
            )
        result.status = "succeeded"
        return
    if selection.due:
        _send_all(conn, config.smtp, job, result, mailing, selection.due)
    result.message = (
        f"mailing {mailing.name}: {counts['sent']} sent, {counts['bounced']} bounced, "
        f"{counts['skipped']} skipped, {counts['unknown']} unknown"
    )
    result.status = "succeeded"


# --------------------------------------------------------------------------- dead sends


def _settle_dead_sends(
    conn: sqlite3.Connection, job: str, result: RunResult, *, dry_run: bool
) -> int:
    """Turn `sending` rows left by dead runs into `unknown`; report each. Returns how many.

    A row whose run is still alive belongs to an overlapping run and is left alone. The
    runner marks every other run of the job interrupted once it holds the lock, so the run's
    status alone would call a live run (one that ignored the lock) dead: its process is
    checked too.
    """
    if dry_run:
        dead = _dead_sends(conn, job)
    else:
        # Found and settled in one transaction, so a send settled meanwhile is not counted.
        with store.transaction(conn):
            dead = _dead_sends(conn, job)
            conn.executemany(
                "UPDATE sends SET state = 'unknown', updated_at = ?, "
                "detail = 'the run ended during the SMTP transaction' WHERE id = ?",
                [(store.now(), row[0]) for row in dead],
            )
    for _, email, message_id, run_id in dead:
        result.warnings.append(
            f"outcome unknown: {email} (Message-ID {message_id}): run {run_id} ended during "
            "its SMTP transaction; not sent again — the mail server's log can tell"
        )
    return len(dead)


def _dead_sends(conn: sqlite3.Connection, job: str) -> list[tuple[int, str, str, int | None]]:
    """(id, email, message_id, run_id) of the job's `sending` rows whose run is gone."""
    rows = conn.execute(
        "SELECT s.id, s.email, s.message_id, s.run_id, r.status, r.pid, r.host "
        "FROM sends AS s LEFT JOIN runs AS r ON r.id = s.run_id "
        "WHERE s.job = ? AND s.state = 'sending'",
        (job,),
    ).fetchall()
    return [row[:4] for row in rows if not _run_alive(*row[4:])]


def _run_alive(status: str | None, pid: int | None, host: str | None) -> bool:
    """Whether the run that claimed a send may still be sending it."""
    if status == "running":
        return True
    if not pid or pid == os.getpid() or host != socket.gethostname():
        # Another host's run is only known by its record; ours is not `running` any more.
        return False
    # A reused pid only delays the report to a later run; it never causes a resend.
    return runs.process_alive(pid)


# --------------------------------------------------------------------------- recipients


def select_recipients(conn: sqlite3.Connection, config: Config, job: JobConfig) -> Selection:
    """Active list members confirmed after the job's first run that this job has not sent to.

    Unsubscribed, blocklisted and outbounced members among them are counted as skipped.
    """
    list_id = store.list_id(conn, job.list or "", create=False)
    cutoff = _cutoff(conn, job.name)
    selection = Selection(never_ran=cutoff is None)
    if list_id is None or cutoff is None:
        return selection
    outbounced, bounce_params = outbounced_sql(config.bounces)
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
    params = (job.list, latest_allowed(store.now()), *bounce_params, list_id, cutoff, job.name)
    blocklist = Blocklist(row[0] for row in conn.execute("SELECT pattern FROM blocklist"))
    for email, fields, unsubscribed, bounced in conn.execute(query, params).fetchall():
        if unsubscribed or bounced or blocklist.matches(email):
            selection.skipped += 1
            continue
        selection.due.append(Recipient(email, {**json.loads(fields or "{}"), "email": email}))
    return selection


def _cutoff(conn: sqlite3.Connection, job: str) -> str | None:
    """Confirmations after this moment are new: the job's first run (None: it never ran)."""
    row = conn.execute("SELECT first_seen FROM jobs WHERE name = ?", (job,)).fetchone()
    return str(row[0]) if row else None


# --------------------------------------------------------------------------- sending


def _check_template(mailing: Mailing, sender: str) -> None:
    """Fail the run when the mailing itself cannot make a message (two Subject headers, a
    header the template breaks): only errors a recipient's own data causes are skipped
    one recipient at a time."""
    try:
        personalise(mailing, recipient=sender, fields={}, sender=sender, message_id="<check@x>")
    except ValueError as exc:
        raise InputError(f"mailing {mailing.path}: {exc}") from None


def _send_all(
    conn: sqlite3.Connection,
    smtp: SmtpConfig,
    job: JobConfig,
    result: RunResult,
    mailing: Mailing,
    due: list[Recipient],
) -> None:
    from .smtp import SmtpSession

    # Connect before claiming anyone: a server that is down fails the run with nothing claimed.
    with SmtpSession(smtp) as session:
        for recipient in _paced(due, job.rate):
            _send_one(conn, session, smtp, job, result, mailing, recipient)


def _paced(items: list[Recipient], rate: float | None) -> Iterator[Recipient]:
    """Yield the items no faster than `rate` per second (on average, without drift)."""
    start = time.monotonic()
    for index, item in enumerate(items):
        if rate:
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield item


def _send_one(
    conn: sqlite3.Connection,
    session: SmtpSession,
    smtp: SmtpConfig,
    job: JobConfig,
    result: RunResult,
    mailing: Mailing,
    recipient: Recipient,
) -> None:
    from .smtp import DeliveryUnknown

    message_id = new_message_id(smtp.sender)
    try:
        message = personalise(
            mailing,
            recipient=recipient.email,
            fields=recipient.fields,
            sender=smtp.sender,
            message_id=message_id,
        )
    except ValueError as exc:
        # One recipient's data must not stop everyone after them: not claimed, so a later
        # run tries again once the data is mended.
        result.counts["skipped"] += 1
        result.warnings.append(f"not sent to {recipient.email}: cannot personalise: {exc}")
        return
    send_id = claim(conn, job, result.run_id, mailing, recipient.email, message_id)
    if send_id is None:
        log.info("%s: claimed by another run meanwhile; left to it", recipient.email)
        return
    try:
        outcome = session.send(message, [recipient.email])
    except DeliveryUnknown as exc:
        settle(conn, send_id, "unknown", str(exc))
        result.counts["unknown"] += 1
        result.warnings.append(f"outcome unknown: {recipient.email} (Message-ID {message_id})")
        raise
    except MailError as exc:
        settle(conn, send_id, "deferred", str(exc))  # nothing handed over: retry next run
        raise
    # Anything else (a bug, Ctrl-C) leaves the row `sending`: whether data went out is not
    # known, so the next run reports it as unknown, exactly as after kill -9.
    _record_outcome(conn, job, result, send_id, recipient.email, outcome)


def _record_outcome(
    conn: sqlite3.Connection,
    job: JobConfig,
    result: RunResult,
    send_id: int,
    email: str,
    outcome: SendOutcome,
) -> None:
    refusal = outcome.refused.get(email)
    if refusal is None:
        settle(conn, send_id, "sent", "")
        result.counts["sent"] += 1
        return
    if refusal.stage == "local":
        # Our session cannot carry the address (no SMTPUTF8): not the recipient's bounce.
        # Left for a later run (perhaps via another server) and counted as skipped.
        settle(conn, send_id, "deferred", str(refusal))
        result.counts["skipped"] += 1
        result.warnings.append(f"not sent to {email}: {refusal.text}")
        return
    state = "failed" if refusal.permanent else "deferred"
    settle(conn, send_id, state, str(refusal), bounce=(email, refusal.kind, job.name))
    result.counts["bounced"] += 1
    log.info("%s: %s bounce (%s)", email, refusal.kind, refusal)


def claim(
    conn: sqlite3.Connection,
    job: JobConfig,
    run_id: int | None,
    mailing: Mailing,
    email: str,
    message_id: str,
) -> int | None:
    """Mark the send `sending` (committed); None if another run holds or finished it.

    A new address is inserted; an existing row is taken over only while it is `deferred`.
    """
    now = store.now()
    with store.transaction(conn):
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
            (job.name, email, job.list, mailing.name, mailing.mailing_id, message_id, run_id)
            + (now, now),
        )
        if cursor.rowcount != 1:
            return None
        row = conn.execute(
            "SELECT id FROM sends WHERE job = ? AND email = ?", (job.name, email)
        ).fetchone()
    return int(row[0])


def settle(
    conn: sqlite3.Connection,
    send_id: int,
    state: str,
    detail: str,
    *,
    bounce: tuple[str, str, str] | None = None,
) -> None:
    """Record how a claimed send ended, with its bounce in the same transaction."""
    with store.transaction(conn):
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


# --------------------------------------------------------------------------- dry run


def _dry_run_message(mailing: Mailing, selection: Selection, sender: str) -> str:
    due = selection.due
    lines = [
        f"dry run: nothing was sent or changed; mailing {mailing.name} "
        f"(Date {mailing.date.isoformat()}) would go to {len(due)} recipient(s), "
        f"{selection.skipped} skipped"
    ]
    for recipient in due[:DRY_RUN_LISTED]:
        message = personalise(
            mailing,
            recipient=recipient.email,
            fields=recipient.fields,
            sender=sender,
            message_id="<dry-run@localhost>",
        )
        lines.append(f"  {recipient.email}: {message.get('Subject', '')}")
    if len(due) > DRY_RUN_LISTED:
        lines.append(f"  … and {len(due) - DRY_RUN_LISTED} more")
    return "\n".join(lines)
