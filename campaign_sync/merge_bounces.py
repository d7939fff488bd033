"""bounce-import: bounces reported by a partner (address, hard|soft, optional date).

Bounces are events, appended to the store. A dated bounce already recorded (same address,
type and time) counts as unchanged and is not added twice, so importing an overlapping or
the same file (--force) does not outbounce anybody by itself; an undated one is "now".
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from . import addresses
from .csvread import CsvRows
from .merge import (
    MergeContext,
    Rejects,
    check_rejects,
    dated,
    email_problem,
    resolve_columns,
    stage,
    tally,
    zero,
)

FIELDS = ("email", "type", "date")
TYPES = ("hard", "soft")


def merge_bounces(ctx: MergeContext, src: CsvRows, name: str) -> tuple[Counter[str], Rejects]:
    conn, job = ctx.conn, ctx.job
    columns = resolve_columns(src.header, job, ("email", "type"), name, known=FIELDS)
    email_at, type_at, date_at = columns["email"], columns["type"], columns.get("date")
    width = len(src.header)
    counts: Counter[str] = Counter()
    rejects = Rejects(ctx, src.header)

    def staged_rows() -> Any:
        for line, row in src.rows:
            counts["read"] += 1
            if len(row) != width:
                rejects.add(line, row, f"has {len(row)} fields, the header has {width}")
                continue
            email = addresses.normalise(row[email_at])
            problem = email_problem(email)
            if problem:
                rejects.add(line, row, problem)
                continue
            kind = row[type_at].strip().lower()
            if kind not in TYPES:
                rejects.add(line, row, f"type: expected hard or soft, got '{kind[:20]}'")
                continue
            try:
                when = None if date_at is None else dated(row[date_at], ctx, "date")
            except ValueError as exc:
                rejects.add(line, row, str(exc))
                continue
            yield email, kind, when or ctx.now

    with rejects.collecting():
        distinct = stage(
            conn,
            "email TEXT NOT NULL, type TEXT NOT NULL, at TEXT NOT NULL",
            ["email", "type", "at"],
            ["email", "type", "at"],
            staged_rows(),
        )
    check_rejects(ctx, counts, rejects)
    counts["duplicates"] = counts["read"] - rejects.count - distinct

    conn.execute(
        """
        UPDATE incoming SET action = CASE WHEN EXISTS (
            SELECT 1 FROM bounces AS b WHERE b.email = incoming.email
              AND b.type = incoming.type AND b.bounced_at = incoming.at)
          THEN 'unchanged' ELSE 'inserted' END
        """
    )
    tally(conn, counts)
    conn.execute(
        "INSERT INTO bounces (email, type, bounced_at, source) "
        "SELECT email, type, at, ? FROM incoming WHERE action = 'inserted' ORDER BY at, email",
        (job.name,),
    )
    conn.execute("DROP TABLE temp.incoming")
    zero(counts)
    return counts, rejects
