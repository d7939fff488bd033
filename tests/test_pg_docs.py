"""docs/postgresql.md kept honest: its SQL and its backup commands run as written against a
real server, and the roles they make are shown to have the privileges the page claims, no
more and no fewer.

Each test gets a database of its own, hardened the way a careful DBA leaves one (PUBLIC may
neither connect to it nor use its `public` schema), so a grant the page forgets shows up as
a failure here instead of passing on PostgreSQL's generous defaults. The page's example
names (`campaign` for the database and the role, `campaign_sync`, `campaign_reader`) are
replaced by names unique to the test, the same replacement everywhere in a block.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from pgserver import SUPERUSER
from psycopg import sql

from campaign_sync.errors import JobLocked, StoreUnusable
from campaign_sync.store.postgres import connection, locks, schema

if TYPE_CHECKING:
    from pgserver import PgServer


DOC = Path(__file__).resolve().parents[1] / "docs" / "postgresql.md"
EXAMPLE_NAME = re.compile(r"\bcampaign")  # the page's role, database, schema and reader
# The only fence info strings of SQL blocks; any other `sql…` block would go untested.
MAIN, OPTIONAL = "sql", "sql optional"
ROLE_ATTRIBUTES = ("rolsuper", "rolcreatedb", "rolcreaterole", "rolreplication", "rolbypassrls")


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(info string, body) of every fenced block of `text`, in order, indented ones included."""
    found = []
    for match in re.finditer(r"^( *)```([^\n]*)\n(.*?)^\1```[ \t]*$", text, re.M | re.S):
        indent = len(match.group(1))
        body = "".join(line[indent:] for line in match.group(3).splitlines(keepends=True))
        found.append((match.group(2).strip(), body))
    return found


def sql_blocks(info: str) -> list[str]:
    return [body for kind, body in fenced_blocks(DOC.read_text()) if kind == info]


def shell_command(program: str) -> list[str]:
    """The page's one shell command that runs `program`, as argv (continuations joined;
    `$(date +%F)` kept as a fixed word, since the test chooses its own file name anyway)."""
    commands = [
        body.replace("\\\n", " ").replace("$(date +%F)", "DATE")
        for kind, body in fenced_blocks(DOC.read_text())
        if kind == "sh" and body.lstrip().startswith(program + " ")
    ]
    assert len(commands) == 1, f"expected one `{program}` command in {DOC.name}"
    return shlex.split(commands[0])


def test_every_sql_block_of_the_page_is_one_the_tests_run():
    kinds = {kind for kind, _ in fenced_blocks(DOC.read_text()) if kind.startswith("sql")}
    assert kinds == {MAIN, OPTIONAL}
    assert len(sql_blocks(MAIN)) == 2  # (a) campaign-sync's role, (b) the reader
    assert len(sql_blocks(OPTIONAL)) == 1


# -- a database set up as the page says ------------------------------------------------------


@dataclass
class DocSetup:
    """What the page's SQL made, under this test's names, and how to log in as each role."""

    server: PgServer
    database: str
    app: str  # the page's `campaign` role
    reader: str  # `campaign_reader`
    schema: str  # `campaign_sync`
    env: dict[str, str]  # for libpq clients: a password file with every role's password

    def url(self, user: str) -> str:
        return self.server.url(user, self.database)

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url(SUPERUSER), autocommit=True)

    def store(self) -> psycopg.Connection[Any]:
        """campaign-sync's own connection, as the `campaign` role."""
        return connection.connect(self.url(self.app), self.schema)

    def reader_conn(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url(self.reader), autocommit=True)

    def run_sql(self, block: str) -> None:
        """A block of the page, with this test's names, through psql as the superuser."""
        script = EXAMPLE_NAME.sub(self.database, block)
        psql_args = ("-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.admin_url())
        done = self.client("psql", *psql_args, stdin=script)
        assert done.returncode == 0, f"the page's SQL failed:\n{script}\n{done.stderr}"

    def admin_url(self) -> str:
        return self.url(SUPERUSER)

    def client(
        self, program: str, *args: str, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A PostgreSQL client program of the server's version, with our password file."""
        assert self.server.bin is not None
        return subprocess.run(
            [str(self.server.bin / program), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
        )


@pytest.fixture
def doc(pg_server: PgServer, pg_url: str, tmp_path: Path, monkeypatch) -> Iterator[DocSetup]:
    name = f"doc{os.getpid()}_{secrets.token_hex(3)}"  # replaces the page's `campaign`
    setup = DocSetup(
        server=pg_server,
        database=name,
        app=name,
        reader=f"{name}_reader",
        schema=f"{name}_sync",
        env={},
    )
    try:
        _harden_new_database(pg_url, setup)
        setup.env = _password_file(pg_server, tmp_path, monkeypatch)
        setup.run_sql(sql_blocks(MAIN)[0])
        _set_password(setup, setup.app, tmp_path)
        # The page: point the config at the schema and run any command; the first creates the
        # tables. campaign-sync's own migration, as the `campaign` role, is that command here.
        with setup.store() as conn:
            assert schema.migrate(conn, setup.url(setup.app), setup.schema) == (
                schema.SCHEMA_VERSION
            )
        setup.run_sql(sql_blocks(MAIN)[1])
        _set_password(setup, setup.reader, tmp_path)
        yield setup
    finally:
        _drop(pg_url, setup)


def _harden_new_database(pg_url: str, setup: DocSetup) -> None:
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(setup.database)))
        admin.execute(
            sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(setup.database))
        )
    with setup.admin() as admin:
        admin.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")


