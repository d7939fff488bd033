"""recipient-import's SQL on PostgreSQL: stage the checked rows with COPY, decide each
address's action, and merge into a list with set-based statements.

The same decisions as the SQLite module, in PostgreSQL's terms: fields are jsonb, so a row
is unchanged when the record's fields contain it (`@>`) and an update merges with `||`
(SQLite: json_patch, the same for objects of strings); the last row of an address wins by
DISTINCT ON over the stage's row numbers (SQLite: INSERT OR REPLACE in rowid order).

`params` of the functions below: list_id, list, mode, now and latest (see the engine,
campaign_sync.imports.recipients). The caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..statuses import unsubscription_wins
from . import staging
from .staging import drop as drop  # the engine drops the stage through this module

if TYPE_CHECKING:
    import psycopg

LAYOUT = (
    'email text COLLATE "C" NOT NULL, doi text COLLATE "C", blocked text COLLATE "C", '
    "fields jsonb NOT NULL"
)


def blocklist_patterns(conn: psycopg.Connection[Any]) -> list[str]:
    return [row[0] for row in conn.execute("SELECT pattern FROM blocklist")]


def list_id(conn: psycopg.Connection[Any], name: str, now: str) -> int:
    """The list's id, the list created on first use (dated `now`)."""
    found = conn.execute("SELECT id FROM lists WHERE name = %s", (name,)).fetchone()
    if found is None:
        # (Another host may create it meanwhile: then its row, once committed, is the one.)
        found = (
            conn.execute(
                "INSERT INTO lists (name, created_at) VALUES (%s, %s) "
                "ON CONFLICT (name) DO NOTHING RETURNING id",
                (name, now),
            ).fetchone()
            or conn.execute("SELECT id FROM lists WHERE name = %s", (name,)).fetchone()
        )
    assert found is not None
    return int(found[0])


def stage(conn: psycopg.Connection[Any], names: list[str], rows: Iterable[tuple[Any, ...]]) -> None:
    """Stage the rows, in file order, as `names` (of LAYOUT's columns) into incoming_raw."""
    staging.stage_raw(conn, LAYOUT, names, rows)


def can_insert_directly(conn: psycopg.Connection[Any], params: dict[str, Any]) -> bool:
    """Whether every staged address that is not blocklisted is simply inserted: the list has
    no record at all (not even a removed one), the mode inserts, and no staged address is
    unsubscribed (whose row might then be suppressed and another row of it not)."""
    if params["mode"] == "update-only":
        return False
    row = conn.execute(
        """SELECT EXISTS (SELECT 1 FROM recipients WHERE list_id = %(list_id)s)
               OR EXISTS (SELECT 1 FROM incoming_raw AS i JOIN unsubscribers AS u
                          ON u.email = i.email AND u.list IN ('', %(list)s))""",
        params,
    ).fetchone()
    return not (row and row[0])


def insert_directly(conn: psycopg.Connection[Any], params: dict[str, Any]) -> tuple[int, int]:
    """The first import into a list: the last row of each address, straight from the stage
    into the store in address order. Returns the addresses inserted and the (distinct)
    blocklisted ones (a blocklisted address has the same verdict in all its rows)."""
    inserted = conn.execute(
        """
        INSERT INTO recipients
            (list_id, email, status, fields, doi_confirmed_at, created_at, updated_at)
        SELECT DISTINCT ON (email)
            %(list_id)s, email, 'active', fields, doi, %(now)s, %(now)s
        FROM incoming_raw WHERE blocked IS NULL ORDER BY email, n DESC
        """,
        params,
    ).rowcount
    row = conn.execute(
        "SELECT count(DISTINCT email) FROM incoming_raw WHERE blocked IS NOT NULL"
    ).fetchone()
    return inserted, int(row[0]) if row else 0


