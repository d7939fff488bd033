"""The PostgreSQL store backend: one store shared by several cron hosts and the platform.

Imported only when `store` is a postgresql:// URL; psycopg (the `postgres` extra) is imported
inside, on first use, never by this package's import.

The clock is the server's (clock_timestamp()), not the host's: change times and watermarks
written by several hosts must be ordered by one clock, whatever the hosts' own clocks say.

Writers and export snapshots (how the changes-only watermark stays exact): every writing
transaction first takes a transaction-level advisory lock on the schema's "write" key, and
only then reads the clock for its change times; it holds the lock until it commits. An
export takes the same lock as a session lock *before* it begins its REPEATABLE READ
transaction, reads the clock inside it (which also fixes the snapshot), and lets the lock
go. So no writer is in flight when the snapshot is taken: every change time below the
watermark belongs to a transaction that committed before the snapshot and is in it, and
every writer that follows reads a later clock. Exports hold the lock for a moment, not for
the whole export; writers queue on one another, as on SQLite.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ...errors import StoreError, StoreNotCreated, StoreUnusable
from ..base import Store
from . import locks
from .connection import check_schema_name, connect, display, driver, failure
from .schema import SCHEMA_VERSION, migrate, newer_store, version

# The store's text form of a moment: UTC, microseconds, "+00:00", as SQLite's stores write.
NOW_SQL = """to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""
_REOPEN_SECONDS = 30  # how long a lost connection is retried to record the run's end
_WRITE_KEY = "SELECT {fn}(hashtextextended(current_schema() || '/write', 0))"


class PostgresStore(Store):
    kind = "postgres"

    def __init__(
        self, url: str, *, schema: str = "public", create: bool = True, read_only: bool = False
    ) -> None:
        self.url = url
        self.schema = check_schema_name(schema)
        self.location = f"{display(url)} (schema {schema})"
        self.errors = (driver().Error,)
        self.conn: Any = connect(url, schema)
        try:
            if read_only:
                self._open_read_only()
            else:
                self._open(create)
        except BaseException:
            self.conn.close()
            raise

    def _open_read_only(self) -> None:
        """No migration, and a session whose every transaction is READ ONLY: the server
        itself refuses any write, whatever a query would try. Readers never wait for a
        writer's row locks; a lock that does block them (a migration's ALTER TABLE) is
        given up after a few seconds rather than waited for."""
        try:
            self.conn.execute(
                "SELECT set_config('default_transaction_read_only', 'on', false), "
                "set_config('lock_timeout', '5s', false)"
            )
            found = version(self.conn)
        except self.errors as exc:
            raise self.failure("cannot read the store", exc) from None
        if not found:
            raise StoreNotCreated(
                f"store {self.location} does not exist yet (it is created by the first run)"
            )
        if found > SCHEMA_VERSION:
            raise newer_store(self.location, found)
        if found < SCHEMA_VERSION:
            raise StoreUnusable(
                f"store {self.location} has schema version {found}, older than this "
                f"campaign-sync's ({SCHEMA_VERSION}); run any job once to upgrade it"
            )

    def _open(self, create: bool) -> None:
        # A store at this version needs nothing more (two cheap queries: status commands
        # stay fast); anything else goes through migrate, which creates, upgrades or refuses.
        try:
            found = version(self.conn)
        except self.errors as exc:
            raise self.failure("cannot read the store", exc) from None
        if found == SCHEMA_VERSION:
            return
        if not found and not create:
            raise StoreNotCreated(
                f"store {self.location} does not exist yet (it is created by the first run)"
            )
        migrate(self.conn, self.url, self.schema)  # refuses a newer store with one line

    def now(self) -> str:
        # Never before the newest time a copied SQLite store holds (`store copy` records it
        # as meta.clock_floor): that host's clock may have been ahead of this server's, and
        # a change stamped before the last export's watermark would be missed by the next.
        row = self.conn.execute(
            f"SELECT greatest({NOW_SQL}, (SELECT value FROM meta WHERE key = 'clock_floor'))"
        ).fetchone()
        return str(row[0])

    def failure(self, doing: str, exc: BaseException) -> StoreError:
        assert isinstance(exc, Exception)
        return failure(doing, self.url, exc)

    def job_lock(self, work_dir: Path, job: str) -> AbstractContextManager[None]:
        # A session advisory lock: the server drops it when this connection ends, on any host.
        return locks.job_lock(self.conn, self.schema, job)

    def begin_write(self) -> None:
        self.conn.execute("BEGIN")
        self.conn.execute(_WRITE_KEY.format(fn="pg_advisory_xact_lock"))

    def begin_snapshot(self) -> str:
        self.conn.execute(_WRITE_KEY.format(fn="pg_advisory_lock"))
        try:
            self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            watermark = self.now()  # the transaction's first query: its snapshot is taken here
        finally:
            self.conn.execute(_WRITE_KEY.format(fn="pg_advisory_unlock"))
        return watermark

    @property
    def in_transaction(self) -> bool:
        status = self.conn.info.transaction_status
        return bool(status != driver().pq.TransactionStatus.IDLE)

    def reopen(self) -> bool:
        # A crash-restarted server refuses connections while it recovers (seconds): wait
        # for it a little, so that the run can still record how it ended.
        if not self.conn.broken:
            return False
        deadline = time.monotonic() + _REOPEN_SECONDS
        pause = 0.2
        while True:
            try:
                fresh = connect(self.url, self.schema)
                break
            except StoreError:
                if time.monotonic() + pause > deadline:
                    return False
                time.sleep(pause)
                pause = min(pause * 2, 2.0)
        self.conn.close()
        self.conn = fresh
        return True

    def close(self) -> None:
        self.conn.close()