def _password_file(pg_server: PgServer, tmp_path: Path, monkeypatch) -> dict[str, str]:
    """A password file of our own (the server's lines, and the new roles' to come), for this
    process (PGPASSFILE) and for psql, pg_dump and pg_restore."""
    passfile = tmp_path / "pgpass"
    passfile.write_text(pg_server.passfile.read_text())
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    return dict(pg_server.env(), PGPASSFILE=str(passfile))


def _set_password(setup: DocSetup, role: str, tmp_path: Path) -> None:
    """What `\\password ROLE` does in the page, and the role's line in ~/.pgpass."""
    password = secrets.token_urlsafe(18)
    with setup.admin() as admin:
        admin.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
        )
    with (tmp_path / "pgpass").open("a") as out:
        out.write(f"*:*:*:{role}:{password}\n")


def _drop(pg_url: str, setup: DocSetup) -> None:
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(setup.database)
            )
        )
        for role in (setup.reader, setup.app):
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _table(setup: DocSetup, name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(setup.schema), sql.Identifier(name))


def _store_tables(setup: DocSetup) -> set[str]:
    with setup.admin() as admin:
        rows = admin.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (setup.schema,)
        ).fetchall()
    return {row[0] for row in rows}


NOW = "2026-12-07T05:00:00.000000+00:00"


def _write_a_list(conn: psycopg.Connection[Any]) -> int:
    """A list, a member, a `running` run and a send, as campaign-sync's role writes them;
    the run's id."""
    with conn.transaction():
        list_id = conn.execute(
            "INSERT INTO lists (name, created_at) VALUES ('newsletter', %s) RETURNING id", (NOW,)
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "INSERT INTO recipients (list_id, email, fields, created_at, updated_at)"
            " VALUES (%s, 'anna@example.org', '{\"first_name\": \"Anna\"}', %s, %s)",
            (list_id, NOW, NOW),
        )
        run_id = conn.execute(
            "INSERT INTO runs (job, type, status, pid, host, started)"
            " VALUES ('welcome', 'doi-dispatch', 'running', 1, 'cron-a', %s) RETURNING id",
            (NOW,),
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "INSERT INTO sends (job, email, list, mailing, mailing_id, message_id, state,"
            " run_id, created_at, updated_at) VALUES ('welcome', 'anna@example.org',"
            " 'newsletter', 'welcome.eml', 'm1', '<m1@example.org>', 'sent', %s, %s, %s)",
            (run_id, NOW, NOW),
        )
    return int(run_id)


# -- (a) campaign-sync's role ---------------------------------------------------------------


def test_the_campaign_role_creates_its_store_and_writes_every_kind_of_row(doc: DocSetup):
    with doc.store() as conn:
        _write_a_list(conn)
        rows = conn.execute(
            "SELECT l.name, r.email, r.fields->>'first_name' FROM recipients r"
            " JOIN lists l ON l.id = r.list_id"
        ).fetchall()
        assert rows == [("newsletter", "anna@example.org", "Anna")]
        assert conn.execute("SELECT state FROM sends").fetchall() == [("sent",)]
        # Imports stage files in temporary tables: the TEMPORARY grant is what allows it.
        conn.execute("CREATE TEMPORARY TABLE stage (email text)")
        with conn.cursor().copy("COPY stage FROM STDIN") as copy:
            copy.write_row(("bert@example.org",))
        assert conn.execute("SELECT count(*) FROM stage").fetchone() == (1,)
        # Owner of every table the migration made, and of nothing else it needs.
        owners = conn.execute(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = %s", (doc.schema,)
        ).fetchall()
        assert owners == [(doc.app,)]