def classify(conn: psycopg.Connection[Any], params: dict[str, Any]) -> dict[str, int]:
    """Decide each distinct address's action into `incoming`; how many have each action."""
    conn.execute(
        'CREATE TEMP TABLE incoming (email text COLLATE "C" NOT NULL, doi text COLLATE "C", '
        'blocked text COLLATE "C", fields jsonb, action text COLLATE "C") ON COMMIT DROP'
    )
    # Most rows of a regular re-import are unchanged and need nothing but their key and
    # their count: leaving their other cells out writes a fraction of the bytes.
    payload = ", ".join(
        f"CASE WHEN action = 'unchanged' THEN NULL ELSE {c} END"
        for c in ("doi", "blocked", "fields")
    )
    conn.execute(
        f"""
        INSERT INTO incoming
        SELECT email, {payload}, action
        FROM (SELECT i.email, i.doi, i.blocked, i.fields, {_ACTION} AS action
              FROM (SELECT DISTINCT ON (email) email, doi, blocked, fields FROM incoming_raw
                    ORDER BY email, n DESC) AS i
              LEFT JOIN recipients AS r ON r.list_id = %(list_id)s AND r.email = i.email) AS d
        """,
        params,
    )
    conn.execute("DROP TABLE incoming_raw")
    conn.execute("ANALYZE incoming")
    return staging.tally(conn)


# Never re-subscribe: an unsubscription from this list or all lists suppresses the row,
# unless the row carries a double opt-in confirmation newer than it (and not in the future).
_UNSUBSCRIBED = f"""EXISTS (
    SELECT 1 FROM unsubscribers AS u
    WHERE u.email = i.email AND u.list IN ('', %(list)s)
      AND {unsubscription_wins("i.doi", "u.unsubscribed_at", "%(latest)s")})"""

# Per staged row `i` against its recipient `r`: what the import does with it. A removed
# member comes back as a new one; a blocklisted address is never added; an unsubscribed
# one is neither added nor re-activated; rows the record already holds are unchanged.
_ACTION = f"""CASE
    WHEN r.status IS NULL OR r.status = 'removed' THEN CASE
        WHEN i.blocked IS NOT NULL THEN 'suppressed_blocklisted'
        WHEN {_UNSUBSCRIBED} THEN 'suppressed_unsubscribed'
        WHEN %(mode)s::text = 'update-only' THEN 'ignored'
        ELSE 'inserted' END
    WHEN r.status = 'unsubscribed' THEN CASE
        WHEN {_UNSUBSCRIBED} THEN 'suppressed_unsubscribed'
        WHEN %(mode)s::text = 'add-only' THEN 'ignored'
        ELSE 'updated' END
    WHEN (i.doi IS NULL OR i.doi = r.doi_confirmed_at) AND r.fields @> i.fields
        THEN 'unchanged'
    WHEN %(mode)s::text = 'add-only' THEN 'ignored'
    ELSE 'updated' END"""


def members_and_removed(conn: psycopg.Connection[Any], list_id: int) -> tuple[int, int]:
    """How many members the list has, and how many of them the staged file leaves out."""
    row = conn.execute(
        "SELECT count(*), count(*) - count(i.email) FROM recipients AS r "
        "LEFT JOIN incoming AS i ON i.email = r.email "
        "WHERE r.list_id = %s AND r.status != 'removed'",
        (list_id,),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def apply(
    conn: psycopg.Connection[Any],
    params: dict[str, Any],
    counts: dict[str, int],
    *,
    replace: bool,
) -> None:
    """Write the decided actions to the store (statements with nothing to do are skipped)."""
    if counts.get("inserted"):
        conn.execute(
            """
            INSERT INTO recipients
                (list_id, email, status, fields, doi_confirmed_at, created_at, updated_at)
            SELECT %(list_id)s, email, 'active', fields, doi, %(now)s, %(now)s FROM incoming
            WHERE action = 'inserted'
            ON CONFLICT (list_id, email) DO UPDATE SET
                status = 'active', fields = excluded.fields,
                doi_confirmed_at = excluded.doi_confirmed_at,
                created_at = excluded.created_at, updated_at = excluded.updated_at
            """,
            params,
        )
    if counts.get("updated"):
        conn.execute(
            """
            UPDATE recipients AS r SET
                fields = r.fields || i.fields,
                doi_confirmed_at = coalesce(i.doi, r.doi_confirmed_at),
                status = 'active', updated_at = %(now)s
            FROM incoming AS i
            WHERE r.list_id = %(list_id)s AND r.email = i.email AND i.action = 'updated'
            """,
            params,
        )
    if replace and counts.get("removed"):
        conn.execute(
            "UPDATE recipients AS r SET status = 'removed', updated_at = %(now)s "
            "WHERE r.list_id = %(list_id)s AND r.status != 'removed' "
            "AND NOT EXISTS (SELECT 1 FROM incoming AS i WHERE i.email = r.email)",
            params,
        )
