"""Erasure's SQL on PostgreSQL: stage the addresses, count or delete their rows, redact run
texts, keep the keyed hashes, and vacuum what held them.

A deleted or updated row is only marked dead: its bytes stay in the table's pages (and in
its indexes) until VACUUM frees that space and a later write reuses it, and they stay in the
WAL segments, archives and standbys that saw them. `scrub`, after the commit, vacuums the
tables the erasure touched, index entries included (INDEX_CLEANUP ON: PostgreSQL 14 and
later otherwise skip the indexes when few rows died). docs/privacy.md says exactly what that
does and does not reach.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..erasure import RUN_TEXTS, WHERE_BY_TABLE, count_sql, delete_sql
from .connection import driver

if TYPE_CHECKING:
    import psycopg

TABLES = tuple(WHERE_BY_TABLE)


def prepare(conn: psycopg.Connection[Any]) -> None:
    """Nothing to set before the erasure's transaction (see scrub)."""


def begin_read(conn: psycopg.Connection[Any]) -> None:
    """A transaction that reads (a dry run), rolled back at its end."""
    conn.execute("BEGIN")


def secret(conn: psycopg.Connection[Any]) -> str | None:
    row = conn.execute("SELECT secret FROM erasure_secret WHERE id = 1").fetchone()
    return str(row[0]) if row else None


def create_secret(conn: psycopg.Connection[Any], fresh: str, now: str) -> str:
    """The store's secret, `fresh` becoming it when the store has none yet."""
    conn.execute(
        "INSERT INTO erasure_secret (id, secret, created_at) VALUES (1, %s, %s) "
        "ON CONFLICT (id) DO NOTHING",
        (fresh, now),
    )
    found = secret(conn)
    assert found is not None
    return found


def erased_hashes(conn: psycopg.Connection[Any]) -> list[str]:
    return [row[0] for row in conn.execute("SELECT hash FROM erased")]


def stage(conn: psycopg.Connection[Any], values: Iterable[tuple[str, str]]) -> None:
    """Stage (value, kind) pairs into forget_addresses (see campaign_sync.store.erasure)."""
    conn.execute(
        'CREATE TEMP TABLE forget_addresses (value text COLLATE "C" NOT NULL, '
        'kind text COLLATE "C" NOT NULL, PRIMARY KEY (kind, value)) ON COMMIT DROP'
    )
    with conn.cursor().copy("COPY forget_addresses (value, kind) FROM STDIN") as copy:
        for row in dict.fromkeys(values):
            copy.write_row(row)
    conn.execute("ANALYZE forget_addresses")


def held(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Per table, how many rows hold a staged address."""
    return {table: _one(conn, count_sql(table)) for table in TABLES}


def erase(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Delete every row that holds a staged address; how many per table."""
    return {table: conn.execute(delete_sql(table)).rowcount for table in TABLES}


def run_texts(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """(id, error, message, warnings, file_path) of the runs whose texts may hold one."""
    return [tuple(row) for row in conn.execute(RUN_TEXTS)]


def redact_run(conn: psycopg.Connection[Any], run_id: int, texts: tuple[Any, ...]) -> None:
    """Write a run's (error, message, warnings, file_path) back, its addresses erased."""
    conn.execute(
        "UPDATE runs SET error = %s, message = %s, warnings = %s, file_path = %s WHERE id = %s",
        (*texts, run_id),
    )


def new_hashes(conn: psycopg.Connection[Any], hashes: list[str]) -> int:
    """How many of `hashes` the store does not hold yet."""
    held_already = _one(conn, "SELECT count(*) FROM erased WHERE hash = ANY(%s)", (hashes,))
    return len(hashes) - held_already


def add_hashes(conn: psycopg.Connection[Any], hashes: list[str], now: str) -> int:
    """Keep the hashes (those already kept stay as they were); how many are new."""
    cursor = conn.execute(
        "INSERT INTO erased (hash, erased_at) SELECT unnest(%s::text[]), %s "
        "ON CONFLICT (hash) DO NOTHING",
        (hashes, now),
    )
    return cursor.rowcount


def drop(conn: psycopg.Connection[Any]) -> None:
    """Nothing: the staged addresses go with the transaction (ON COMMIT DROP)."""


def scrub(conn: psycopg.Connection[Any], tables: list[str]) -> list[str]:
    """After the commit: VACUUM the `tables` the erasure changed. Warnings (what could not
    be done) for the operator."""
    if not tables:
        return []
    listed = ", ".join(tables)
    # A table this role may not vacuum is skipped with a WARNING notice, not an error.
    refused: list[bool] = []

    def note(notice: Any) -> None:
        if notice.severity_nonlocalized == "WARNING":
            refused.append(True)

    conn.add_notice_handler(note)
    try:
        conn.execute(f"VACUUM (INDEX_CLEANUP ON) {listed}")
    except driver().Error:
        refused.append(True)
    finally:
        conn.remove_notice_handler(note)
    if not refused:
        return []
    return [
        f"the store's role could not VACUUM all of {listed}: the erased rows are gone from "
        "every query, but their bytes may stay in the tables' pages until a VACUUM; run "
        f"VACUUM (INDEX_CLEANUP ON) {listed} as the tables' owner"
    ]


def _one(conn: psycopg.Connection[Any], sql: str, params: tuple[Any, ...] = ()) -> int:
    row = conn.execute(sql, params).fetchone()
    return int(row[0]) if row else 0