def test_job_locks_and_finding_dead_runs_work_with_the_roles_privileges(doc: DocSetup):
    with doc.store() as conn, doc.store() as other:
        run_id = _write_a_list(conn)  # a `running` run of `welcome`, whose process is gone
        assert locks.dead_running_runs(conn, doc.schema) == [(run_id, "welcome")]
        with locks.job_lock(conn, doc.schema, "welcome"):
            assert locks.dead_running_runs(other, doc.schema) == []  # the lock says alive
            with (
                pytest.raises(JobLocked),
                locks.job_lock(other, doc.schema, "welcome"),
            ):
                pass


def test_a_second_migration_from_another_connection_finds_the_store_current(doc: DocSetup):
    with doc.store() as conn:
        assert schema.migrate(conn, doc.url(doc.app), doc.schema) == schema.SCHEMA_VERSION


# -- (c) what neither role has ----------------------------------------------------------------


def test_neither_role_has_a_cluster_wide_privilege_or_create_on_the_database(doc: DocSetup):
    with doc.admin() as admin:
        for role in (doc.app, doc.reader):
            attributes = admin.execute(
                sql.SQL("SELECT {} FROM pg_roles WHERE rolname = %s").format(
                    sql.SQL(", ").join(sql.Identifier(a) for a in ROLE_ATTRIBUTES)
                ),
                (role,),
            ).fetchone()
            assert attributes == (False,) * len(ROLE_ATTRIBUTES), role
            may_create = admin.execute(
                "SELECT has_database_privilege(%s, current_database(), 'CREATE')", (role,)
            ).fetchone()
            assert may_create == (False,), role
    with doc.store() as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE SCHEMA elsewhere")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE public.elsewhere (x int)")
    # A schema nobody created is one line saying who should create it, not an attempt.
    missing = pytest.raises(StoreUnusable, match=r"the schema does not exist; create it")
    with connection.connect(doc.url(doc.app), "not_made") as conn, missing:
        schema.migrate(conn, doc.url(doc.app), "not_made")


# -- (b) the reader ----------------------------------------------------------------------------


def test_the_reader_reads_lists_and_recipients_and_nothing_else(doc: DocSetup):
    with doc.store() as conn:
        _write_a_list(conn)
    lists, recipients = _table(doc, "lists"), _table(doc, "recipients")
    with doc.reader_conn() as reader:
        assert reader.execute(sql.SQL("SELECT name FROM {}").format(lists)).fetchall() == [
            ("newsletter",)
        ]
        assert reader.execute(sql.SQL("SELECT email FROM {}").format(recipients)).fetchall() == [
            ("anna@example.org",)
        ]
        writes = [
            sql.SQL("INSERT INTO {} (name, created_at) VALUES ('x', 'y')").format(lists),
            sql.SQL("UPDATE {} SET name = 'x'").format(lists),
            sql.SQL("DELETE FROM {}").format(lists),
            sql.SQL("UPDATE {} SET status = 'removed'").format(recipients),
            sql.SQL("DELETE FROM {}").format(recipients),
            sql.SQL(
                "INSERT INTO {} (list_id, email, created_at, updated_at)"
                " VALUES (1, 'x@example.org', 'y', 'y')"
            ).format(recipients),
            sql.SQL("CREATE TABLE {}.mine (x int)").format(sql.Identifier(doc.schema)),
        ]
        for statement in writes:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                reader.execute(statement)
        closed = _store_tables(doc) - {"lists", "recipients"}
        assert {"runs", "sends", "blocklist", "unsubscribers", "bounces"} <= closed
        for name in sorted(closed):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                reader.execute(sql.SQL("SELECT * FROM {}").format(_table(doc, name)))


