"""The SQLite store backend: one file on the cron host, nothing to set up (the default).

Its connection, schema and migrations are campaign_sync.store's own (the first backend);
this class puts them behind the store boundary, and each concern's SQL sits beside it.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from pathlib import Path

from ...errors import StoreError
from .. import connect, connect_read_only, failure, now
from ..base import Store
from . import runs


class SqliteStore(Store):
    kind = "sqlite"
    errors = (sqlite3.Error,)

    def __init__(
        self, location: str, *, schema: str = "public", create: bool = True, read_only: bool = False
    ) -> None:
        self.location = location
        if read_only:
            self.conn: sqlite3.Connection = connect_read_only(location)
        else:
            self.conn = connect(location, create=create)

    def now(self) -> str:
        return now()

    def failure(self, doing: str, exc: BaseException) -> StoreError:
        assert isinstance(exc, sqlite3.Error)
        return failure(doing, self.location, exc)

    @classmethod
    def job_lock_before_opening(cls, work_dir: Path, job: str) -> AbstractContextManager[None]:
        # A file lock in work_dir: the kernel drops it when the process dies.
        return runs.job_lock(work_dir, job)

    def begin_write(self) -> None:
        # IMMEDIATE takes the write lock up front: writers queue on the busy timeout
        # instead of one failing half-way through.
        self.conn.execute("BEGIN IMMEDIATE")

    def begin_snapshot(self) -> str:
        # Holding the write lock while reading makes the snapshot and its watermark agree:
        # every import commits either wholly before it or gets a later change time.
        self.conn.execute("BEGIN IMMEDIATE")
        return now()

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def close(self) -> None:
        self.conn.close()
