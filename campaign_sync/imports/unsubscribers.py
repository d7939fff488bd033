"""unsubscriber-import: who unsubscribed from which list (empty list: from all lists), when.

Records are kept: a known (address, list) keeps its earliest record and moves its date only
forward (a later unsubscription), never back, so an import can never weaken a suppression.
A row without a date means "now" for a new record and "as recorded" for a known one.
A row naming a list that is neither in the store nor named by a configured job is rejected
(list names are exact: 'Newsletter' is not 'newsletter'); it would never apply to anyone.
Matching recipients become `unsubscribed` unless they confirmed double opt-in after the
unsubscription (the same rule that lets such a row re-subscribe them): a confirmation dated
in the future, which an older version may have stored, never keeps anyone subscribed.
"""

from __future__ import annotations

import operator
from collections import Counter
from functools import partial

from ..core import addresses
from ..csvio.read import CsvRows
from ..errors import InputError
from .common import (
    ErasedEntries,
    MergeContext,
    Rejects,
    RowRejected,
    cell,
    dated,
    email_problem,
    resolve_columns,
    stage_checked,
    zero,
)

LISTS_SHOWN = 10  # list names in a reject's reason


def merge_unsubscribers(ctx: MergeContext, src: CsvRows, name: str) -> tuple[Counter[str], Rejects]:
    conn, job = ctx.conn, ctx.job
    columns = resolve_columns(src, job, name)
    email_at = columns["email"]
    list_of, date_of, reason_of = (
        cell(columns.get(key), job.defaults.get(key)) for key in ("list", "date", "reason")
    )
    counts: Counter[str] = Counter()
    rejects = Rejects(ctx, src.header)
    sql = ctx.store.sql("unsubscribers")
    lists = ctx.configured_lists | sql.list_names(conn)
    default_list = job.defaults.get("list")
    if default_list is not None and default_list not in lists:  # else every row is rejected
        raise InputError(
            f"jobs.{job.name}.defaults.list: {_unknown(default_list, lists)}; name a list that "
            "a job of the configuration imports or the store holds"
        )

    def check(row: list[str]) -> tuple[str, str, str | None, str | None]:
        email = addresses.normalise(row[email_at])
        problem = email_problem(email)
        if problem:
            raise RowRejected(problem)
        when = None if date_of is None else dated(date_of(row), ctx, "date")
        list_name = "" if list_of is None else list_of(row).strip()
        if list_name and list_name not in lists:
            raise RowRejected(f"list: {_unknown(list_name, lists)}")
        reason = None if reason_of is None else reason_of(row).strip()
        return email, list_name, when, reason

    erased = ErasedEntries(ctx.erased, operator.itemgetter(email_at)) if ctx.erased else None
    stage_checked(ctx, src, counts, rejects, check, partial(sql.stage, conn), erased)
    counts.update(sql.classify(conn, job.mode))
    sql.apply(conn, ctx.now)
    counts["unsubscribed"] = sql.unsubscribe_recipients(conn, ctx.now, ctx.latest)
    sql.drop(conn)
    zero(counts, "unsubscribed")
    return counts, rejects


def _unknown(name: str, lists: set[str] | frozenset[str]) -> str:
    """Why a list name is refused, with the names that would do (the first few)."""
    known = sorted(lists)
    shown = ", ".join(known[:LISTS_SHOWN]) or "none yet"
    more = f" and {len(known) - LISTS_SHOWN} more" if len(known) > LISTS_SHOWN else ""
    return f"no list '{name[:60]}' (lists: {shown}{more})"
