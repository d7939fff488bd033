"""blocklist-import: patterns (lower-cased, `*` `?` `\\` escapes) with a reason.

Upsert adds new patterns and updates the reason of existing ones; `replace` also deletes
every pattern the file does not have, under the same removal guard as recipient lists.
A file without a `reason` column leaves existing reasons alone.
"""

from __future__ import annotations

import operator
from collections import Counter
from functools import partial

from ..core import addresses
from ..csvio.read import CsvRows
from .common import (
    ErasedEntries,
    MergeContext,
    Rejects,
    RowRejected,
    cell,
    guard_removals,
    resolve_columns,
    stage_checked,
    zero,
)


def merge_blocklist(ctx: MergeContext, src: CsvRows, name: str) -> tuple[Counter[str], Rejects]:
    conn, job = ctx.conn, ctx.job
    columns = resolve_columns(src, job, name)
    pattern_at = columns["pattern"]
    reason_of = cell(columns.get("reason"), job.defaults.get("reason"))
    counts: Counter[str] = Counter()
    rejects = Rejects(ctx, src.header)

    def check(row: list[str]) -> tuple[str, str | None]:
        pattern = addresses.normalise(row[pattern_at])
        if not pattern:
            raise RowRejected("empty pattern")
        problem = addresses.pattern_problem(pattern)
        if problem:
            raise RowRejected(f"invalid pattern: {problem}")
        return pattern, None if reason_of is None else reason_of(row).strip()

    sql = ctx.store.sql("blocklist")
    # A pattern without wildcards names one address: an erased one is not added back (a
    # pattern with a wildcard names nobody in particular and always goes in).
    erased = None
    if ctx.erased:
        cell_of = operator.itemgetter(pattern_at)
        erased = ErasedEntries(ctx.erased, cell_of, addresses.literal_pattern)
    distinct = stage_checked(ctx, src, counts, rejects, check, partial(sql.stage, conn), erased)
    counts.update(sql.classify(conn, job.mode))
    if job.mode == "replace":
        members, removed = sql.members_and_removed(conn)
        counts["removed"] = removed
        guard_removals(ctx, members, removed, distinct, "the blocklist")
    sql.apply(conn, ctx.now, replace=job.mode == "replace")
    sql.drop(conn)
    zero(counts, *(("removed",) if job.mode == "replace" else ()))
    return counts, rejects
