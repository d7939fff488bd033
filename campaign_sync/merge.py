"""Merging a parsed CSV file into the store.

The caller owns the transaction: everything here runs inside one, so a failure at any
point (a limit, a broken line, a crash) leaves the store exactly as it was. A dry run is
the same work rolled back, so its counts are exactly a real run's.

Recipient files are staged row by row into a temporary table and then merged with a
handful of set-based statements: memory stays bounded whatever the file size, and
SQLite does the joins instead of Python.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Any

from . import addresses, store, workdir
from .config import FIELD_NAME, JobConfig, Limit
from .csvread import CsvRows
from .dates import parse_date
from .errors import InputError, LimitExceeded

# Defaults when a job sets no limit: a mostly broken file or a "sync" that empties a list
# must not go through silently. --force (removals) or an explicit limit overrides.
DEFAULT_MAX_REJECTS = Limit(10, percent=True)
DEFAULT_MAX_REMOVALS = Limit(10, percent=True)
FIRST_REJECTS = 10

# Fields kept in their own columns or managed by us: a file cannot set them as fields.
RESERVED_FIELDS = ("status", "created_at", "updated_at", "list", "fields")


@dataclass
class MergeContext:
    conn: sqlite3.Connection
    job: JobConfig
    tz: tzinfo
    work_dir: Path
    run_id: int | None
    force: bool = False
    now: str = field(default_factory=store.now)


class Rejects:
    """Rejected rows, written as they come to a private CSV: line, reason, original cells."""

    def __init__(self, ctx: MergeContext, header: list[str]):
        self.ctx = ctx
        self.header = header
        self.count = 0
        self.first: list[dict[str, Any]] = []
        self.path: Path | None = None
        self._file: Any = None
        self._writer: Any = None

    def add(self, line: int, row: list[str], reason: str) -> None:
        self.count += 1
        if len(self.first) < FIRST_REJECTS:
            self.first.append({"line": line, "reason": reason, "row": row})
        if self._writer is None:
            self.path = workdir.rejects_file(self.ctx.work_dir, self.ctx.job.name, self.ctx.run_id)
            self._file = open(self.path, "w", encoding="utf-8", newline="")  # noqa: SIM115
            self._writer = csv.writer(self._file, delimiter=self.ctx.job.format.delimiter)
            self._writer.writerow(["line", "reason", *self.header])
        self._writer.writerow([line, reason, *row])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def resolve_columns(
    header: list[str], job: JobConfig, required: tuple[str, ...], name: str
) -> dict[str, int]:
    """Map field names to column positions, matching headers case- and space-insensitively.

    With `columns` configured, only mapped headers are used; without it every header is a
    field name and must look like one.
    """
    mapping = {key.strip().lower(): target for key, target in job.columns.items()}
    positions: dict[str, int] = {}
    for index, raw in enumerate(header):
        key = raw.strip().lower()
        if mapping:
            target = mapping.get(key)
            if target is None:
                continue  # unmapped columns are ignored
        else:
            target = key
            if not FIELD_NAME.match(target):
                raise InputError(
                    f"{name}: column {index + 1} '{raw}' is not a field name; map it in the "
                    f"job's columns (e.g. columns: {{'{raw}': some_field}})"
                )
        if target in positions:
            raise InputError(f"{name}: two columns give the field '{target}'")
        positions[target] = index
    for key in required:
        if key not in positions:
            raise InputError(
                f"{name}: no '{key}' column (header: {', '.join(header)[:200]}); "
                f"map yours in the job's columns, e.g. columns: {{E-Mail: {key}}}"
            )
    return positions


def check_limit(count: int, total: int, limit: Limit, what: str, hint: str) -> None:
    if count > limit.allowed(total):
        raise LimitExceeded(f"{count} of {total} {what}, more than the limit {limit}; {hint}")


# --------------------------------------------------------------------------- recipients


def merge_recipients(ctx: MergeContext, src: CsvRows, name: str) -> tuple[Counter[str], Rejects]:
    job, conn = ctx.job, ctx.conn
    assert job.list is not None
    columns = resolve_columns(src.header, job, ("email",), name)
    reserved = sorted(set(columns) & set(RESERVED_FIELDS))
    if reserved:
        raise InputError(f"{name}: '{reserved[0]}' is managed by campaign-sync, not by a file")
    email_at = columns.pop("email")
    doi_at = columns.pop("doi_confirmed_at", None)
    field_at = list(columns.items())
    width = len(src.header)
    counts: Counter[str] = Counter()
    rejects = Rejects(ctx, src.header)
    blocklist = load_blocklist(conn)

    def staged_rows() -> Any:
        for line, row in src.rows:
            counts["read"] += 1
            if len(row) != width:
                rejects.add(line, row, f"has {len(row)} fields, the header has {width}")
                continue
            email = addresses.normalise(row[email_at])
            reason = addresses.check(email) if email else "empty email address"
            if reason:
                rejects.add(line, row, reason)
                continue
            doi = None
            if doi_at is not None and row[doi_at].strip():
                try:
                    doi = parse_date(row[doi_at], job.format.date_format, ctx.tz)
                except ValueError as exc:
                    rejects.add(line, row, f"doi_confirmed_at: {exc}")
                    continue
            values = {key: row[index].strip() for key, index in field_at}
            fields = json.dumps(values, ensure_ascii=False, separators=(",", ":"))
            yield email, fields, doi, bool(blocklist.matches(email))

    try:
        conn.execute("DROP TABLE IF EXISTS temp.incoming")
        conn.execute(
            "CREATE TEMP TABLE incoming (email TEXT PRIMARY KEY, fields TEXT NOT NULL, "
            "doi TEXT, blocked INTEGER NOT NULL, action TEXT) WITHOUT ROWID"
        )
        # INSERT OR REPLACE: of duplicate addresses in one file, the last row wins.
        conn.executemany(
            "INSERT OR REPLACE INTO incoming (email, fields, doi, blocked) VALUES (?, ?, ?, ?)",
            staged_rows(),
        )
    finally:
        rejects.close()
    counts["rejected"] = rejects.count
    check_limit(
        rejects.count,
        counts["read"],
        job.max_rejects or DEFAULT_MAX_REJECTS,
        "rows were rejected",
        "nothing was applied (max_rejects)",
    )
    distinct = conn.execute("SELECT count(*) FROM incoming").fetchone()[0]
    counts["duplicates"] = counts["read"] - rejects.count - distinct

    list_id = store.list_id(conn, job.list, create=True)
    _classify(conn, list_id, job)
    for action, number in conn.execute("SELECT action, count(*) FROM incoming GROUP BY action"):
        counts[action] += number
    if job.mode == "replace":
        counts["removed"] = _guard_replace(ctx, list_id, distinct)
    _apply(conn, list_id, ctx.now, replace=job.mode == "replace")
    conn.execute("DROP TABLE temp.incoming")
    for key in ("inserted", "updated", "unchanged"):
        counts.setdefault(key, 0)
    return counts, rejects


def _classify(conn: sqlite3.Connection, list_id: int, job: JobConfig) -> None:
    """Decide per staged row: inserted, updated, unchanged, ignored or suppressed."""
    conn.execute(
        """
        UPDATE incoming SET action = CASE
            WHEN r.status = 'removed' THEN 'inserted'
            WHEN r.status = 'unsubscribed' THEN 'reactivate'
            WHEN json_patch(r.fields, incoming.fields) != r.fields
                 OR (incoming.doi IS NOT NULL AND incoming.doi IS NOT r.doi_confirmed_at)
                THEN 'updated'
            ELSE 'unchanged' END
        FROM recipients AS r
        WHERE r.list_id = ? AND r.email = incoming.email
        """,
        (list_id,),
    )
    conn.execute("UPDATE incoming SET action = 'inserted' WHERE action IS NULL")
    # Never add a blocklisted address; never re-subscribe an unsubscriber unless this row
    # carries a double opt-in confirmation newer than the unsubscription.
    conn.execute(
        "UPDATE incoming SET action = 'suppressed_blocklisted' "
        "WHERE action = 'inserted' AND blocked"
    )
    conn.execute(
        """
        UPDATE incoming SET action = 'suppressed_unsubscribed'
        WHERE action IN ('inserted', 'reactivate') AND EXISTS (
            SELECT 1 FROM unsubscribers AS u
            WHERE u.email = incoming.email AND u.list IN ('', ?)
              AND (incoming.doi IS NULL OR incoming.doi <= u.unsubscribed_at))
        """,
        (job.list,),
    )
    conn.execute("UPDATE incoming SET action = 'updated' WHERE action = 'reactivate'")
    if job.mode == "add-only":
        conn.execute("UPDATE incoming SET action = 'ignored' WHERE action = 'updated'")
    elif job.mode == "update-only":
        conn.execute("UPDATE incoming SET action = 'ignored' WHERE action = 'inserted'")


def _guard_replace(ctx: MergeContext, list_id: int, distinct: int) -> int:
    """Count the members a replace removes, refusing to empty or gut a list without --force."""
    conn, job = ctx.conn, ctx.job
    members = conn.execute(
        "SELECT count(*) FROM recipients WHERE list_id = ? AND status != 'removed'", (list_id,)
    ).fetchone()[0]
    removed = conn.execute(
        "SELECT count(*) FROM recipients WHERE list_id = ? AND status != 'removed' "
        "AND email NOT IN (SELECT email FROM incoming)",
        (list_id,),
    ).fetchone()[0]
    if ctx.force:
        return int(removed)
    if distinct == 0 and members:
        raise LimitExceeded(
            f"the file has no valid data rows: replace would empty list '{job.list}' "
            f"({members} members); nothing was applied (use --force if that is intended)"
        )
    check_limit(
        removed,
        members,
        job.max_removals or DEFAULT_MAX_REMOVALS,
        f"members of list '{job.list}' would be removed",
        "nothing was applied (max_removals; use --force if that is intended)",
    )
    return int(removed)


def _apply(conn: sqlite3.Connection, list_id: int, now: str, *, replace: bool) -> None:
    conn.execute(
        """
        INSERT INTO recipients
            (list_id, email, status, fields, doi_confirmed_at, created_at, updated_at)
        SELECT ?, email, 'active', json(fields), doi, ?, ? FROM incoming
        WHERE action = 'inserted'
        ON CONFLICT (list_id, email) DO UPDATE SET
            status = 'active', fields = excluded.fields,
            doi_confirmed_at = excluded.doi_confirmed_at,
            created_at = excluded.created_at, updated_at = excluded.updated_at
        """,
        (list_id, now, now),
    )
    conn.execute(
        """
        UPDATE recipients SET
            fields = json_patch(recipients.fields, i.fields),
            doi_confirmed_at = coalesce(i.doi, recipients.doi_confirmed_at),
            status = 'active', updated_at = ?
        FROM incoming AS i
        WHERE recipients.list_id = ? AND recipients.email = i.email AND i.action = 'updated'
        """,
        (now, list_id),
    )
    if replace:
        conn.execute(
            "UPDATE recipients SET status = 'removed', updated_at = ? "
            "WHERE list_id = ? AND status != 'removed' "
            "AND email NOT IN (SELECT email FROM incoming)",
            (now, list_id),
        )


def load_blocklist(conn: sqlite3.Connection) -> addresses.Blocklist:
    return addresses.Blocklist(row[0] for row in conn.execute("SELECT pattern FROM blocklist"))


# --------------------------------------------------------------------------- dispatching


def merge(ctx: MergeContext, src: CsvRows, name: str) -> tuple[Counter[str], Rejects]:
    """Merge a file into the store according to the job's type."""
    if ctx.job.type == "recipient-import":
        return merge_recipients(ctx, src, name)
    raise InputError(f"{ctx.job.type} jobs are not supported by this version yet")
