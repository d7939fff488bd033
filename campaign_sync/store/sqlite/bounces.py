"""bounce-import's SQL on SQLite: stage bounce events, skip those already recorded, append
the rest and touch the members they concern. The caller owns the transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from . import staging
from .staging import drop as drop  # the engine drops the stage through this module

LAYOUT = "email TEXT NOT NULL, type TEXT NOT NULL, at TEXT NOT NULL, event INTEGER NOT NULL"
NAMES = ["email", "type", "at", "event"]


def stage(conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> int:
    """Stage (email, type, at, event) rows, each distinct one once; how many distinct."""
    return staging.stage(conn, LAYOUT, NAMES, NAMES, rows)


def classify(conn: sqlite3.Connection) -> dict[str, int]:
    """A dated bounce already recorded is unchanged; everything else is inserted."""
    conn.execute(
        """
        UPDATE incoming SET action = CASE WHEN incoming.event = 0 AND EXISTS (
            SELECT 1 FROM bounces AS b WHERE b.email = incoming.email
              AND b.type = incoming.type AND b.bounced_at = incoming.at)
          THEN 'unchanged' ELSE 'inserted' END
        """
    )
    return staging.tally(conn)


def apply(conn: sqlite3.Connection, source: str, now: str) -> None:
    conn.execute(
        "INSERT INTO bounces (email, type, bounced_at, source, changed_at) "
        "SELECT email, type, at, ?, ? FROM incoming WHERE action = 'inserted' "
        "ORDER BY at, email",
        (source, now),
    )
    # A bounce dated before the last export's watermark can still outbounce someone now:
    # touching the members makes changes-only exports see them.
    conn.execute(
        "UPDATE recipients SET updated_at = ? WHERE email IN "
        "(SELECT email FROM incoming WHERE action = 'inserted')",
        (now,),
    )
