"""unsubscriber-import's SQL on SQLite: stage unsubscriptions, merge them (dates only move
forward), and unsubscribe the members they now hold for. The caller owns the transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from ..statuses import unsubscription_wins
from . import staging
from .staging import drop as drop  # the engine drops the stage through this module

LAYOUT = "email TEXT NOT NULL, list TEXT NOT NULL, at TEXT, reason TEXT"
NAMES = ["email", "list", "at", "reason"]


def list_names(conn: sqlite3.Connection) -> set[str]:
    return {name for (name,) in conn.execute("SELECT name FROM lists")}


def stage(conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> int:
    """Stage (email, list, at, reason) rows, the last of an (email, list) kept."""
    return staging.stage(conn, LAYOUT, ["email", "list"], NAMES, rows)


def classify(conn: sqlite3.Connection, mode: str) -> dict[str, int]:
    """A later date or another reason updates a known unsubscription; unknown ones are new."""
    conn.execute(
        """
        UPDATE incoming SET action = CASE
            WHEN incoming.at > u.unsubscribed_at
                 OR (incoming.reason IS NOT NULL AND incoming.reason != u.reason)
                THEN 'updated'
            ELSE 'unchanged' END
        FROM unsubscribers AS u
        WHERE u.email = incoming.email AND u.list = incoming.list
        """
    )
    conn.execute("UPDATE incoming SET action = 'inserted' WHERE action IS NULL")
    staging.restrict_to_mode(conn, mode)
    return staging.tally(conn)


def apply(conn: sqlite3.Connection, now: str) -> None:
    conn.execute(
        "INSERT INTO unsubscribers (email, list, unsubscribed_at, reason, changed_at) "
        "SELECT email, list, coalesce(at, :now), coalesce(reason, ''), :now FROM incoming "
        "WHERE action = 'inserted'",
        {"now": now},
    )
    conn.execute(
        """
        UPDATE unsubscribers SET
            unsubscribed_at = max(unsubscribers.unsubscribed_at, coalesce(incoming.at, '')),
            reason = coalesce(incoming.reason, unsubscribers.reason),
            changed_at = ?
        FROM incoming
        WHERE unsubscribers.email = incoming.email AND unsubscribers.list = incoming.list
          AND incoming.action = 'updated'
        """,
        (now,),
    )


def unsubscribe_recipients(conn: sqlite3.Connection, now: str, latest: str) -> int:
    """Set matching active recipients to unsubscribed; returns how many changed."""
    wins = unsubscription_wins("recipients.doi_confirmed_at", "u.unsubscribed_at", ":latest")
    cursor = conn.execute(
        f"""
        UPDATE recipients SET status = 'unsubscribed', updated_at = :now
        WHERE status = 'active'
          AND email IN (SELECT email FROM incoming)
          AND EXISTS (
            SELECT 1 FROM unsubscribers AS u JOIN lists AS l ON u.list IN ('', l.name)
            WHERE u.email = recipients.email AND l.id = recipients.list_id AND {wins})
        """,
        {"now": now, "latest": latest},
    )
    return cursor.rowcount
