"""Writing store data to a private CSV staging file, ready to be uploaded.

Rows stream from SQLite straight into the CSV writer (gzip-compressed for .gz targets):
memory stays flat whatever the list size.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

from . import store
from .addresses import Blocklist
from .config import BounceLimits, JobConfig
from .csvwrite import CsvWriter
from .errors import InputError

# Columns of the recipients table itself; every other field lives in the JSON `fields`.
BUILTIN_FIELDS = ("email", "status", "doi_confirmed_at", "created_at", "updated_at")


def outbounced_sql(limits: BounceLimits) -> tuple[str, tuple[int, int]]:
    """A sub-select of the addresses at or over a bounce limit, with its parameters."""
    return (
        "SELECT email FROM bounces GROUP BY email "
        "HAVING sum(type = 'hard') >= ? OR sum(type = 'soft') >= ?",
        (limits.hard_limit, limits.soft_limit),
    )


def write_export(
    conn: sqlite3.Connection,
    job: JobConfig,
    bounces: BounceLimits,
    staging: Path,
    *,
    changed_since: str | None,
) -> int:
    """Write the job's rows to `staging`; returns the number of data rows written."""
    compress = job.target is not None and job.target.path.endswith(".gz")
    writer = CsvWriter(staging, job.format, compress=compress)
    try:
        if job.type == "recipient-export":
            header, rows = _recipient_rows(conn, job, bounces, changed_since)
        else:
            raise InputError(f"{job.type} jobs are not supported by this version yet")
        writer.write_header(header)
        for cells in rows:
            writer.write(cells)
    finally:
        writer.close()
    return writer.rows


def _recipient_fields(conn: sqlite3.Connection, job: JobConfig, list_id: int) -> list[str]:
    if job.fields:
        return list(job.fields)
    # No fields configured: the address, then every field any member has, sorted.
    found = conn.execute(
        "SELECT DISTINCT j.key FROM recipients AS r, json_each(r.fields) AS j "
        "WHERE r.list_id = ? ORDER BY j.key",
        (list_id,),
    ).fetchall()
    return ["email", *(key for (key,) in found if key not in BUILTIN_FIELDS)]


def _recipient_rows(
    conn: sqlite3.Connection,
    job: JobConfig,
    bounces: BounceLimits,
    changed_since: str | None,
) -> tuple[list[str], Iterable[list[str]]]:
    assert job.list is not None
    list_id = store.list_id(conn, job.list, create=False)
    if list_id is None:
        fields = list(job.fields) or ["email"]
        return _header(fields, job), iter(())
    fields = _recipient_fields(conn, job, list_id)
    selected = [name if name in BUILTIN_FIELDS else "json_extract(fields, ?)" for name in fields]
    params: list[object] = [f'$."{name}"' for name in fields if name not in BUILTIN_FIELDS]
    outbounced, bounce_params = outbounced_sql(bounces)
    query = (
        f"SELECT email, status, email IN ({outbounced}) AS outbounced, "
        f"{', '.join(selected)} FROM recipients WHERE list_id = ?"
    )
    params = [*bounce_params, *params, list_id]
    if changed_since:
        query += " AND updated_at > ?"
        params.append(changed_since)
    else:
        query += " AND status != 'removed'"
    if job.include == "active" and not changed_since:
        query += " AND status = 'active'"
    query += " ORDER BY email"
    blocklist = Blocklist(row[0] for row in conn.execute("SELECT pattern FROM blocklist"))
    cursor = conn.execute(query, params)
    return _header(fields, job, changed_since), _recipient_cells(
        cursor, job, blocklist, changed_since
    )


def _header(fields: list[str], job: JobConfig, changed_since: str | None = None) -> list[str]:
    with_status = job.include == "all" or changed_since is not None
    return [*fields, "status"] if with_status and "status" not in fields else fields


def _recipient_cells(
    cursor: sqlite3.Cursor, job: JobConfig, blocklist: Blocklist, changed_since: str | None
) -> Iterator[list[str]]:
    with_status = job.include == "all" or changed_since is not None
    for email, status, outbounced, *values in cursor:
        effective = status
        if status == "active" and blocklist.matches(email):
            effective = "blocklisted"
        elif status == "active" and outbounced:
            effective = "outbounced"
        if job.include == "active" and changed_since is None and effective != "active":
            continue  # a changes-only export reports every change, with its status
        cells = ["" if value is None else str(value) for value in values]
        if with_status and "status" not in job.fields:
            cells.append(effective)
        yield cells
