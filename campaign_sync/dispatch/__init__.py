"""Double opt-in dispatch: the latest mailing, once, to every newly confirmed recipient.

Exactly once rests on the store's `sends` table, one row per job and address; its SQL is the
store backend's (`store.sql("sends")`), the steps and their order are this module's:

1. claim: the row is written as `sending` and committed *before* the SMTP transaction. The
   claim is a single conditional statement, so of two overlapping runs (on one host or on
   several sharing a PostgreSQL store) only one gets it;
2. send: one SMTP transaction for this recipient;
3. settle: `sent`, `failed` (5xx, hard bounce), `deferred` (4xx soft bounce, or nothing was
   handed over: retried next run) or `unknown` (the session broke after the data went out).

A process killed between 1 and 3 leaves `sending` behind. The next run cannot know whether
the server took the message, so it reports the row as `unknown` and never sends it again:
a missing welcome mail is a support ticket, a duplicate is a spam complaint. A row counts as
left behind only once its run is gone, which each backend decides in its own way (the
process on SQLite's one host; a lock the server drops with the run's session on PostgreSQL).

Counts: `sent` accepted by the server; `bounced` refused by it (5xx hard, 4xx soft, each
recorded in `bounces`); `skipped` newly confirmed members left out (unsubscribed, blocklisted,
outbounced, or an address the session cannot carry); `unknown` sends of unknown outcome found
or caused by this run. A dry run counts as `sent` who would be sent to.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..core.addresses import Blocklist
from ..core.dates import latest_allowed
from ..errors import InputError, MailError

if TYPE_CHECKING:
    from ..config.model import Config, JobConfig, SmtpConfig
    from ..result import RunResult
    from ..store.base import Store
    from .mailing import Mailing
    from .smtp import SendOutcome, SmtpSession

log = logging.getLogger("campaign_sync")

# How many recipients a dry run names in its message (the count is always complete).
DRY_RUN_LISTED = 200

# A progress bar's factory: (label, unit, total=) -> a context giving a (done, _) callback or None.
Work = Callable[..., AbstractContextManager[Callable[[int, "int | None"], None] | None]]

DEAD_SEND_DETAIL = "the run ended during the SMTP transaction"


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


@dataclass
class Sending:
    """One run's sending: the store and its sends SQL, the job, and where counts go."""

    store: Store
    sends: ModuleType  # the store's `sends` module (store.sql("sends"))
    job: JobConfig
    result: RunResult
    mailing: Mailing


def dispatch(
    store: Store,
    config: Config,
    job: JobConfig,
    result: RunResult,
    *,
    dry_run: bool,
    work: Work | None = None,
) -> None:
    """Run one doi-dispatch: report dead sends, pick recipients, send; counts go on `result`.

    `work`, when given, makes the bar of messages sent (see RunContext.work)."""
    assert job.list is not None and job.mailings is not None, "validated by the config"
    assert config.smtp is not None, "validated: a doi-dispatch job needs smtp"
    sends = store.sql("sends")
    counts = result.counts
    counts.update(sent=0, skipped=0, bounced=0, unknown=0)
    counts["unknown"] = _settle_dead_sends(store, sends, job.name, result, dry_run=dry_run)
    # The mailing code (the email package) loads only for a run: `recipient` reads this
    # module's rules (why_not_due) without it.
    from .mailing import latest_mailing

    mailing = latest_mailing(job.mailings)
    _check_template(mailing, config.smtp.sender)
    selection = select_recipients(store, config, job)
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
        # While this run may hold sends, other runs (of any host) must see it alive.
        with sends.claiming(store, result.run_id):
            run = Sending(store, sends, job, result, mailing)
            _send_all(run, config.smtp, selection.due, work)
    result.message = (
        f"mailing {mailing.name}: {counts['sent']} sent, {counts['bounced']} bounced, "
        f"{counts['skipped']} skipped, {counts['unknown']} unknown"
    )
    result.status = "succeeded"


# --------------------------------------------------------------------------- dead sends


def _settle_dead_sends(
    store: Store, sends: ModuleType, job: str, result: RunResult, *, dry_run: bool
) -> int:
    """Turn `sending` rows left by dead runs into `unknown`; report each. Returns how many.

    A row whose run is still alive belongs to an overlapping run and is left alone; what
    alive means is the backend's (a pid on one host, a lock the server holds across hosts).
    A dry run reports them without changing them.
    """
    dead = sends.dead_sends(store, job, DEAD_SEND_DETAIL, mark=not dry_run)
    for _, email, message_id, run_id in dead:
        result.warnings.append(
            f"outcome unknown: {email} (Message-ID {message_id}): run {run_id} ended during "
            "its SMTP transaction; not sent again — the mail server's log can tell"
        )
    return len(dead)


# --------------------------------------------------------------------------- recipients


def select_recipients(store: Store, config: Config, job: JobConfig) -> Selection:
    """Active list members confirmed after the job's first run that this job has not sent to.

    Unsubscribed, blocklisted and outbounced members among them are counted as skipped.
    """
    sends = store.sql("sends")
    cutoff = sends.cutoff(store, job.name)
    selection = Selection(never_ran=cutoff is None)
    if cutoff is None:
        return selection
    found = sends.candidates(
        store, job.name, job.list or "", cutoff, latest_allowed(store.now()), config.bounces
    )
    if not found:
        return selection
    blocklist = Blocklist(sends.blocklist(store))
    for email, fields, unsubscribed, bounced in found:
        if unsubscribed or bounced or blocklist.matches(email):
            selection.skipped += 1
            continue
        selection.due.append(Recipient(email, {**fields, "email": email}))
    return selection


