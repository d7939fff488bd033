"""blocklist-import's SQL on PostgreSQL: stage patterns with COPY, decide, merge, and touch
the members a removed pattern set free. The caller owns the transaction."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import staging
from .staging import drop as drop  # the engine drops the stage through this module

if TYPE_CHECKING:
    import psycopg

LAYOUT = 'pattern text COLLATE "C" NOT NULL, reason text COLLATE "C"'
NAMES = ["pattern", "reason"]


def stage(conn: psycopg.Connection[Any], rows: Iterable[tuple[Any, ...]]) -> int:
    """Stage (pattern, reason or None) rows, the last of a pattern kept; distinct patterns."""
    return staging.stage(conn, LAYOUT, ["pattern"], NAMES, rows)


def classify(conn: psycopg.Connection[Any], mode: str) -> dict[str, int]:
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


def members_and_removed(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    """How many patterns the blocklist has, and how many of them the file leaves out."""
    row = conn.execute(
        "SELECT count(*), count(*) - count(i.pattern) FROM blocklist AS b "
        "LEFT JOIN incoming AS i ON i.pattern = b.pattern"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def apply(conn: psycopg.Connection[Any], now: str, *, replace: bool) -> None:
    conn.execute(
        "INSERT INTO blocklist (pattern, reason, created_at, modified_at) "
        "SELECT pattern, coalesce(reason, ''), %(now)s, %(now)s FROM incoming "
        "WHERE action = 'inserted'",
        {"now": now},
    )
    conn.execute(
        "UPDATE blocklist AS b SET reason = i.reason, modified_at = %s FROM incoming AS i "
        "WHERE b.pattern = i.pattern AND i.action = 'updated'",
        (now,),
    )
    if replace:
        removed = conn.execute(
            "DELETE FROM blocklist AS b "
            "WHERE NOT EXISTS (SELECT 1 FROM incoming AS i WHERE i.pattern = b.pattern) "
            "RETURNING b.pattern"
        ).fetchall()
        _touch_unblocked(conn, now, [pattern for (pattern,) in removed])


def _touch_unblocked(conn: psycopg.Connection[Any], now: str, patterns: list[str]) -> None:
    """Members a removed pattern matched may be active again; touching them makes
    changes-only exports see that (as bounce imports do for newly outbounced ones)."""
    if not patterns:
        return
    conn.execute(
        "UPDATE recipients SET updated_at = %s "
        "WHERE status != 'removed' AND email LIKE ANY (%s::text[])",
        (now, [like_pattern(pattern) for pattern in patterns]),
    )


def like_pattern(pattern: str) -> str:
    """A stored blocklist pattern as a LIKE pattern that matches the same addresses.

    Stored patterns are normalised (lower case, Unicode domains), as the addresses they are
    compared with: only the syntax differs. `*` is any text (LIKE's %), `?` one character
    (_), a backslash makes the next character literal; LIKE's own % and _ are escaped.
    """
    out: list[str] = []
    chars = iter(pattern)
    for char in chars:
        if char == "\\":
            out.append(_literal(next(chars, "\\")))
        elif char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        else:
            out.append(_literal(char))
    return "".join(out)


def _literal(char: str) -> str:
    return "\\" + char if char in "%_\\" else char
