"""One address across an SQLite store, for `campaign-sync recipient` (SQL: store/recipient.py).

Read in one read transaction (a snapshot; nothing is written, no lock is waited for).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..recipient import PATTERNS, queries
from .statuses import address_checks

if TYPE_CHECKING:
    from ...config.model import BounceLimits
    from ..base import Store


def per_address_queries(limits: BounceLimits) -> tuple[dict[str, str], dict[str, object]]:
    """The queries by name, and their parameters but for email, latest and blocklisted."""
    checks, params = address_checks(limits)
    return queries(":{}".format, checks), params


@contextmanager
def snapshot(store: Store) -> Iterator[None]:
    """One consistent read of the store for the block; it writes nothing."""
    store.conn.execute("BEGIN")  # deferred: a read snapshot once the first query runs
    try:
        yield
    finally:
        store.conn.execute("ROLLBACK")


def read(
    store: Store, name: str, limits: BounceLimits, params: dict[str, object]
) -> list[dict[str, Any]]:
    """The rows of query `name` for `params` (email, latest, blocklisted), as dicts."""
    sql, fixed = per_address_queries(limits)
    cursor = store.conn.cursor()
    cursor.row_factory = sqlite3.Row
    rows = [dict(row) for row in cursor.execute(sql[name], {**fixed, **params})]
    for row in rows:
        if "fields" in row:
            row["fields"] = json.loads(row["fields"] or "{}")
    return rows


def patterns(store: Store) -> list[tuple[str, str]]:
    """Every blocklist pattern with its reason."""
    return [(str(p), str(r)) for p, r in store.conn.execute(PATTERNS)]
