"""unsubscriber-import's SQL on PostgreSQL: stage unsubscriptions with COPY, merge them
(dates only move forward), and unsubscribe the members they now hold for. The caller owns
the transaction."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..statuses import unsubscription_wins
from . import staging
from .staging import drop as drop  # the engine drops the stage through this module

if TYPE_CHECKING:
    import psycopg

LAYOUT = (
    'email text COLLATE "C" NOT NULL, list text COLLATE "C" NOT NULL, at text COLLATE "C", '
    'reason text COLLATE "C"'
)
NAMES = ["email", "list", "at", "reason"]


def list_names(conn: psycopg.Connection[Any]) -> set[str]:
    return {name for (name,) in conn.execute("SELECT name FROM lists")}


def stage(conn: psycopg.Connection[Any], rows: Iterable[tuple[Any, ...]]) -> int:
    """Stage (email, list, at, reason) rows, the last of an (email, list) kept."""
    return staging.stage(conn, LAYOUT, ["email", "list"], NAMES, rows)


def classify(conn: psycopg.Connection[Any], mode: str) -> dict[str, int]:
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


def apply(conn: psycopg.Connection[Any], now: str) -> None:
    conn.execute(
        "INSERT INTO unsubscribers (email, list, unsubscribed_at, reason, changed_at) "
        "SELECT email, list, coalesce(at, %(now)s), coalesce(reason, ''), %(now)s "
        "FROM incoming WHERE action = 'inserted'",
        {"now": now},
    )
    conn.execute(
        """
        UPDATE unsubscribers AS u SET
            unsubscribed_at = greatest(u.unsubscribed_at, coalesce(i.at, '')),
            reason = coalesce(i.reason, u.reason),
            changed_at = %s
        FROM incoming AS i
        WHERE u.email = i.email AND u.list = i.list AND i.action = 'updated'
        """,
        (now,),
    )


def unsubscribe_recipients(conn: psycopg.Connection[Any], now: str, latest: str) -> int:
    """Set matching active recipients to unsubscribed; returns how many changed."""
    wins = unsubscription_wins("r.doi_confirmed_at", "u.unsubscribed_at", "%(latest)s")
    cursor = conn.execute(
        f"""
        UPDATE recipients AS r SET status = 'unsubscribed', updated_at = %(now)s
        WHERE r.status = 'active'
          AND r.email IN (SELECT email FROM incoming)
          AND EXISTS (
            SELECT 1 FROM unsubscribers AS u JOIN lists AS l ON u.list IN ('', l.name)
            WHERE u.email = r.email AND l.id = r.list_id AND {wins})
        """,
        {"now": now, "latest": latest},
    )
    return cursor.rowcount