def why_not_due(
    email: str, confirmed: str | None, cutoff: str | None, send: dict[str, Any] | None
) -> str | None:
    """Why the job's next run would not mail one active member of its list, or None if it
    would: select_recipients and the backend's candidates() read for one address (a member
    that is not active is skipped whatever this says). `confirmed` is its double opt-in
    date, `cutoff` the job's first run, `send` the job's send to `email` (a sends row)."""
    if cutoff is None:
        return "the job has never run: its first run sets the cut-off"
    if confirmed is None:
        return "no double opt-in confirmation"
    if confirmed <= cutoff:
        return f"confirmed {confirmed}, not after the job's cut-off {cutoff}"
    if send is None or send["state"] == "deferred":
        return None  # due: a deferred send is tried again
    return _SEND_STATES[send["state"]].format(**{**send, "email": email})


# Why a send of each state keeps the job from mailing the address again.
_SEND_STATES = {
    "sent": "already sent on {updated_at} (mailing {mailing})",
    "failed": "the send of {updated_at} was refused (hard bounce); never retried",
    "unknown": "the outcome of the send of {updated_at} is unknown; settle it with "
    "`campaign-sync sends settle {job} {email} --delivered|--not-delivered`",
    "sending": "being sent by run {run_id}",
}


# --------------------------------------------------------------------------- sending


def _check_template(mailing: Mailing, sender: str) -> None:
    """Fail the run when the mailing itself cannot make a message (two Subject headers, a
    header the template breaks): only errors a recipient's own data causes are skipped
    one recipient at a time."""
    from .mailing import personalise

    try:
        personalise(mailing, recipient=sender, fields={}, sender=sender, message_id="<check@x>")
    except ValueError as exc:
        raise InputError(f"mailing {mailing.path}: {exc}") from None


def _send_all(run: Sending, smtp: SmtpConfig, due: list[Recipient], work: Work | None) -> None:
    from .smtp import SmtpSession

    bar = work(run.job.name, "sent", total=len(due)) if work else nullcontext(None)
    # Connect before claiming anyone: a server that is down fails the run with nothing claimed.
    with SmtpSession(smtp) as session, bar as tick:
        for done, recipient in enumerate(_paced(due, run.job.rate), 1):
            _send_one(run, session, smtp, recipient)
            if tick is not None:
                tick(done, None)


def _paced(items: list[Recipient], rate: float | None) -> Iterator[Recipient]:
    """Yield the items no faster than `rate` per second (on average, without drift)."""
    start = time.monotonic()
    for index, item in enumerate(items):
        if rate:
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield item


def _send_one(run: Sending, session: SmtpSession, smtp: SmtpConfig, recipient: Recipient) -> None:
    from .smtp import DeliveryUnknown

    result = run.result
    from .mailing import new_message_id, personalise

    message_id = new_message_id(smtp.sender)
    try:
        message = personalise(
            run.mailing,
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
    send_id = claim(run, recipient.email, message_id)
    if send_id is None:
        log.info("%s: claimed by another run meanwhile; left to it", recipient.email)
        return
    try:
        outcome = session.send(message, [recipient.email])
    except DeliveryUnknown as exc:
        settle(run, send_id, "unknown", str(exc))
        result.counts["unknown"] += 1
        result.warnings.append(f"outcome unknown: {recipient.email} (Message-ID {message_id})")
        raise
    except MailError as exc:
        settle(run, send_id, "deferred", str(exc))  # nothing handed over: retry next run
        raise
    # Anything else (a bug, Ctrl-C) leaves the row `sending`: whether data went out is not
    # known, so the next run reports it as unknown, exactly as after kill -9.
    _record_outcome(run, send_id, recipient.email, outcome)


def _record_outcome(run: Sending, send_id: int, email: str, outcome: SendOutcome) -> None:
    result = run.result
    refusal = outcome.refused.get(email)
    if refusal is None:
        settle(run, send_id, "sent", "")
        result.counts["sent"] += 1
        return
    if refusal.stage == "local":
        # Our session cannot carry the address (no SMTPUTF8): not the recipient's bounce.
        # Left for a later run (perhaps via another server) and counted as skipped.
        settle(run, send_id, "deferred", str(refusal))
        result.counts["skipped"] += 1
        result.warnings.append(f"not sent to {email}: {refusal.text}")
        return
    state = "failed" if refusal.permanent else "deferred"
    settle(run, send_id, state, str(refusal), bounce=(email, refusal.kind, run.job.name))
    result.counts["bounced"] += 1
    log.info("%s: %s bounce (%s)", email, refusal.kind, refusal)


def claim(run: Sending, email: str, message_id: str) -> int | None:
    """Mark the send `sending` (committed, before any SMTP command for it); None if another
    run holds or finished it. A `deferred` send is taken over; any other is left alone."""
    return run.sends.claim(
        run.store,
        run.job.name,
        email,
        list_name=run.job.list,
        mailing=run.mailing.name,
        mailing_id=run.mailing.mailing_id,
        message_id=message_id,
        run_id=run.result.run_id,
    )


def settle(
    run: Sending,
    send_id: int,
    state: str,
    detail: str,
    *,
    bounce: tuple[str, str, str] | None = None,
) -> None:
    """Record how a claimed send ended, with its bounce (email, kind, job) in the same
    transaction."""
    run.sends.settle(run.store, send_id, state, detail, bounce)


# --------------------------------------------------------------------------- dry run


def _dry_run_message(mailing: Mailing, selection: Selection, sender: str) -> str:
    from .mailing import personalise

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
