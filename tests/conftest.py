"""Shared fixtures: a throwaway workspace with a config, a local 'server' folder and a store."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from campaign_sync_cli.main import main
from hypothesis import settings
from pgfixtures import PgSchema, pg_schema, pg_server, pg_url  # noqa: F401  (shared fixtures)

# Tests run the console script installed beside this interpreter, not whatever a version
# manager's shim on PATH points at (and without the shim's start-up cost).
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
from click.testing import CliRunner, Result

# Property tests are deterministic unless someone asks otherwise: the "ci" profile derives each
# test's examples from the test itself (no random seed) and keeps no example database, so a green
# main stays green on any machine. tests/explore.sh selects "explore": random seeds, a local
# database of failures, and (through tests/props.py) ten times the examples.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("CAMPAIGN_SYNC_HYPOTHESIS_PROFILE", "ci"))

BASE_CONFIG = """\
store: store.db
work_dir: var
timezone: Europe/Berlin
servers:
  inbox:
    type: local
    path: inbox
jobs:
  newsletter-import:
    type: recipient-import
    list: newsletter
    schedule: daily 02:30
    source: {{server: inbox, path: "/import/newsletter_{{date:%Y%m%d}}.csv"}}
    format: {{delimiter: ";"}}
    columns: {{E-Mail: email, Vorname: first_name, Nachname: last_name, DOI: doi_confirmed_at}}
    max_rejects: 50%
  newsletter-export:
    type: recipient-export
    list: newsletter
    schedule: weekly mon 06:00
    target: {{server: inbox, path: /export/newsletter.csv}}
    fields: [email, first_name, last_name]
{extra}"""


@dataclass
class Workspace:
    """A test's folder with its config, its local 'server' folder and its store.

    `kind` is the store's backend: "sqlite" (the file `store.db`) or "postgres" (`pg`, a schema
    of its own on the suite's server). Tests that read the store use query(), recipients() and
    dump(), which work on both; `?` placeholders are translated for PostgreSQL.
    """

    root: Path
    kind: str = "sqlite"
    pg: PgSchema | None = None

    @property
    def config(self) -> Path:
        return self.root / "campaign-sync.yaml"

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def store(self) -> Path:
        return self.root / "store.db"

    @property
    def store_setting(self) -> str:
        """The config's store line(s) for this workspace's backend."""
        if self.pg is None:
            return "store: store.db"
        return f"store: {self.pg.url}\nstore_schema: {self.pg.name}"

    def write_config(self, extra: str = "", *, text: str | None = None) -> Path:
        body = text if text is not None else BASE_CONFIG.format(extra=textwrap.dedent(extra))
        if self.pg is not None:
            body = body.replace("store: store.db", self.store_setting, 1)
        self.config.write_text(body, encoding="utf-8")
        return self.config

    def drop(self, remote: str, content: str | bytes) -> Path:
        """Put a file on the local 'server' as a partner would."""
        path = self.inbox / remote.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode("utf-8")
        path.write_bytes(content)
        return path

    def cli(self, *args: str, env: dict[str, str] | None = None) -> Result:
        """Run the CLI in-process, the way sqlite-utils tests do. A run installs its own
        SIGINT/SIGTERM handlers; pytest gets its own back, so Ctrl-C still stops it."""
        handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            return CliRunner().invoke(main, ["--config", str(self.config), *args], env=env)
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)

    def run(
        self, *args: str, env: dict[str, str] | None = None, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run the installed console script, as cron would."""
        full_env = {**os.environ, **(env or {})}
        return subprocess.run(
            ["campaign-sync", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            env=full_env,
            timeout=120,
            **kw,
        )

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of `sql` (with `?` placeholders) from the store, committed if it writes."""
        if self.pg is not None:
            with self._pg() as conn:
                cursor = conn.execute(sql.replace("%", "%%").replace("?", "%s"), params)
                return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
        with sqlite3.connect(self.store) as conn:
            return conn.execute(sql, params).fetchall()

    def _pg(self) -> Any:
        import psycopg

        assert self.pg is not None
        # As the server's superuser: a test may have made the store as a role of its own.
        conn = psycopg.connect(self.pg.admin_url, autocommit=True)
        conn.execute(f'SET search_path TO "{self.pg.name}"')
        return conn

    def recipients(self, list_name: str = "newsletter") -> dict[str, tuple[str, dict[str, Any]]]:
        rows = self.query(
            "SELECT r.email, r.status, r.fields FROM recipients r JOIN lists l ON l.id = r.list_id "
            "WHERE l.name = ? ORDER BY r.email",
            (list_name,),
        )
        return {
            email: (status, fields if isinstance(fields, dict) else json.loads(fields))
            for email, status, fields in rows
        }

    def dump(self) -> list[str]:
        """Every row of every table, for before/after comparisons."""
        if self.pg is not None:
            with self._pg() as conn:
                tables = [
                    row[0]
                    for row in conn.execute(
                        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                        "ORDER BY tablename"
                    )
                ]
                return [  # in the form iterdump() gives SQLite's rows, for filters alike
                    f'INSERT INTO "{table}" VALUES{row!r}'
                    for table in tables
                    for row in conn.execute(f'SELECT * FROM "{table}" AS t ORDER BY t::text')
                ]
        with sqlite3.connect(self.store) as conn:
            return list(conn.iterdump())


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "stores(*kinds): run each test that uses `ws` once per store backend named "
        "(sqlite, postgres)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("stores")
    if marker is not None and "ws" in metafunc.fixturenames:
        metafunc.parametrize("store_kind", marker.args)


@pytest.fixture
def store_kind() -> str:
    """The backend of `ws`: SQLite unless the test is marked with `stores(...)`."""
    return "sqlite"


@pytest.fixture
def ws(tmp_path: Path, store_kind: str, request: pytest.FixtureRequest) -> Workspace:
    pg = request.getfixturevalue("pg_schema") if store_kind == "postgres" else None
    workspace = Workspace(tmp_path, store_kind, pg)
    workspace.inbox.mkdir()
    workspace.write_config()
    return workspace


SAMPLE = (
    "E-Mail;Vorname;Nachname;DOI\n"
    "anna@example.com;Anna;Schmidt;2026-11-20T10:15:00+01:00\n"
    "Ben@Example.com ;Ben;Müller;\n"
    "carla@example.org;Carla;Rossi;\n"
)