def test_a_table_a_later_migration_adds_stays_closed_to_the_reader(doc: DocSetup):
    with doc.store() as conn:
        conn.execute("CREATE TABLE later_table (x int)")  # as a later migration would
        conn.execute("INSERT INTO later_table VALUES (1)")
    with doc.reader_conn() as reader, pytest.raises(psycopg.errors.InsufficientPrivilege):
        reader.execute(sql.SQL("SELECT * FROM {}").format(_table(doc, "later_table")))


def test_the_optional_default_privileges_open_later_tables_and_only_those(doc: DocSetup):
    doc.run_sql(sql_blocks(OPTIONAL)[0])
    with doc.store() as conn:
        conn.execute("CREATE TABLE later_table (x int)")
        conn.execute("INSERT INTO later_table VALUES (1)")
    with doc.reader_conn() as reader:
        later = sql.SQL("SELECT x FROM {}").format(_table(doc, "later_table"))
        assert reader.execute(later).fetchall() == [(1,)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # existing tables: as before
            reader.execute(sql.SQL("SELECT * FROM {}").format(_table(doc, "runs")))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # reading is all it adds
            reader.execute(sql.SQL("DELETE FROM {}").format(_table(doc, "later_table")))


# -- libpq's own settings -----------------------------------------------------------------------


def test_a_service_file_and_pgpassword_work_as_the_page_says(
    doc: DocSetup, tmp_path: Path, monkeypatch
):
    services = tmp_path / "pg_service.conf"
    services.write_text(
        f"[campaign]\nhost=127.0.0.1\nport={doc.server.port}\ndbname={doc.database}\n"
        f"user={doc.app}\n"
    )
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    with connection.connect("postgresql://?service=campaign", doc.schema) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (doc.app,)
    # PGPASSWORD alone, with no password file to fall back on.
    password = next(
        line.rsplit(":", 1)[1]
        for line in (tmp_path / "pgpass").read_text().splitlines()
        if line.split(":")[3] == doc.app
    )
    with monkeypatch.context() as env:  # undone before the fixture's teardown logs in
        env.setenv("PGPASSFILE", str(tmp_path / "none"))
        env.setenv("PGPASSWORD", password)
        with connection.connect(doc.url(doc.app), doc.schema) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (doc.app,)


# -- backups ------------------------------------------------------------------------------------


def _as_documented(argv: list[str], doc: DocSetup, *, url: str, dump: Path) -> list[str]:
    """The page's command's arguments with this test's server, names and file; every other
    option as the page writes it."""
    out = []
    for word in argv[1:]:
        if word.startswith("--dbname="):
            out.append(f"--dbname={url}")
        elif word.startswith("--file="):
            out.append(f"--file={dump}")
        elif word.endswith(".dump"):
            out.append(str(dump))
        else:
            out.append(EXAMPLE_NAME.sub(doc.database, word))
    return out


def test_a_dump_and_restore_as_documented_bring_the_store_back_with_its_grants(
    doc: DocSetup, tmp_path: Path
):
    with doc.store() as conn:
        _write_a_list(conn)
    dump = tmp_path / "store.dump"
    # pg_dump as campaign-sync's own role, as the page says it can.
    dump_argv = _as_documented(shell_command("pg_dump"), doc, url=doc.url(doc.app), dump=dump)
    done = doc.client("pg_dump", *dump_argv)
    assert done.returncode == 0, done.stderr
    with doc.store() as conn:  # written after the backup: a restore loses it
        conn.execute(
            "INSERT INTO recipients (list_id, email, created_at, updated_at)"
            " VALUES (1, 'late@example.org', %s, %s)",
            (NOW, NOW),
        )
    restore_argv = _as_documented(shell_command("pg_restore"), doc, url=doc.admin_url(), dump=dump)
    done = doc.client("pg_restore", *restore_argv)
    assert done.returncode == 0, done.stderr
    with doc.store() as conn:
        assert conn.execute("SELECT email FROM recipients").fetchall() == [("anna@example.org",)]
        assert schema.migrate(conn, doc.url(doc.app), doc.schema) == schema.SCHEMA_VERSION
        # Still campaign-sync's store: its role owns and writes it.
        conn.execute("INSERT INTO lists (name, created_at) VALUES ('second', %s)", (NOW,))
    with doc.reader_conn() as reader:
        rows = reader.execute(sql.SQL("SELECT email FROM {}").format(_table(doc, "recipients")))
        assert rows.fetchall() == [("anna@example.org",)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.execute(sql.SQL("SELECT * FROM {}").format(_table(doc, "sends")))
