"""blocklist-import: patterns (lower-cased, `*` `?` `\\` escapes) with a reason.

Upsert adds new patterns and updates the reason of existing ones; `replace` also deletes
every pattern the file does not have, under the same removal guard as recipient lists.
A file without a `reason` column leaves existing reasons alone.
"""

from __future__ import annotations

from collections import Counter

from ..core import addresses
from ..csvio.read import CsvRows
from .common import (
    MergeContext,
    Rejects,
    RowRejected,
    cell,
    guard_removals,
    resolve_columns,
    restrict_to_mode,
    stage_checked,
    tally,
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

    table = ("pattern TEXT NOT NULL, reason TEXT", ["pattern"], ["pattern", "reason"])
    distinct = stage_checked(ctx, src, counts, rejects, check, table)

    conn.execute(
        """
        UPDATE incoming SET action = CASE
            WHEN incoming.reason IS NULL OR incoming.reason = b.reason THEN 'unchanged'
            ELSE 'updated' END
        FROM blocklist AS b WHERE b.pattern = incoming.pattern
        """
    )
    conn.execute("UPDATE incoming SET action = 'inserted' WHERE action IS NULL")
    restrict_to_mode(conn, job.mode)
    tally(conn, counts)
    if job.mode == "replace":
        members, removed = conn.execute(
            "SELECT count(*), count(*) FILTER "
            "(WHERE pattern NOT IN (SELECT pattern FROM incoming)) FROM blocklist"
        ).fetchone()
        counts["removed"] = removed
        guard_removals(ctx, members, removed, distinct, "the blocklist")
    _apply(ctx, replace=job.mode == "replace")
    conn.execute("DROP TABLE temp.incoming")
    zero(counts, *(("removed",) if job.mode == "replace" else ()))
    return counts, rejects


def _apply(ctx: MergeContext, *, replace: bool) -> None:
    conn, now = ctx.conn, ctx.now
    conn.execute(
        "INSERT INTO blocklist (pattern, reason, created_at, modified_at) "
        "SELECT pattern, coalesce(reason, ''), ?, ? FROM incoming WHERE action = 'inserted'",
        (now, now),
    )
    conn.execute(
        "UPDATE blocklist SET reason = incoming.reason, modified_at = ? FROM incoming "
        "WHERE blocklist.pattern = incoming.pattern AND incoming.action = 'updated'",
        (now,),
    )
    if replace:
        gone = "FROM blocklist WHERE pattern NOT IN (SELECT pattern FROM incoming)"
        removed = [pattern for (pattern,) in conn.execute(f"SELECT pattern {gone}")]
        conn.execute(f"DELETE {gone}")
        _touch_unblocked(ctx, removed)


def _touch_unblocked(ctx: MergeContext, patterns: list[str]) -> None:
    """Members a removed pattern matched may be active again; touching them makes
    changes-only exports see that (as bounce imports do for newly outbounced ones)."""
    if not patterns:
        return
    matcher = addresses.Blocklist(patterns)
    ctx.conn.create_function(
        "cs_was_blocked", 1, lambda email: matcher.matches(email) is not None, deterministic=True
    )
    ctx.conn.execute(
        "UPDATE recipients SET updated_at = ? WHERE status != 'removed' AND cs_was_blocked(email)",
        (ctx.now,),
    )
