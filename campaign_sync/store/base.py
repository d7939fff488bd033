"""The store boundary: what the engine asks of a store, whichever backend holds it.

The engine (runner, imports, exports, dispatch, status) holds a `Store` and never a driver:
each concern's SQL lives in the backend's own module, `campaign_sync.store.<kind>.<concern>`,
and both backends' modules offer the same functions with the same signatures. The engine
fetches the module with `store.sql("<concern>")`, so no backend check is written in it.

Which backend a location names is `is_url`'s answer; campaign_sync.store.open opens it.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from pathlib import Path
from types import ModuleType
from typing import Any

from ..config.model import STORE_URL_SCHEMES
from ..errors import StoreError, StoreUnusable

_KIND_NAMES = {"sqlite": "an SQLite", "postgres": "a PostgreSQL"}


def is_url(location: str) -> bool:
    """Whether `store` names a PostgreSQL server rather than an SQLite file."""
    return location.startswith(STORE_URL_SCHEMES)


class Store(ABC):
    """One open store: its connection, its clock, its locks and its SQL modules."""

    kind: str  # "sqlite" or "postgres": the package under campaign_sync.store
    location: str  # for messages: a path, or a URL without its password
    conn: Any  # the driver's connection, in autocommit mode (transactions are explicit)
    errors: tuple[type[BaseException], ...]  # what the driver raises

    @abstractmethod
    def __init__(
        self, location: str, *, schema: str = "public", create: bool = True, read_only: bool = False
    ) -> None:
        """Open the store, creating and migrating it unless `create` is False. `read_only`
        (the HTTP service) writes nothing at all: it neither creates nor migrates, refuses a
        store at another schema version (StoreUnusable), and the connection cannot write."""

    def sql(self, concern: str) -> ModuleType:
        """The backend's module for `concern` ("runs", "recipients", "exports", …)."""
        name = f"{__package__}.{self.kind}.{concern}"
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            raise StoreUnusable(
                f"{_KIND_NAMES[self.kind]} store cannot do {concern.replace('_', ' ')} with "
                "this version of campaign-sync; use an SQLite store for these jobs"
            ) from None

    @abstractmethod
    def now(self) -> str:
        """The store's clock, as stored everywhere: ISO 8601 UTC text with microseconds."""

    @abstractmethod
    def failure(self, doing: str, exc: BaseException) -> StoreError:
        """`exc` from the driver, met while `doing` something, as one line for the operator."""

    @classmethod
    def job_lock_before_opening(cls, work_dir: Path, job: str) -> AbstractContextManager[None]:
        """The part of the job's lock taken before the store is opened (a backend whose lock
        needs no connection takes it all here, so a refused run does not even open it)."""
        return nullcontext()

    def job_lock(self, work_dir: Path, job: str) -> AbstractContextManager[None]:
        """The part of the job's lock that needs the open store; JobLocked (exit 75) at once
        when another run holds it."""
        return nullcontext()

    @abstractmethod
    def begin_write(self) -> None:
        """Open a write transaction that holds the store's writer lock: writers queue, and a
        change time taken after this is later than any export watermark taken before."""

    @abstractmethod
    def begin_snapshot(self) -> str:
        """Open a read transaction for an export and return its watermark: every change
        committed with an earlier change time is in the snapshot, every later one is not."""

    @property
    @abstractmethod
    def in_transaction(self) -> bool:
        """Whether a transaction is open on the connection."""

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        """End an open transaction, if any; one the server already ended is just as good."""
        if self.in_transaction:
            with suppress(*self.errors):
                self.conn.execute("ROLLBACK")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction for the block: committed at its end, rolled back on any
        exception (KeyboardInterrupt included)."""
        self.begin_write()
        try:
            yield
        except BaseException:
            self.rollback()
            raise
        self.commit()

    def reopen(self) -> bool:
        """After the connection was lost (a server restarted), open a new one if the server
        answers again; whether it did. The job lock went with the old one."""
        return False

    @abstractmethod
    def close(self) -> None:
        """Close the connection; what the server held for it (locks) goes with it."""
