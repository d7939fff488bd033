"""recipient-import's SQL on SQLite: stage the checked rows, decide each address's action,
and merge into a list with a handful of set-based statements.

`params` of the functions below: list_id, list, mode, now and latest (see the engine,
campaign_sync.imports.recipients). The caller owns the transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from .. import list_id as _list_id
from ..statuses import unsubscription_wins
from . import staging
from .staging import drop as drop  # the engine drops the stage through this module

LAYOUT = "email TEXT NOT NULL, doi TEXT, blocked TEXT, fields TEXT NOT NULL"


def blocklist_patterns(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT pattern FROM blocklist")]


def list_id(conn: sqlite3.Connection, name: str, now: str) -> int:
    """The list's id, the list created on first use (dated by the store's own clock)."""
    found = _list_id(conn, name, create=True)
    assert found is not None
    return found


def stage(conn: sqlite3.Connection, names: list[str], rows: Iterable[tuple[Any, ...]]) -> None:
    """Stage the rows, in file order, as `names` (of LAYOUT's columns) into incoming_raw."""
    staging.stage_raw(conn, LAYOUT, names, rows)


def can_insert_directly(conn: sqlite3.Connection, params: dict[str, Any]) -> bool:
    """Whether every staged address that is not blocklisted is simply inserted: the list has
    no record at all (not even a removed one), the mode inserts, and no staged address is
    unsubscribed (whose row might then be suppressed and another row of it not)."""
    if params["mode"] == "update-only":
        return False
    return not conn.execute(
        """SELECT EXISTS (SELECT 1 FROM recipients WHERE list_id = :list_id)
               OR EXISTS (SELECT 1 FROM incoming_raw AS i JOIN unsubscribers AS u
                          ON u.email = i.email AND u.list IN ('', :list))""",
        params,
    ).fetchone()[0]


def insert_directly(conn: sqlite3.Connection, params: dict[str, Any]) -> tuple[int, int]:
    """The first import into a list: sorted once, straight from the stage into the store.

    Duplicates (sorted by address, then file order) update the row just inserted, so the
    last one wins; a blocklisted address has the same verdict in all its rows. Returns the
    addresses inserted and the (distinct) blocklisted ones.
    """
    conn.execute(
        """
        INSERT INTO recipients
            (list_id, email, status, fields, doi_confirmed_at, created_at, updated_at)
        SELECT :list_id, email, 'active', fields, doi, :now, :now FROM incoming_raw
        WHERE blocked IS NULL ORDER BY email, rowid
        ON CONFLICT (list_id, email) DO UPDATE SET
            fields = excluded.fields, doi_confirmed_at = excluded.doi_confirmed_at
        """,
        params,
    )
    inserted, blocked = conn.execute(
        """SELECT (SELECT count(*) FROM recipients WHERE list_id = :list_id),
                  (SELECT count(DISTINCT email) FROM incoming_raw WHERE blocked IS NOT NULL)""",
        params,
    ).fetchone()
    return int(inserted), int(blocked)


_PAYLOAD = ("doi", "blocked", "fields")


def classify(conn: sqlite3.Connection, params: dict[str, Any]) -> dict[str, int]:
    """Decide each distinct address's action into `incoming`, in address order; how many
    addresses have each action.

    The stage is grouped by address (the last row of each, by rowid, wins) before it is
    joined to the store, so the lookups walk the store's B-tree in key order instead of
    jumping around it in file order.
    """
    conn.execute("DROP TABLE IF EXISTS temp.incoming")
    conn.execute(
        "CREATE TEMP TABLE incoming "
        "(email TEXT NOT NULL, doi TEXT, blocked TEXT, fields TEXT, action TEXT)"
    )
    # Most rows of a regular re-import are unchanged and need nothing but their key and
    # their count: leaving their other cells out writes a fraction of the bytes.
    conn.execute(
        f"""
        INSERT INTO incoming
        SELECT email, {", ".join(f"iif(action = 'unchanged', NULL, {c})" for c in _PAYLOAD)},
            action
        FROM (SELECT i.email, i.doi, i.blocked, i.fields, {_action_sql("i.fields")} AS action
              FROM (SELECT max(rowid), email, doi, blocked, fields FROM incoming_raw
                    GROUP BY email) AS i
              LEFT JOIN recipients AS r ON r.list_id = :list_id AND r.email = i.email)
        """,
        params,
    )
    conn.execute("DROP TABLE temp.incoming_raw")
    return staging.tally(conn)


# Never re-subscribe: an unsubscription from this list or all lists suppresses the row,
# unless the row carries a double opt-in confirmation newer than it (and not in the future).
_UNSUBSCRIBED = f"""EXISTS (
    SELECT 1 FROM unsubscribers AS u
    WHERE u.email = i.email AND u.list IN ('', :list)
      AND {unsubscription_wins("i.doi", "u.unsubscribed_at", ":latest")})"""


def _action_sql(fields: str) -> str:
    """Per staged row `i` against its recipient `r`: what the import does with it.

    A removed member comes back as a new one; a blocklisted address is never added; an
    unsubscribed one is neither added nor re-activated; rows equal to the record (comparing
    the text first: re-imports of the same layout skip the JSON patch) are unchanged.
    """
    return f"""CASE
        WHEN r.status IS NULL OR r.status = 'removed' THEN CASE
            WHEN i.blocked IS NOT NULL THEN 'suppressed_blocklisted'
            WHEN {_UNSUBSCRIBED} THEN 'suppressed_unsubscribed'
            WHEN :mode = 'update-only' THEN 'ignored'
            ELSE 'inserted' END
        WHEN r.status = 'unsubscribed' THEN CASE
            WHEN {_UNSUBSCRIBED} THEN 'suppressed_unsubscribed'
            WHEN :mode = 'add-only' THEN 'ignored'
            ELSE 'updated' END
        WHEN (i.doi IS NULL OR i.doi IS r.doi_confirmed_at)
             AND (r.fields = {fields} OR json_patch(r.fields, {fields}) = r.fields)
            THEN 'unchanged'
        WHEN :mode = 'add-only' THEN 'ignored'
        ELSE 'updated' END"""


def members_and_removed(conn: sqlite3.Connection, list_id: int) -> tuple[int, int]:
    """How many members the list has, and how many of them the staged file leaves out."""
    members, removed = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE email NOT IN (SELECT email FROM incoming)) "
        "FROM recipients WHERE list_id = ? AND status != 'removed'",
        (list_id,),
    ).fetchone()
    return int(members), int(removed)


def apply(
    conn: sqlite3.Connection, params: dict[str, Any], counts: dict[str, int], *, replace: bool
) -> None:
    """Write the decided actions to the store (statements with nothing to do are skipped)."""
    if counts.get("inserted"):
        conn.execute(
            """
            INSERT INTO recipients
                (list_id, email, status, fields, doi_confirmed_at, created_at, updated_at)
            SELECT :list_id, email, 'active', fields, doi, :now, :now FROM incoming
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
            UPDATE recipients SET
                fields = json_patch(recipients.fields, incoming.fields),
                doi_confirmed_at = coalesce(incoming.doi, recipients.doi_confirmed_at),
                status = 'active', updated_at = :now
            FROM incoming
            WHERE recipients.list_id = :list_id AND recipients.email = incoming.email
              AND incoming.action = 'updated'
            """,
            params,
        )
    if replace and counts.get("removed"):
        conn.execute(
            "UPDATE recipients SET status = 'removed', updated_at = :now "
            "WHERE list_id = :list_id AND status != 'removed' "
            "AND email NOT IN (SELECT email FROM incoming)",
            params,
        )
