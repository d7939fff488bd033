"""Export rows from the SQLite store: the SQL behind exports/export.py (which names the
columns, and writes the header and the file).

Rows stream from SQLite straight into the CSV writer in chunks: memory stays flat whatever
the list size. A recipient list's rows come packed by SQLite, a chunk per query (see
_chunk_query); a big list is read in parts by child processes (parts.py). Dates go through
the job's date_format as an SQL function (cs_date) in the config's zone.

Every function runs inside the caller's read transaction (Store.begin_snapshot), which also
fixes the changes-only watermark.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

from ... import store
from ...config.model import BounceLimits, JobConfig
from ...core.dates import date_formatter
from ...core.schedule import zone
from ...csvio.write import CELL_SEP, JSON_ROW, ROW_SEP, CsvWriter
from .parts import ChildPart, serve_part, write_in_order
from .statuses import (
    SqlPlan,
    blocklist_sql,
    has_rows,
    register_matcher,
    status_checks,
    status_expression,
    temp_set,
)

# Columns of the recipients table itself; every other field lives in the JSON `fields`.
BUILTIN_FIELDS = ("email", "status", "doi_confirmed_at", "created_at", "updated_at")
DATE_FIELDS = ("doi_confirmed_at", "created_at", "updated_at")

# Rows per fetch (and per packed chunk): per-query overhead vanishes, memory stays flat.
CHUNK_ROWS = 4000
# A list this big is read in parts by several connections at once, one per core (at most
# PARTS): a second connection costs its setup, which pays off only for big lists.
PARALLEL_MIN_ROWS = 200_000
PARTS = min(2, os.cpu_count() or 1)
# This process also formats every chunk, so its part is a little smaller than a child's
# (1M rows in 2 parts, medians of 5: a 45/55 cut took 1.93 s, 40/60 1.95 s, 50/50 2.00 s).
OWN_WEIGHT, CHILD_WEIGHT = 9, 11

Rows = Sequence[Sequence[object]]


# --------------------------------------------------------------------------- small exports
# Each gives the rows of one small export in chunks, in the columns exports/export.py names.


def blocklist_rows(
    conn: sqlite3.Connection,
    job: JobConfig,
    limits: BounceLimits,
    changed_since: str | None,
    timezone: str | None,
) -> Iterator[Rows]:
    """pattern, reason, created, modified: the patterns (changed since the watermark)."""
    _register_date_format(conn, job.format.date_format, timezone)
    _date = _dater(job)
    where = "WHERE modified_at > :since" if changed_since else ""
    query = (
        f"SELECT pattern, reason, {_date('created_at')}, {_date('modified_at')} "
        f"FROM blocklist {where} ORDER BY pattern"
    )
    return _fetch(conn, query, {"since": changed_since})


def unsubscriber_rows(
    conn: sqlite3.Connection,
    job: JobConfig,
    limits: BounceLimits,
    changed_since: str | None,
    timezone: str | None,
) -> Iterator[Rows]:
    """email, list, date, reason: the job's list's and the client-wide unsubscriptions."""
    _register_date_format(conn, job.format.date_format, timezone)
    _date = _dater(job)
    conditions = []
    if job.list:
        conditions.append("list IN ('', :list)")  # this list's and the client-wide ones
    if changed_since:
        conditions.append("changed_at > :since")  # in the store since, whatever its date
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    query = (
        f"SELECT email, list, {_date('unsubscribed_at')}, reason FROM unsubscribers "
        f"{where} ORDER BY email, list"
    )
    return _fetch(conn, query, {"list": job.list, "since": changed_since})


def bounce_rows(
    conn: sqlite3.Connection,
    job: JobConfig,
    limits: BounceLimits,
    changed_since: str | None,
    timezone: str | None,
) -> Iterator[Rows]:
    """email, hard and soft bounce counts, last bounce: the outbounced addresses (of the
    job's list, if it names one)."""
    _register_date_format(conn, job.format.date_format, timezone)
    _date = _dater(job)
    params: dict[str, object] = {
        "hard": limits.hard_limit,
        "soft": limits.soft_limit,
        "since": changed_since,
        "list_id": None,
    }
    members = ""
    if job.list:
        params["list_id"] = list_id(conn, job.list)
        members = (
            "WHERE email IN (SELECT email FROM recipients "
            "WHERE list_id = :list_id AND status != 'removed')"
        )
    # A bounce that entered the store since, whatever its date, may outbounce someone.
    recent = " AND max(changed_at) > :since" if changed_since else ""
    query = (
        "SELECT email, sum(type = 'hard'), sum(type = 'soft'), "
        f"{_date('max(bounced_at)')} FROM bounces {members} GROUP BY email "
        f"HAVING (sum(type = 'hard') >= :hard OR sum(type = 'soft') >= :soft){recent} "
        "ORDER BY email"
    )
    return _fetch(conn, query, params)


def _fetch(conn: sqlite3.Connection, query: str, params: dict[str, object]) -> Iterator[Rows]:
    """Small exports: cells in chunks, for the csv module to format."""
    cursor = conn.execute(query, params)
    while rows := cursor.fetchmany(CHUNK_ROWS):
        yield rows


def _register_date_format(
    conn: sqlite3.Connection, date_format: str | None, timezone: str | None
) -> None:
    """cs_date(): a stored UTC ISO date through the job's date_format, in the config's zone,
    the one imports read dates in (only if the job has a date_format).

    The zone shift stays in Python: SQLite's 'localtime' knows only the process's zone, and
    a fixed offset would be wrong on one side of every summer-time switch.
    """
    if not date_format:
        return  # dates go out as stored (UTC, with offset), without a Python call per cell
    formatted = date_formatter(date_format, zone(timezone))
    conn.create_function("cs_date", 1, formatted, deterministic=True)


def _dater(job: JobConfig) -> Callable[[str], str]:
    """Wraps a date column's SQL in cs_date() when the job formats dates."""
    if job.format.date_format:
        return lambda expression: f"cs_date({expression})"
    return lambda expression: expression


# --------------------------------------------------------------------------- recipients


def list_id(conn: sqlite3.Connection, name: str) -> int | None:
    """The id of list `name`; None if it was never imported into."""
    return store.list_id(conn, name, create=False)


def field_names(conn: sqlite3.Connection, list_id: int) -> list[str]:
    """Every key of the list's members' fields, sorted (by code point)."""
    found = conn.execute(
        "SELECT DISTINCT j.key FROM recipients AS r, json_each(r.fields) AS j "
        "WHERE r.list_id = ? ORDER BY j.key",
        (list_id,),
    ).fetchall()
    return [str(key) for (key,) in found]


def write_recipients(
    conn: sqlite3.Connection,
    writer: CsvWriter,
    job: JobConfig,
    limits: BounceLimits,
    list_id: int,
    changed_since: str | None,
    timezone: str | None,
) -> None:
    """The list's rows (the columns of writer.header) after the header the caller wrote."""
    assert job.list is not None, "validated: a recipient-export names its list"
    _register_date_format(conn, job.format.date_format, timezone)
    header = writer.header
    plan = SqlPlan()
    plan.param("list_id", list_id)
    plan.param("list_name", job.list)
    try:
        checks = status_checks(conn, plan, limits)
        _filter(conn, plan, job, checks, changed_since)
        query = _chunk_query(plan, job, header, checks)
        end = conn.execute(
            "SELECT max(email) FROM recipients WHERE list_id = ?", (list_id,)
        ).fetchone()[0]
        params = dict(plan.params, after="")
        later = _later_parts(conn, job, plan, query, list_id, timezone) if end is not None else []
        write_in_order(
            writer,
            lambda limit: _chunks(conn, query, params, limit),
            later,
            end or "",
            writer.path.parent,
        )
    finally:
        plan.drop(conn)


def _filter(
    conn: sqlite3.Connection,
    plan: SqlPlan,
    job: JobConfig,
    checks: dict[str, str],
    changed_since: str | None,
) -> None:
    """Which rows: this list's changes since the watermark, or its members per `include`."""
    plan.conditions.append("r.list_id = :list_id")
    if changed_since is not None:
        plan.conditions.append(f"({_changed(conn, plan, changed_since)})")
    elif job.include == "active":
        # status 'active' already rules out removed and unsubscribed records; the address
        # sets of the other statuses are merged into one, for one lookup per row.
        plan.conditions.append("r.status = 'active'")
        if plan.inactive_sets:
            union = " UNION ".join(f"SELECT value FROM temp.{t}" for t in plan.inactive_sets)
            temp_set(conn, plan, "cs_inactive", union, ())
            plan.conditions.append("r.email NOT IN temp.cs_inactive")
        if "blocklisted" in checks:
            plan.conditions.append(f"NOT ({checks['blocklisted']})")
    else:
        plan.conditions.append("r.status != 'removed'")


def _changed(conn: sqlite3.Connection, plan: SqlPlan, since: str) -> str:
    """Rows whose record or whose status may have changed after `since`.

    A record change (insert, update, unsubscription, removal) moves `updated_at`. A status can
    also change through the other tables: a blocklist pattern added or modified, an
    unsubscription or a bounce stored or changed after the watermark (`changed_at`: the
    partner's own dates say nothing about when we learnt of it). Rows that come along
    without a real change are harmless: they repeat the current state.
    """
    plan.param("since", since)
    changed = ["r.updated_at > :since"]
    if has_rows(conn, "unsubscribers"):
        changed.append(
            "EXISTS (SELECT 1 FROM unsubscribers AS u WHERE u.email = r.email "
            "AND u.list IN ('', :list_name) AND u.changed_at > :since)"
        )
    if has_rows(conn, "bounces"):
        changed.append(
            "EXISTS (SELECT 1 FROM bounces AS b WHERE b.email = r.email AND b.changed_at > :since)"
        )
    recent = [
        row[0]
        for row in conn.execute("SELECT pattern FROM blocklist WHERE modified_at > ?", (since,))
    ]
    if recent:
        changed.append(blocklist_sql(conn, plan, recent, "cs_newly_blocked"))
    return " OR ".join(changed)


def _cell_sql(plan: SqlPlan, job: JobConfig, name: str, status: str) -> str:
    """The SQL of one cell's value (NULL for missing)."""
    if name == "status":
        return status
    if name == "email":
        return "r.email"
    if name in DATE_FIELDS:
        return _dater(job)("r." + name)
    path = plan.param(f"path_{name}", f'$."{name}"')
    return f"json_extract(r.fields, {path})"


def _chunk_query(plan: SqlPlan, job: JobConfig, header: list[str], checks: dict[str, str]) -> str:
    """The next CHUNK_ROWS rows after :after, packed into one string by SQLite.

    Python's sqlite3 module spends about a microsecond per fetched row, as much as SQLite's
    own work; asking for whole chunks (keyset-paged on the primary key, so each query seeks
    straight to its start) leaves one Python object per few thousand rows.

    Per row: cells joined by CELL_SEP (the writer neutralises and quotes); a row whose
    JSON holds an escaped control character (which might be a separator) goes as JSON_ROW +
    a JSON array instead. The innermost query computes each cell once: its LIMIT keeps SQLite
    from flattening it into the outer ones, which would evaluate json_extract once per mention.
    """
    status = status_expression(checks)
    cells = [f"{_cell_sql(plan, job, name, status)} AS c{i}" for i, name in enumerate(header)]
    names = [f"c{i}" for i in range(len(header))]
    plan.param("cell_sep", CELL_SEP)
    plan.param("row_sep", ROW_SEP)
    plan.param("chunk", CHUNK_ROWS)
    inner = (
        f"SELECT r.email AS key, r.fields AS fields, {', '.join(cells)} FROM recipients AS r "
        f"WHERE {' AND '.join(plan.conditions)} AND r.email > :after AND r.email <= :last "
        "ORDER BY r.email LIMIT :chunk"
    )
    line = _packed_line(names)
    if not all(name in BUILTIN_FIELDS for name in header):
        plan.param("json_row", JSON_ROW)
        # Our separators are U+001D..U+001F, which JSON text holds escaped as \u001X; a
        # non-ASCII letter is stored as itself (the import writes ensure_ascii=False).
        plan.param("escaped", "\\u001")
        as_json = f":json_row || json_array({', '.join(names)})"
        line = f"CASE WHEN instr(fields, :escaped) THEN {as_json} ELSE {line} END"
    return f"SELECT group_concat({line}, :row_sep), count(*), max(key) FROM ({inner})"


def _packed_line(names: list[str]) -> str:
    """The cells joined by CELL_SEP, NULL as empty.

    printf() builds the line in one allocation where `||` would copy it once per cell; it
    writes NULL as '' too, so no coalesce() is needed. It takes at most 100 arguments.
    """
    if len(names) <= 100:
        template = CELL_SEP.join("%s" for _ in names)
        return f"printf('{template}', {', '.join(names)})"
    return " || :cell_sep || ".join(f"coalesce({name}, '')" for name in names)


def _chunks(
    conn: sqlite3.Connection,
    query: str,
    params: dict[str, object],
    limit: Callable[[str], str] | None = None,
) -> Generator[tuple[str, int], None, None]:
    """(packed rows, row count) per chunk, in email order, from after :after up to :last
    (or up to what `limit`, asked before each chunk, says); the caller holds one snapshot."""
    params = dict(params)
    while True:
        if limit is not None:
            params["last"] = limit(str(params["after"]))
        packed, count, last = conn.execute(query, params).fetchone()
        if not count:
            return
        yield packed, count
        if count < params["chunk"]:  # (a child process has its parent's chunk size)
            return
        params["after"] = last


def _later_parts(
    conn: sqlite3.Connection,
    job: JobConfig,
    plan: SqlPlan,
    query: str,
    list_id: int,
    timezone: str | None,
) -> list[ChildPart]:
    """Child processes for the parts after the first, if the list is big enough.

    Every connection must see the same data: the caller holds the write lock (the runner
    does, for the watermark), so no import can commit between their snapshots.
    """
    if PARTS < 2 or not _store_file(conn):
        return []
    # Big enough? Stepping to row PARALLEL_MIN_ROWS costs less than counting all of them.
    big = conn.execute(
        "SELECT 1 FROM recipients WHERE list_id = ? ORDER BY email LIMIT 1 OFFSET ?",
        (list_id, max(PARALLEL_MIN_ROWS, PARTS) - 1),
    ).fetchone()
    if big is None:
        return []
    plan_line = {
        "store": _store_file(conn),
        "list_id": list_id,
        "parts": PARTS,
        "query": query,
        "params": plan.params,
        "date_format": job.format.date_format,
        "timezone": timezone,
        "matchers": plan.matchers,
        "tables": {
            table: [value for (value,) in conn.execute(f"SELECT value FROM temp.{table}")]
            for table in plan.temp_tables
        },
    }
    # `-m` puts the working folder first on the child's path: running in the folder that
    # holds this package, it imports this very tree (not whatever the caller's folder has).
    root = str(Path(__file__).resolve().parents[3])
    argv = [sys.executable, "-m", __name__]
    return [
        ChildPart(argv, json.dumps(dict(plan_line, part=part)).encode("utf-8"), root)
        for part in range(1, PARTS)
    ]


def _cut(conn: sqlite3.Connection, list_id: int, part: int, parts: int) -> str:
    """The key after which part `part` of `parts` starts (sized by the weights)."""
    (members,) = conn.execute(
        "SELECT count(*) FROM recipients WHERE list_id = ?", (list_id,)
    ).fetchone()
    total = OWN_WEIGHT + CHILD_WEIGHT * (parts - 1)
    rows_before = members * (OWN_WEIGHT + CHILD_WEIGHT * (part - 1)) // total
    (key,) = conn.execute(
        "SELECT email FROM recipients WHERE list_id = ? ORDER BY email LIMIT 1 OFFSET ?",
        (list_id, max(rows_before, 1) - 1),
    ).fetchone()
    return str(key)


def _store_file(conn: sqlite3.Connection) -> str:
    """The store's file name ('' for a database in memory, which no other connection sees)."""
    for _, name, file in conn.execute("PRAGMA database_list"):
        if name == "main":
            return str(file or "")
    return ""


def _serve_part(plan: dict[str, Any], spool_fd: int) -> None:
    """A later part, in a child process: the plan's temp tables and functions copied into
    a connection of its own, its cut reported, then its range read (see parts.py)."""
    conn = sqlite3.connect(plan["store"], isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {store.BUSY_TIMEOUT_MS}")
        conn.execute("BEGIN")  # one snapshot for all its work
        _register_date_format(conn, plan["date_format"], plan["timezone"])
        for name, patterns in plan["matchers"].items():
            register_matcher(conn, name, patterns)
        for table, values in plan["tables"].items():
            conn.execute(f"CREATE TEMP TABLE {table} (value TEXT PRIMARY KEY) WITHOUT ROWID")
            conn.execute(
                f"INSERT INTO temp.{table} SELECT value FROM json_each(?)", (json.dumps(values),)
            )
        conn.execute("PRAGMA query_only = ON")  # a reader, whatever the query says
        cut = _cut(conn, plan["list_id"], plan["part"], plan["parts"])
        query, params = plan["query"], plan["params"]
        serve_part(
            cut,
            lambda after, last: _chunks(conn, query, dict(params, after=after, last=last)),
            spool_fd,
        )
    finally:
        conn.close()


if __name__ == "__main__":
    # A later part of a big export (parts.py): the plan on stdin, the spool's open
    # descriptor number as the last argument.
    _serve_part(json.loads(sys.stdin.readline()), int(sys.argv[-1]))
