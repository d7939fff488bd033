"""Opening the store a config names: a path is an SQLite file (the default, nothing to set
up); a postgresql:// or postgres:// URL is a PostgreSQL store, whose driver is imported only
then. Kept apart from base.py so that the backends, which build on base, are below it.
"""

from __future__ import annotations

from .base import Store, is_url


def store_class(location: str) -> type[Store]:
    """The backend for a store at `location` (its driver is imported only now)."""
    if is_url(location):
        from .postgres import PostgresStore

        return PostgresStore
    from .sqlite import SqliteStore

    return SqliteStore


def open_store(
    location: str, *, schema: str = "public", create: bool = True, read_only: bool = False
) -> Store:
    """Open the store at `location` (path or URL), creating and migrating it as needed;
    `create=False` refuses one that does not exist yet (StoreError); `read_only` also
    migrates nothing and gives a connection that cannot write (see Store.__init__)."""
    opened = store_class(location)
    return opened(location, schema=schema, create=create and not read_only, read_only=read_only)
