"""Export rows from a PostgreSQL store: the same rows, in the same order, as the SQLite
store's exports module gives for the same content, so that exports/export.py writes the same
bytes on both.

The fast path: ``COPY (SELECT …) TO STDOUT`` in text format with CELL_SEP (csvio/write.py)
as its delimiter and NULL as an empty cell, so that each line the server sends is already a
row packed the way CsvWriter.write_packed takes them: blocks of lines go to the writer as
they are (newlines become ROW_SEP), and formula neutralisation, quoting and the target
encoding stay the writer's, in one place for both stores. COPY escapes a backslash, a few
control characters and the delimiter inside a cell with a backslash, and leaves ROW_SEP and
JSON_ROW be; a line with any of these (rare: free-text fields) is unescaped and sent as a
JSON row instead, as SQLite does. The rows are read with libpq's own loop (copy_out):
psycopg's Copy object costs more Python per row than the server spends on it.

Where a cell needs Python (a job's `date_format`, shifted into the config's zone, exactly as
SQLite's cs_date() does), and for the small exports, rows come through a server-side
cursor in chunks and the writer formats them cell by cell: correct first, and still flat in
memory.

The changes-only watermark. Every function here runs inside the export's snapshot, a
REPEATABLE READ READ ONLY transaction that Store.begin_snapshot opens and whose watermark it
returns. Rows qualify when their change time (recipients.updated_at, unsubscribers and
bounces.changed_at, blocklist.modified_at) is after the previous run's watermark. That is
exact with writers on several hosts because writers and snapshots are serialised on one
advisory lock per store schema: a writing transaction takes it (transaction-level) before it
reads the server clock for its change times and holds it until it commits; begin_snapshot
takes it (session-level), opens the transaction, reads the server clock as the watermark
(its first query, which fixes the snapshot) and releases it. So no writer is in flight while
a snapshot is taken: a change with an earlier time was committed before it and is in it,
and every later writer reads a later clock. Watermarks from the host's clock, or a clock
read before the lock, could skip a transaction that started earlier but committed later;
taking the start of the oldest open transaction from pg_stat_activity instead would need the
role to see other roles' sessions, and a microsecond race between BEGIN and its report
remains there. Only one clock counts (the server's), whatever the hosts' clocks say.
A writer other than campaign-sync (a platform's sign-up form writing recipients itself) must
take the same lock in its transaction, ``SELECT pg_advisory_xact_lock(hashtextextended(
current_schema() || '/write', 0))``, and set the change times from clock_timestamp() after
it (the column defaults do), or a changes-only export may miss its changes.
tests/test_export_pg.py holds a writer in flight on another connection: the export's
snapshot waits for its commit, and its row is in that export, not skipped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator, Iterator, Sequence
from contextlib import closing, suppress
from itertools import count
from typing import Any

from ...config.model import BounceLimits, JobConfig
from ...core.dates import date_formatter
from ...core.schedule import zone
from ...csvio.write import CELL_SEP, JSON_ROW, ROW_SEP, CsvWriter
from .connection import driver
from .statuses import (
    Connection,
    Plan,
    blocklist_sql,
    has_rows,
    prepare,
    status_checks,
    status_expression,
)
from .statuses import list_id as _list_id

# Columns of the recipients table itself; every other field lives in the jsonb `fields`.
BUILTIN_FIELDS = ("email", "status", "doi_confirmed_at", "created_at", "updated_at")
DATE_FIELDS = ("doi_confirmed_at", "created_at", "updated_at")

CHUNK_ROWS = 4000  # rows per fetch from a server-side cursor
BLOCK_BYTES = 1 << 20  # COPY output gathered before it goes to the writer

Rows = Sequence[Sequence[object]]

# COPY's text format writes these characters escaped (and a NULL as \N, which our
# non-NULL lines never are).
_COPY_ESCAPES = {
    b"\\": b"\\",
    b"b": b"\b",
    b"f": b"\f",
    b"n": b"\n",
    b"r": b"\r",
    b"t": b"\t",
    b"v": b"\v",
}
_COPY_ESCAPE = re.compile(rb"\\(.)", re.DOTALL)
_CELL_SEP, _ROW_SEP, _JSON_ROW = (sep.encode("ascii") for sep in (CELL_SEP, ROW_SEP, JSON_ROW))
# A cell of a COPY line (escapes included).
_COPY_CELL = re.compile(rb"((?:[^\\\x1f]|\\.)*)\x1f", re.DOTALL)
_cursor_numbers = count(1)


# --------------------------------------------------------------------------- small exports
# Each gives the rows of one small export in chunks, in the columns exports/export.py names.


def blocklist_rows(
    conn: Connection,
    job: JobConfig,
    limits: BounceLimits,
    changed_since: str | None,
    timezone: str | None,
) -> Iterator[Rows]:
    """pattern, reason, created, modified: the patterns (changed since the watermark)."""
    where = "WHERE modified_at > %(since)s" if changed_since else ""
    query = (
        f"SELECT pattern, reason, created_at, modified_at FROM blocklist {where} ORDER BY pattern"
    )
    return _fetch(conn, query, {"since": changed_since}, job, timezone, (2, 3))


def unsubscriber_rows(
    conn: Connection,
    job: JobConfig,
    limits: BounceLimits,
    changed_since: str | None,
    timezone: str | None,
) -> Iterator[Rows]:
    """email, list, date, reason: the job's list's and the client-wide unsubscriptions."""
    conditions = []
    if job.list:
        conditions.append("list IN ('', %(list)s)")  # this list's and the client-wide ones
    if changed_since:
        conditions.append("changed_at > %(since)s")  # in the store since, whatever its date
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    query = (
        f"SELECT email, list, unsubscribed_at, reason FROM unsubscribers {where} "
        "ORDER BY email, list"
    )
    params: dict[str, object] = {"list": job.list, "since": changed_since}
    return _fetch(conn, query, params, job, timezone, (2,))


def bounce_rows(
    conn: Connection,
    job: JobConfig,
    limits: BounceLimits,
    changed_since: str | None,
    timezone: str | None,
) -> Iterator[Rows]:
    """email, hard and soft bounce counts, last bounce: the outbounced addresses (of the
    job's list, if it names one)."""
    params: dict[str, object] = {
        "hard": limits.hard_limit,
        "soft": limits.soft_limit,
        "since": changed_since,
        "list_id": None,
    }
    members = ""
    if job.list:
        params["list_id"] = _list_id(conn, job.list)
        members = (
            "WHERE email IN (SELECT email FROM recipients "
            "WHERE list_id = %(list_id)s AND status <> 'removed')"
        )
    hard = "count(*) FILTER (WHERE type = 'hard')"
    soft = "count(*) FILTER (WHERE type = 'soft')"
    # A bounce that entered the store since, whatever its date, may outbounce someone.
    recent = " AND max(changed_at) > %(since)s" if changed_since else ""
    query = (
        f"SELECT email, {hard}, {soft}, max(bounced_at) FROM bounces {members} "
        f"GROUP BY email HAVING ({hard} >= %(hard)s OR {soft} >= %(soft)s){recent} "
        "ORDER BY email"
    )
    return _fetch(conn, query, params, job, timezone, (3,))


def _fetch(
    conn: Connection,
    query: str,
    params: dict[str, object],
    job: JobConfig,
    timezone: str | None,
    dates: tuple[int, ...],
) -> Iterator[Rows]:
    """Rows in chunks from a server-side cursor (in the caller's transaction), the cells
    at positions `dates` through the job's date_format if it has one."""
    formatted = _formatter(job, timezone)
    with conn.cursor(name=f"cs_export_{next(_cursor_numbers)}") as cursor:
        cursor.execute(query, params)
        while rows := cursor.fetchmany(CHUNK_ROWS):
            if formatted is None or not dates:
                yield rows
                continue
            yield [
                [formatted(cell) if i in dates else cell for i, cell in enumerate(row)]
                for row in rows
            ]


def _formatter(job: JobConfig, timezone: str | None) -> Any:
    if not job.format.date_format:
        return None  # dates go out as stored (UTC, with offset)
    return date_formatter(job.format.date_format, zone(timezone))


# --------------------------------------------------------------------------- recipients


def list_id(conn: Connection, name: str) -> int | None:
    """The id of list `name`; None if it was never imported into."""
    return _list_id(conn, name)


def field_names(conn: Connection, list_id: int) -> list[str]:
    """Every key of the list's members' fields, sorted by code point (as on SQLite)."""
    rows = conn.execute(
        'SELECT DISTINCT k COLLATE "C" FROM recipients AS r, jsonb_object_keys(r.fields) AS k '
        "WHERE r.list_id = %s ORDER BY 1",
        (list_id,),
    )
    return [str(key) for (key,) in rows]


def write_recipients(
    conn: Connection,
    writer: CsvWriter,
    job: JobConfig,
    limits: BounceLimits,
    list_id: int,
    changed_since: str | None,
    timezone: str | None,
) -> None:
    """The list's rows (the columns of writer.header) after the header the caller wrote."""
    assert job.list is not None, "validated: a recipient-export names its list"
    header = writer.header
    prepare(conn)
    plan = Plan()
    plan.param("list_id", list_id)
    plan.param("list_name", job.list)
    checks = status_checks(conn, plan, limits)
    _filter(conn, plan, job, checks, changed_since)
    status = status_expression(checks)
    cells = [_cell_sql(plan, name, status) for name in header]
    rows = f"FROM recipients AS r WHERE {' AND '.join(plan.conditions)} ORDER BY r.email"
    formatted = _formatter(job, timezone)
    query = f"SELECT {', '.join(cells)} {rows}"
    # Read the list in its primary key's order, as on SQLite: rows stream from the first
    # one, so that the server's reading and our writing overlap. The planner cannot see
    # how many rows pass the status checks (hash lookups) and, guessing a fifth, would sort
    # the whole result before sending its first row (1M rows: 1 s of waiting, then 1.6 s
    # of writing, instead of both at once).
    conn.execute("SET LOCAL enable_sort = off")
    if formatted is None:
        _copy_packed(conn, writer, query, plan.params)
        return
    dates = tuple(i for i, name in enumerate(header) if name in DATE_FIELDS)
    for chunk in _fetch(conn, query, plan.params, job, timezone, dates):
        writer.write_many(chunk)


def _filter(
    conn: Connection,
    plan: Plan,
    job: JobConfig,
    checks: dict[str, str],
    changed_since: str | None,
) -> None:
    """Which rows: this list's changes since the watermark, or its members per `include`."""
    plan.conditions.append("r.list_id = %(list_id)s")
    if changed_since is not None:
        plan.conditions.append(f"({_changed(conn, plan, changed_since)})")
    elif job.include == "active":
        # status 'active' already rules out removed and unsubscribed records; the address
        # sets of the other statuses are one union, for one lookup per row.
        plan.conditions.append("r.status = 'active'")
        if plan.inactive:
            plan.conditions.append(f"NOT (r.email IN ({' UNION '.join(plan.inactive)}))")
        if "blocklisted" in checks:
            plan.conditions.append(f"NOT ({checks['blocklisted']})")
    else:
        plan.conditions.append("r.status <> 'removed'")


def _changed(conn: Connection, plan: Plan, since: str) -> str:
    """Rows whose record or whose status may have changed after `since` (the same rule as
    SQLite's: a record change moves updated_at; an unsubscription, bounce or blocklist
    pattern stored or changed after the watermark may change a status)."""
    value = plan.param("since", since)
    changed = [f"r.updated_at > {value}"]
    if has_rows(conn, "unsubscribers"):
        select = (
            "SELECT DISTINCT email FROM unsubscribers "
            f"WHERE list IN ('', %(list_name)s) AND changed_at > {value}"
        )
        changed.append(f"r.email IN ({select})")
    if has_rows(conn, "bounces"):
        select = f"SELECT DISTINCT email FROM bounces WHERE changed_at > {value}"
        changed.append(f"r.email IN ({select})")
    recent = [
        str(row[0])
        for row in conn.execute("SELECT pattern FROM blocklist WHERE modified_at > %s", (since,))
    ]
    if recent:
        changed.append(blocklist_sql(conn, plan, recent, "cs_newly_blocked"))
    return " OR ".join(changed)


def _cell_sql(plan: Plan, name: str, status: str) -> str:
    """The SQL of one cell's value (NULL for missing)."""
    if name == "status":
        return status
    if name == "email" or name in DATE_FIELDS:
        return "r." + name
    key = plan.param(f"field_{len(plan.params)}", name)
    return f"(r.fields ->> {key})"


def _copy_packed(conn: Connection, writer: CsvWriter, query: str, params: dict) -> None:
    """COPY the query's rows out, cells joined by CELL_SEP, and hand them to the writer in
    blocks of packed rows."""
    encoding = conn.info.encoding
    statement = f"COPY ({query}) TO STDOUT (FORMAT text, DELIMITER E'\\x1f', NULL '')"
    # Closed here, not when the garbage collector gets to it: a writer's error must leave
    # the connection ready for the caller's rollback.
    with closing(copy_out(conn, statement, params)) as blocks:
        for block in blocks:
            _write_block(writer, block, encoding)


def copy_out(conn: Connection, statement: str, params: dict) -> Generator[bytes, None, None]:
    """The output of a COPY … TO STDOUT in blocks of whole lines.

    psycopg's Copy object costs about 3 µs of Python per row (a generator step and a wait
    per CopyData message, one message per row): more than the server's own work for a
    recipient row. So the rows are read by libpq's PQgetCopyData in a loop of its own,
    the connection switched to blocking mode meanwhile; parameters are bound into the
    statement by psycopg, as its own copy() does (COPY takes no server-side parameters).
    A failure is the driver's own error class (psycopg.errors), as from any query.
    """
    psycopg = driver()
    text = psycopg.ClientCursor(conn).mogrify(statement, params)
    pgconn = conn.pgconn
    status = psycopg.pq.ExecStatus
    with conn.lock:
        was_nonblocking = pgconn.nonblocking
        pgconn.nonblocking = 0
        done = False
        try:
            pgconn.send_query(text.encode(conn.info.encoding))
            _expect(pgconn, status.COPY_OUT, conn.info.encoding)
            # Appended to a bytearray: half the CPU of a list of rows joined per block.
            block = bytearray()
            read = pgconn.get_copy_data
            while True:
                nbytes, data = read(0)
                if nbytes < 0:  # -1: all sent; -2: an error, which the next result reports
                    break
                block += data
                if len(block) >= BLOCK_BYTES:
                    yield bytes(block)
                    block = bytearray()
            _expect(pgconn, status.COMMAND_OK, conn.info.encoding)
            done = True
            if block:
                yield bytes(block)
        finally:
            if not done:  # stopped half-way: the server must stop sending
                _abandon(conn)
            with suppress(psycopg.Error):  # a lost connection: the first error is the one
                pgconn.nonblocking = was_nonblocking


def _expect(pgconn: Any, status: Any, encoding: str) -> None:
    """The next result has `status`, or its error is raised (other results drained)."""
    result = pgconn.get_result()
    if result is not None and result.status == status:
        if status != driver().pq.ExecStatus.COPY_OUT:
            while pgconn.get_result() is not None:
                pass
        return
    while pgconn.get_result() is not None:
        pass
    if result is None:
        raise driver().OperationalError("the server sent no result for COPY")
    raise driver().errors.error_from_result(result, encoding=encoding)


def _abandon(conn: Connection) -> None:
    """Cancel a COPY still sending and read what is left, so the connection can roll back
    (a connection that broke meanwhile: the caller's rollback or close reports it)."""
    pgconn = conn.pgconn
    error = driver().Error
    with suppress(error):
        conn.cancel()
    with suppress(error):
        while pgconn.get_copy_data(0)[0] >= 0:
            pass
    with suppress(error):
        while pgconn.get_result() is not None:
            pass


def _write_block(writer: CsvWriter, block: bytes, encoding: str) -> None:
    """COPY text lines (each ending in a newline) as one packed chunk for the writer.

    Its lines are already packed rows, but for three rare kinds, which become JSON rows: a
    line with a backslash (COPY escaped a backslash, a control character, or a CELL_SEP
    inside a cell), and one holding ROW_SEP or JSON_ROW in a cell (COPY leaves those be).
    """
    rows = block.count(b"\n")
    if b"\\" not in block and _ROW_SEP not in block and _JSON_ROW not in block:
        packed = block[:-1].replace(b"\n", _ROW_SEP)  # raw newlines only end rows
    else:
        packed = _ROW_SEP.join(_line(line) for line in block[:-1].split(b"\n"))
    writer.write_packed(packed.decode(encoding), rows)


def _line(line: bytes) -> bytes:
    if b"\\" not in line and _ROW_SEP not in line and _JSON_ROW not in line:
        return line
    cells = [_unescape(cell).decode("utf-8") for cell in _COPY_CELL.findall(line + _CELL_SEP)]
    return _JSON_ROW + json.dumps(cells, ensure_ascii=False).encode("utf-8")


def _unescape(cell: bytes) -> bytes:
    return _COPY_ESCAPE.sub(lambda m: _COPY_ESCAPES.get(m.group(1), m.group(1)), cell)
