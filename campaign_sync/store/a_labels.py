"""Schema step v5: stored addresses with an A-label domain take the Unicode form.

Imports now store `anna@xn--bcher-kva.de` as `anna@bücher.de` (see addresses.normalise).
A store written before that may hold either spelling, or both, of one address; this step
gives every stored address and blocklist pattern the form imports now give them. Where
several spellings become one key, their rows become one, and never so that a suppression
is lost or a mailing is sent twice:

* a member: the newest row (by its own `updated_at`; on a tie, one that is not `removed`)
  gives status and fields over the older rows' fields, unless any row was unsubscribed;
  the latest confirmation and the earliest creation are kept;
* an unsubscription: the one with the latest date, with its reason;
* a bounce: one row per address, type and date, as imports keep them;
* a doi-dispatch send: the most final state (sent, then unknown, …), never re-sendable;
* a blocklist pattern: the earliest creation, the latest change and its reason.

Rows that change get the migration's time as their change time, so changes-only exports
carry the new spelling. The step runs inside the migration's transaction: all or nothing.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from ..core.addresses import normalise

# Best first: a send in any earlier state must not be made again.
_SEND_RANK = {"sent": 0, "unknown": 1, "sending": 2, "failed": 3, "deferred": 4}


def decode_a_labels(conn: sqlite3.Connection, changed: str) -> None:
    _recipients(conn, changed)
    _unsubscribers(conn, changed)
    _bounces(conn, changed)
    _sends(conn)
    _blocklist(conn, changed)


def _groups(
    conn: sqlite3.Connection, table: str, column: str, key: Callable[[dict[str, Any]], Any]
) -> Iterable[tuple[str, list[dict[str, Any]]]]:
    """(normalised spelling, all rows that become its key) where one row needs renaming."""
    conn.row_factory = sqlite3.Row
    try:
        renamed = {
            row[0]: normalise(row[0])
            for row in conn.execute(
                f"SELECT DISTINCT {column} FROM {table} WHERE {column} LIKE '%xn--%'"
            )
        }
        targets = {new for old, new in renamed.items() if new != old}
        if not targets:
            return []
        spellings = [old for old, new in renamed.items() if new in targets] + sorted(targets)
        marks = ", ".join("?" * len(spellings))
        rows = [
            dict(row)
            for row in conn.execute(f"SELECT * FROM {table} WHERE {column} IN ({marks})", spellings)
        ]
    finally:
        conn.row_factory = None
    grouped: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        row["_new"] = renamed.get(row[column], row[column])
        grouped[key(row)].append(row)
    return [(group[0]["_new"], group) for group in grouped.values()]


def _replace(
    conn: sqlite3.Connection,
    table: str,
    where: str,
    rows: list[dict[str, Any]],
    keep: dict[str, Any],
) -> None:
    """Delete `rows` (by `where`, named parameters) and insert `keep` in their place."""
    for row in rows:
        conn.execute(f"DELETE FROM {table} WHERE {where}", row)
    columns = [name for name in keep if not name.startswith("_")]
    values = ", ".join(f":{name}" for name in columns)
    conn.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values})", keep)


def _recipients(conn: sqlite3.Connection, changed: str) -> None:
    for new, rows in _groups(conn, "recipients", "email", lambda r: (r["list_id"], r["_new"])):
        rows.sort(key=lambda r: (r["updated_at"], r["status"] != "removed"))
        fields: dict[str, Any] = {}
        for row in rows:  # oldest first: newer values win, as an upsert would have it
            fields.update(json.loads(row["fields"]))
        newest = rows[-1]
        statuses = {row["status"] for row in rows}
        confirmations = [row["doi_confirmed_at"] for row in rows if row["doi_confirmed_at"]]
        keep = dict(
            newest,
            email=new,
            status="unsubscribed" if "unsubscribed" in statuses else newest["status"],
            fields=json.dumps(fields, ensure_ascii=False, separators=(",", ":")),
            doi_confirmed_at=max(confirmations, default=None),
            created_at=min(row["created_at"] for row in rows),
            updated_at=changed,
        )
        _replace(conn, "recipients", "list_id = :list_id AND email = :email", rows, keep)


def _unsubscribers(conn: sqlite3.Connection, changed: str) -> None:
    for new, rows in _groups(conn, "unsubscribers", "email", lambda r: (r["list"], r["_new"])):
        latest = max(rows, key=lambda r: r["unsubscribed_at"])
        keep = dict(latest, email=new, changed_at=changed)
        _replace(conn, "unsubscribers", "email = :email AND list = :list", rows, keep)


def _bounces(conn: sqlite3.Connection, changed: str) -> None:
    for new, rows in _groups(
        conn, "bounces", "email", lambda r: (r["_new"], r["type"], r["bounced_at"], r["id"])
    ):
        exists = conn.execute(
            "SELECT 1 FROM bounces WHERE email = ? AND type = ? AND bounced_at = ? AND id != ?",
            (new, rows[0]["type"], rows[0]["bounced_at"], rows[0]["id"]),
        ).fetchone()
        if exists and rows[0]["email"] != new:
            conn.execute("DELETE FROM bounces WHERE id = ?", (rows[0]["id"],))
        elif rows[0]["email"] != new:
            conn.execute(
                "UPDATE bounces SET email = ?, changed_at = ? WHERE id = ?",
                (new, changed, rows[0]["id"]),
            )


def _sends(conn: sqlite3.Connection) -> None:
    for new, rows in _groups(conn, "sends", "email", lambda r: (r["job"], r["_new"])):
        best = min(rows, key=lambda r: (_SEND_RANK.get(r["state"], 9), r["id"]))
        _replace(conn, "sends", "id = :id", rows, dict(best, email=new))


def _blocklist(conn: sqlite3.Connection, changed: str) -> None:
    for new, rows in _groups(conn, "blocklist", "pattern", lambda r: r["_new"]):
        latest = max(rows, key=lambda r: r["modified_at"])
        keep = dict(
            latest,
            pattern=new,
            created_at=min(row["created_at"] for row in rows),
            modified_at=changed,
        )
        _replace(conn, "blocklist", "pattern = :pattern", rows, keep)
