"""Erasure's SQL on SQLite: stage the addresses, count or delete their rows, redact run
texts, keep the keyed hashes, and leave nothing of them readable in the file.

Deleted records stay in the file's pages (and in the WAL) until something overwrites them;
`prepare` turns on secure_delete for the erasing connection, so SQLite overwrites what it
deletes with zeros, and keeps its temp tables in memory, so the staged addresses never touch
a temp file. `scrub`, after the commit, checkpoints the WAL into the file and truncates it:
the frames that held the addresses (from the imports that wrote them) are gone with it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from ..erasure import RUN_TEXTS, WHERE_BY_TABLE, count_sql, delete_sql

TABLES = tuple(WHERE_BY_TABLE)


def prepare(conn: sqlite3.Connection) -> None:
    """Before the erasure's transaction: overwrite deleted content, temp tables in memory."""
    conn.execute("PRAGMA secure_delete = ON")
    conn.execute("PRAGMA temp_store = MEMORY")


def begin_read(conn: sqlite3.Connection) -> None:
    """A transaction that reads (a dry run), rolled back at its end."""
    conn.execute("BEGIN")


def secret(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT secret FROM erasure_secret WHERE id = 1").fetchone()
    return str(row[0]) if row else None


def create_secret(conn: sqlite3.Connection, fresh: str, now: str) -> str:
    """The store's secret, `fresh` becoming it when the store has none yet."""
    conn.execute(
        "INSERT OR IGNORE INTO erasure_secret (id, secret, created_at) VALUES (1, ?, ?)",
        (fresh, now),
    )
    found = secret(conn)
    assert found is not None
    return found


def erased_hashes(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT hash FROM erased")]


def stage(conn: sqlite3.Connection, values: Iterable[tuple[str, str]]) -> None:
    """Stage (value, kind) pairs into forget_addresses (see campaign_sync.store.erasure)."""
    conn.execute("DROP TABLE IF EXISTS temp.forget_addresses")
    conn.execute(
        "CREATE TEMP TABLE forget_addresses (value TEXT NOT NULL, kind TEXT NOT NULL, "
        "PRIMARY KEY (kind, value)) WITHOUT ROWID"
    )
    conn.executemany("INSERT OR IGNORE INTO forget_addresses (value, kind) VALUES (?, ?)", values)


def held(conn: sqlite3.Connection) -> dict[str, int]:
    """Per table, how many rows hold a staged address."""
    return {table: int(conn.execute(count_sql(table)).fetchone()[0]) for table in TABLES}


def erase(conn: sqlite3.Connection) -> dict[str, int]:
    """Delete every row that holds a staged address; how many per table."""
    return {table: conn.execute(delete_sql(table)).rowcount for table in TABLES}


def run_texts(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    """(id, error, message, warnings, file_path) of the runs whose texts may hold one."""
    return conn.execute(RUN_TEXTS).fetchall()


def redact_run(conn: sqlite3.Connection, run_id: int, texts: tuple[Any, ...]) -> None:
    """Write a run's (error, message, warnings, file_path) back, its addresses erased."""
    conn.execute(
        "UPDATE runs SET error = ?, message = ?, warnings = ?, file_path = ? WHERE id = ?",
        (*texts, run_id),
    )


def new_hashes(conn: sqlite3.Connection, hashes: list[str]) -> int:
    """How many of `hashes` the store does not hold yet."""
    held_already = sum(
        conn.execute("SELECT count(*) FROM erased WHERE hash = ?", (digest,)).fetchone()[0]
        for digest in hashes
    )
    return len(hashes) - held_already


def add_hashes(conn: sqlite3.Connection, hashes: list[str], now: str) -> int:
    """Keep the hashes (those already kept stay as they were); how many are new."""
    before = conn.total_changes
    conn.executemany(
        "INSERT OR IGNORE INTO erased (hash, erased_at) VALUES (?, ?)",
        ((digest, now) for digest in hashes),
    )
    return conn.total_changes - before


def drop(conn: sqlite3.Connection) -> None:
    conn.execute("DROP TABLE IF EXISTS temp.forget_addresses")


def scrub(conn: sqlite3.Connection, tables: list[str]) -> list[str]:
    """After the commit: the WAL checkpointed into the file and truncated to nothing.
    Warnings (what could not be done) for the operator; `tables` need nothing more here."""
    # (blocked, frames in the WAL, frames copied); the busy handler waits for readers, up
    # to the busy timeout, before it gives up.
    blocked, frames, copied = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if not blocked and frames in (0, copied):
        return []
    return [
        "another process kept reading the store, so its write-ahead log (the -wal file) could "
        "not be emptied: earlier versions of the erased rows stay there until the next "
        "checkpoint; run forget again with the same addresses once the jobs are idle"
    ]
