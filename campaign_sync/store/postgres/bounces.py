"""bounce-import's SQL on PostgreSQL: stage bounce events with COPY, skip those already
recorded, append the rest and touch the members they concern. The caller owns the
transaction."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import staging
from .staging import drop as drop  # the engine drops the stage through this module

if TYPE_CHECKING:
    import psycopg

LAYOUT = (
    'email text COLLATE "C" NOT NULL, type text COLLATE "C" NOT NULL, '
    'at text COLLATE "C" NOT NULL, event bigint NOT NULL'
)
NAMES = ["email", "type", "at", "event"]


def stage(conn: psycopg.Connection[Any], rows: Iterable[tuple[Any, ...]]) -> int:
    """Stage (email, type, at, event) rows, each distinct one once; how many distinct."""
    return staging.stage(conn, LAYOUT, NAMES, NAMES, rows)


def classify(conn: psycopg.Connection[Any]) -> dict[str, int]:
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


def apply(conn: psycopg.Connection[Any], source: str, now: str) -> None:
    # Ids in the order SQLite gives them: by date, then address.
    conn.execute(
        "INSERT INTO bounces (email, type, bounced_at, source, changed_at) "
        "SELECT email, type, at, %s, %s FROM incoming WHERE action = 'inserted' "
        "ORDER BY at, email",
        (source, now),
    )
    # A bounce dated before the last export's watermark can still outbounce someone now:
    # touching the members makes changes-only exports see them.
    conn.execute(
        "UPDATE recipients SET updated_at = %s WHERE email IN "
        "(SELECT email FROM incoming WHERE action = 'inserted')",
        (now,),
    )
