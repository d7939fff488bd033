"""Pytest fixtures for tests against a real PostgreSQL, and the rule that CI never skips them.

The server is the one tests/run.sh started (CAMPAIGN_SYNC_TEST_PG, its superuser's URL, and
CAMPAIGN_SYNC_TEST_PG_DIR, its folder). Without it, a developer's run starts a throwaway one for
the session when the server binaries are installed, and skips the PostgreSQL tests when they are
not; under CI=true a missing server fails those tests instead, so a broken run.sh cannot pass
as "all green, PostgreSQL skipped".

    pg_server   (session) the PgServer: url(user), password(user), restart_immediate()
    pg_url      (session) the superuser's URL (no password in it; PGPASSFILE has it)
    pg_schema   (per test) a fresh schema owned by the `campaign` role, dropped afterwards
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pgserver import APP_ROLE, PgServer, bindir

ENV_URL = "CAMPAIGN_SYNC_TEST_PG"
ENV_DIR = "CAMPAIGN_SYNC_TEST_PG_DIR"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def _given_server() -> PgServer | None:
    """The server named by the environment, or None."""
    url = os.environ.get(ENV_URL)
    if not url:
        return None
    server = PgServer(Path(os.environ[ENV_DIR]) if os.environ.get(ENV_DIR) else None)
    server.port = urlsplit(url).port or 5432
    return server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server = _given_server()
    if server is not None:
        yield server
        return
    if _in_ci():
        pytest.fail(
            f"{ENV_URL} is not set: in CI the PostgreSQL tests must run; "
            "start the server through tests/run.sh"
        )
    if bindir() is None:
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql)")
    started = PgServer().start()
    os.environ["PGPASSFILE"] = str(started.passfile)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def pg_url(pg_server: PgServer) -> str:
    return os.environ.get(ENV_URL) or pg_server.url()


@dataclass(frozen=True)
class PgSchema:
    """A schema of its own for one test: `url` logs in as the `campaign` role."""

    name: str
    url: str
    admin_url: str


_numbers = itertools.count(1)


def _as_user(url: str, user: str) -> str:
    """`url` logging in as `user` instead (the password file has every role's password)."""
    parts = urlsplit(url)
    return parts._replace(netloc=f"{user}@{parts.netloc.rpartition('@')[2]}").geturl()


def _schema_name(test_name: str) -> str:
    # Readable in pg_namespace, unique within the session and across parallel sessions.
    stem = re.sub(r"[^a-z0-9]+", "_", test_name.lower())[:30].strip("_")
    return f"t_{os.getpid()}_{next(_numbers)}_{stem}"


@pytest.fixture
def pg_schema(
    pg_server: PgServer, pg_url: str, request: pytest.FixtureRequest
) -> Iterator[PgSchema]:
    import psycopg
    from psycopg import sql

    name = _schema_name(request.node.name)
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(
                sql.Identifier(name), sql.Identifier(APP_ROLE)
            )
        )
    try:
        yield PgSchema(name=name, url=_as_user(pg_url, APP_ROLE), admin_url=pg_url)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
