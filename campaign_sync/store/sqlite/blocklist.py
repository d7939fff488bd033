"""blocklist-import's SQL on SQLite: stage patterns, decide, merge, and touch the members a
removed pattern set free. The caller owns the transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from ...core import addresses
from . import staging
from .staging import drop as drop  # the engine drops the stage through this module

LAYOUT = "pattern TEXT NOT NULL, reason TEXT"
NAMES = ["pattern", "reason"]


def stage(conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> int:
    """Stage (pattern, reason or None) rows, the last of a pattern kept; distinct patterns."""
    return staging.stage(conn, LAYOUT, ["pattern"], NAMES, rows)


def classify(conn: sqlite3.Connection, mode: str) -> dict[str, int]:
    """Decide each staged pattern's action (a NULL reason leaves the stored one alone)."""
    conn.execute(
        """
        UPDATE incoming SET action = CASE
            WHEN incoming.reason IS NULL OR incoming.reason = b.reason THEN 'unchanged'
            ELSE 'updated' END
        FROM blocklist AS b WHERE b.pattern = incoming.pattern
        """
    )
    conn.execute("UPDATE incoming SET action = 'inserted' WHERE action IS NULL")
    staging.restrict_to_mode(conn, mode)
    return staging.tally(conn)


def members_and_removed(conn: sqlite3.Connection) -> tuple[int, int]:
    """How many patterns the blocklist has, and how many of them the file leaves out."""
    members, removed = conn.execute(
        "SELECT count(*), count(*) FILTER "
        "(WHERE pattern NOT IN (SELECT pattern FROM incoming)) FROM blocklist"
    ).fetchone()
    return int(members), int(removed)


def apply(conn: sqlite3.Connection, now: str, *, replace: bool) -> None:
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
        _touch_unblocked(conn, now, removed)


def _touch_unblocked(conn: sqlite3.Connection, now: str, patterns: list[str]) -> None:
    """Members a removed pattern matched may be active again; touching them makes
    changes-only exports see that (as bounce imports do for newly outbounced ones)."""
    if not patterns:
        return
    matcher = addresses.Blocklist(patterns)
    conn.create_function(
        "cs_was_blocked", 1, lambda email: matcher.matches(email) is not None, deterministic=True
    )
    conn.execute(
        "UPDATE recipients SET updated_at = ? WHERE status != 'removed' AND cs_was_blocked(email)",
        (now,),
    )
