"""bounce-import: bounces reported by a partner (address, hard|soft, optional date).

Bounces are events, appended to the store. A dated bounce already recorded (same address,
type and time) counts as unchanged and is not added twice, so importing an overlapping or
the same file (--force) does not outbounce anybody by itself; rows of one file with the same
address, type and date are one bounce (duplicates). An undated row is a bounce of its own,
dated "now": three undated hard bounces of one address in a file are three bounces.
"""

from __future__ import annotations

import itertools
import operator
from collections import Counter
from functools import partial

from ..config.model import BOUNCE_TYPES
from ..core import addresses
from ..csvio.read import CsvRows
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


def merge_bounces(ctx: MergeContext, src: CsvRows, name: str) -> tuple[Counter[str], Rejects]:
    conn, job = ctx.conn, ctx.job
    columns = resolve_columns(src, job, name)
    email_at = columns["email"]
    type_of, date_of = (cell(columns.get(key), job.defaults.get(key)) for key in ("type", "date"))
    assert type_of is not None  # a column or a default: resolve_columns saw to that
    counts: Counter[str] = Counter()
    rejects = Rejects(ctx, src.header)

    undated = itertools.count(1)

    def check(row: list[str]) -> tuple[str, str, str, int]:
        email = addresses.normalise(row[email_at])
        problem = email_problem(email)
        if problem:
            raise RowRejected(problem)
        kind = type_of(row).strip().lower()
        if kind not in BOUNCE_TYPES:
            raise RowRejected(f"type: expected hard or soft, got '{kind[:20]}'")
        when = None if date_of is None else dated(date_of(row), ctx, "date")
        # `event` keeps undated rows apart (each its own number); dated rows share 0, so
        # the same address, type and date in one file is one bounce.
        return (email, kind, when, 0) if when else (email, kind, ctx.now, next(undated))

    sql = ctx.store.sql("bounces")
    erased = ErasedEntries(ctx.erased, operator.itemgetter(email_at)) if ctx.erased else None
    stage_checked(ctx, src, counts, rejects, check, partial(sql.stage, conn), erased)
    counts.update(sql.classify(conn))
    sql.apply(conn, job.name, ctx.now)
    sql.drop(conn)
    zero(counts)
    return counts, rejects
