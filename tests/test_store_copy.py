"""`campaign-sync store copy --to URL` against a real PostgreSQL, through the installed CLI.

The source is built the way an installation builds it: the real command imports all four kinds
of file (an IDN address among them), replaces a list so a member is removed, exports with
changes_only (a watermark), and dispatches to a real SMTP server (sends, one of them left
`sending` by a dead run and settled `unknown`). Then it is copied and compared row by row.
The copied store cannot be run yet (configs refuse URL stores until the store seam lands), so
its exports are not compared byte for byte here; its table contents are, value for value.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql
from smtp_server import SmtpTestServer

from campaign_sync.store.postgres import connection, schema

if TYPE_CHECKING:
    from pgfixtures import PgSchema
    from pgserver import PgServer

TABLES = {
    *("lists", "recipients", "blocklist", "unsubscribers", "bounces", "jobs", "runs", "sends"),
    *("erased", "erasure_secret", "imported_files"),
}
IDN = "juergen@bücher.de"
SENDER = "welcome@example.com"

CONFIG = """\
store: store.db
work_dir: var
timezone: UTC
smtp: {{host: {host}, port: {port}, from: {sender}, timeout: 5}}
servers:
  outbox: {{type: local, path: outbox}}
jobs:
  rec: {{type: recipient-import, list: news, mode: replace, max_removals: 100%}}
  rec-other: {{type: recipient-import, list: other}}
  block: {{type: blocklist-import}}
  unsub: {{type: unsubscriber-import}}
  bounce: {{type: bounce-import}}
  changes:
    type: recipient-export
    list: news
    target: {{server: outbox, path: /news.csv}}
    fields: [email, first_name]
    changes_only: true
  welcome: {{type: doi-dispatch, list: news, mailings: mailings}}
"""

NEWS = (
    "email,first_name,last_name,doi_confirmed_at\n"
    "anna@example.com,Anna,Schmidt,2026-11-20T10:15:00+01:00\n"
    "ben@example.com,Ben,Müller,2026-11-22T09:00:00Z\n"
    f"{IDN},Jürgen,Groß,\n"
    "carla@example.org,Carla,Rossi,\n"
)
MAILING = """\
From: Newsletter <welcome@example.com>
To: {{email}}
Subject: Welcome {{first_name}}
Date: Mon, 02 Nov 2026 10:00:00 +0100
Message-ID: <welcome@templates.example.com>
Content-Type: text/plain; charset=utf-8

Hello {{first_name}}!
"""


def cli(
    root: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The installed console script, as an operator runs it."""
    return subprocess.run(
        ["campaign-sync", "--config", str(root / "campaign-sync.yaml"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def import_file(root: Path, job: str, name: str, content: str) -> None:
    path = root / name
    path.write_text(content, encoding="utf-8")
    ok(cli(root, "import", job, "--file", str(path)))


def sqlite_execute(root: Path, *statements: str) -> None:
    with sqlite3.connect(root / "store.db") as conn:
        for statement in statements:
            conn.execute(statement)
    conn.close()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace whose SQLite store has rows in every table, made by the real command."""
    root = tmp_path_factory.mktemp("source")
    (root / "outbox").mkdir()
    (root / "mailings").mkdir()
    (root / "mailings" / "welcome.eml").write_text(MAILING, encoding="utf-8")
    with SmtpTestServer() as smtp:
        config = CONFIG.format(host=smtp.host, port=smtp.port, sender=SENDER)
        (root / "campaign-sync.yaml").write_text(config, encoding="utf-8")
        import_file(root, "rec", "news-1.csv", NEWS)
        # The replace leaves carla out: she stays in the store as `removed`.
        import_file(root, "rec", "news-2.csv", NEWS.replace("carla@example.org,Carla,Rossi,\n", ""))
        import_file(root, "rec-other", "other.csv", "email,city\nzoe@example.com,Köln\n")
        import_file(root, "block", "block.csv", "pattern,reason\n*@spam.example,spam\n")
        unsub = "email,list,date,reason\nben@example.com,news,2026-11-25,asked\n"
        import_file(root, "unsub", "unsub.csv", unsub)
        bounces = "email,type,date\nanna@example.com,soft,2026-11-26T08:00:00Z\n"
        import_file(root, "bounce", "bounces.csv", bounces)
        ok(cli(root, "export", "changes"))
        ok(cli(root, "dispatch", "welcome"))  # the first run only marks the DOI cut-off
        # Earlier cut-off, so the imported confirmations count as new; and a send claimed by
        # the (finished, so dead) first run, which the next run settles as `unknown`.
        sqlite_execute(
            root,
            "UPDATE jobs SET first_seen = '2026-11-01T00:00:00.000000+00:00' "
            "WHERE name = 'welcome'",
            "INSERT INTO sends (job, email, list, mailing, mailing_id, message_id, state, "
            f"run_id, created_at, updated_at) VALUES ('welcome', '{IDN}', 'news', "
            "'welcome.eml', '<welcome@templates.example.com>', '<dead@example.com>', "
            "'sending', (SELECT max(id) FROM runs), '2026-11-30T00:00:00.000000+00:00', "
            "'2026-11-30T00:00:00.000000+00:00')",
        )
        ok(cli(root, "dispatch", "welcome"))
        assert smtp.messages, "the dispatch sent nothing"
    # An erasure: its keyed hash and the store's secret must move with the store.
    ok(cli(root, "forget", "zoe@example.com"))
    return root


@pytest.fixture
def source(built: Path, tmp_path: Path) -> Path:
    """A private copy of the built workspace (some tests change its store)."""
    root = tmp_path / "ws"
    shutil.copytree(built, root)
    return root


def sqlite_columns(root: Path) -> dict[str, list[str]]:
    """Each table's columns in the SQLite store, in their order there."""
    conn = sqlite3.connect(root / "store.db")
    try:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {
            name: [row[1] for row in conn.execute(f"PRAGMA table_info({name})")] for name in names
        }
    finally:
        conn.close()


def sqlite_tables(root: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted, recipients.fields parsed."""
    conn = sqlite3.connect(root / "store.db")
    try:
        found = {}
        for name, columns in sqlite_columns(root).items():
            listed = ", ".join(columns)
            rows = conn.execute(f"SELECT {listed} FROM {name}").fetchall()
            if name == "recipients":
                at = columns.index("fields")
                rows = [(*row[:at], json.loads(row[at]), *row[at + 1 :]) for row in rows]
            found[name] = sorted(rows, key=repr)
        return found
    finally:
        conn.close()


def pg_tables(target: PgSchema, columns: dict[str, list[str]]) -> dict[str, list[tuple[Any, ...]]]:
    """The same from PostgreSQL (jsonb arrives parsed), each table's columns as SQLite has them."""
    found = {}
    with psycopg.connect(target.admin_url) as conn:
        for name, listed in columns.items():
            query = sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(map(sql.Identifier, listed)), sql.Identifier(target.name, name)
            )
            found[name] = sorted(conn.execute(query).fetchall(), key=repr)
    return found


def pg_table_names(conn: psycopg.Connection[Any], target: PgSchema) -> list[str]:
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (target.name,))
    return [row[0] for row in rows]


def pg_counts(target: PgSchema) -> dict[str, int]:
    """Rows per table of the target schema (empty when it holds no table)."""
    with psycopg.connect(target.admin_url) as conn:
        found = {}
        for name in pg_table_names(conn, target):
            query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(target.name, name))
            found[name] = conn.execute(query).fetchall()[0][0]
        return found


def pg_dump(target: PgSchema) -> dict[str, list[str]]:
    """Every row of every table of the target schema, as text, sorted."""
    with psycopg.connect(target.admin_url) as conn:
        found = {}
        for name in pg_table_names(conn, target):
            query = sql.SQL("SELECT * FROM {}").format(sql.Identifier(target.name, name))
            found[name] = sorted(map(repr, conn.execute(query)))
        return found


def copy(root: Path, target: PgSchema, *extra: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return cli(root, "store", "copy", "--to", target.url, "--schema", target.name, *extra, **kw)


def one_line(done: subprocess.CompletedProcess[str], exit_code: int) -> str:
    assert done.returncode == exit_code, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def make_empty_store(target: PgSchema) -> None:
    """An empty store in the target schema, as a first run on PostgreSQL would leave it."""
    with connection.connect(target.url, target.name) as conn:
        schema.migrate(conn, target.url, target.name)


def as_admin(target: PgSchema, statement: str) -> None:
    with psycopg.connect(target.admin_url, autocommit=True) as conn:
        conn.execute(f'SET search_path = "{target.name}"')
        conn.execute(statement)


# --------------------------------------------------------------------------- the copy


def test_copy_holds_every_row_of_every_table(source: Path, pg_schema: PgSchema) -> None:
    before = sqlite_tables(source)
    assert set(before) == TABLES
    assert all(before[name] for name in TABLES), {n: len(r) for n, r in before.items()}
    # What makes this store worth copying is there: a removed member, an IDN address, an
    # unknown send, an export watermark.
    assert ("removed",) in {(row[2],) for row in before["recipients"]}
    assert any(row[1] == IDN for row in before["recipients"])
    assert "unknown" in {row[7] for row in before["sends"]}
    assert any(row[-1] for row in before["runs"])  # runs.watermark

    out = ok(copy(source, pg_schema))

    lines = out.splitlines()
    total = sum(len(rows) for rows in before.values())
    assert lines[-1] == f"copy complete: {len(TABLES)} tables, {total} rows, verified"
    shown = {line.split()[0]: int(line.split()[1]) for line in lines[:-1]}
    assert shown == {name: len(rows) for name, rows in before.items()}
    assert all("sha256" in line for line in lines[:-1])

    assert pg_tables(pg_schema, sqlite_columns(source)) == before
    counts = pg_counts(pg_schema)
    assert set(counts) == TABLES | {"meta", "schema_version"}


def test_the_copy_shows_the_same_history(source: Path, pg_schema: PgSchema) -> None:
    ok(copy(source, pg_schema))
    moved = source / "moved"  # the same installation, its config pointing at the copy
    moved.mkdir()
    config = (source / "campaign-sync.yaml").read_text(encoding="utf-8")
    pointed = f"store: {pg_schema.url}\nstore_schema: {pg_schema.name}\n"
    (moved / "campaign-sync.yaml").write_text(
        config.replace("store: store.db\n", pointed), encoding="utf-8"
    )

    original = ok(cli(source, "--json", "history", "--limit", "1000"))
    copied = ok(cli(moved, "--json", "history", "--limit", "1000"))

    assert len(json.loads(original)) == 10
    assert copied == original
    # A config whose store is already PostgreSQL has nothing to copy from.
    line = one_line(cli(moved, "store", "copy", "--to", pg_schema.url), 2)
    assert "the config's `store` is not an SQLite file" in line


def test_the_copy_keeps_an_erased_address_out(source: Path, pg_schema: PgSchema) -> None:
    ok(copy(source, pg_schema))
    moved = source / "moved"
    moved.mkdir()
    config = (source / "campaign-sync.yaml").read_text(encoding="utf-8")
    pointed = f"store: {pg_schema.url}\nstore_schema: {pg_schema.name}\n"
    (moved / "campaign-sync.yaml").write_text(
        config.replace("store: store.db\n", pointed), encoding="utf-8"
    )
    again = moved / "other.csv"
    again.write_text("email,city\nZoe@Example.com,Köln\nyves@example.com,Bonn\n", encoding="utf-8")

    run = json.loads(ok(cli(moved, "--json", "import", "rec-other", "--file", str(again))))

    assert (run["counts"]["inserted"], run["counts"]["suppressed_erased"]) == (1, 1)
    with psycopg.connect(pg_schema.admin_url) as conn:
        members = conn.execute(
            sql.SQL("SELECT email FROM {} ORDER BY email").format(
                sql.Identifier(pg_schema.name, "recipients")
            )
        ).fetchall()
    assert ("zoe@example.com",) not in members and ("yves@example.com",) in members


def test_ids_continue_and_the_clock_floor_is_recorded(source: Path, pg_schema: PgSchema) -> None:
    ok(copy(source, pg_schema))
    with sqlite3.connect(source / "store.db") as lite:
        top = {
            name: lite.execute(f"SELECT max(id) FROM {name}").fetchone()[0]
            for name in ("lists", "bounces", "runs", "sends")
        }
        newest = lite.execute(
            "SELECT max(t) FROM (SELECT max(updated_at) AS t FROM recipients "
            "UNION ALL SELECT max(finished) FROM runs UNION ALL SELECT max(updated_at) FROM sends"
            " UNION ALL SELECT max(watermark) FROM runs)"
        ).fetchone()[0]
    lite.close()
    with connection.connect(pg_schema.url, pg_schema.name) as conn:
        for name, highest in top.items():
            next_id = conn.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, 'id'))", (name,)
            ).fetchone()
            assert next_id == (highest + 1,), name
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    assert meta["clock_floor"] >= newest
    # Not a partner's date: the floor is the store's own clock, which ran today.
    assert meta["clock_floor"] <= meta["copied_at"]


def test_a_second_copy_is_refused_and_changes_nothing(source: Path, pg_schema: PgSchema) -> None:
    ok(copy(source, pg_schema))
    before = pg_dump(pg_schema)

    line = one_line(copy(source, pg_schema), 2)

    assert line.startswith("campaign-sync: error: target postgresql://campaign@")
    assert f"(schema {pg_schema.name}) is not empty" in line
    assert pg_dump(pg_schema) == before


def test_a_schema_holding_other_tables_is_refused(source: Path, pg_schema: PgSchema) -> None:
    as_admin(pg_schema, "CREATE TABLE customers (id int); INSERT INTO customers VALUES (1)")

    line = one_line(copy(source, pg_schema), 2)

    assert "holds customers, which are not a campaign-sync store" in line
    assert pg_counts(pg_schema) == {"customers": 1}


def test_an_empty_store_is_a_valid_target(source: Path, pg_schema: PgSchema) -> None:
    make_empty_store(pg_schema)
    out = ok(copy(source, pg_schema))
    assert out.splitlines()[-1].startswith(f"copy complete: {len(TABLES)} tables,")


# --------------------------------------------------------------------------- failures


def test_a_row_postgresql_refuses_midway_leaves_the_target_empty(
    source: Path, pg_schema: PgSchema
) -> None:
    # SQLite can be told to skip its CHECKs; PostgreSQL's same CHECK then stops the copy
    # at `sends`, after every other table was already copied in the same transaction.
    with sqlite3.connect(source / "store.db") as lite:
        lite.execute("PRAGMA ignore_check_constraints = ON")
        lite.execute("UPDATE sends SET state = 'lost' WHERE id = (SELECT max(id) FROM sends)")
    lite.close()

    line = one_line(copy(source, pg_schema), 1)

    assert "cannot copy table sends into" in line
    assert "a row does not fit the PostgreSQL table (CheckViolation" in line
    assert "nothing was written to the target" in line
    assert pg_counts(pg_schema) == {}  # not even the tables: their creation rolled back too


def test_a_connection_killed_midway_leaves_the_target_empty(
    source: Path, pg_schema: PgSchema
) -> None:
    make_empty_store(pg_schema)
    # The server ends the copy's own session as the first send row arrives.
    as_admin(
        pg_schema,
        "CREATE FUNCTION die() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NEW; END $$;"
        "CREATE TRIGGER die BEFORE INSERT ON sends FOR EACH ROW EXECUTE FUNCTION die()",
    )

    line = one_line(copy(source, pg_schema), 1)

    assert line.endswith(
        "cannot copy table sends into postgresql://campaign@"
        f"{urlsplit(pg_schema.url).netloc.partition('@')[2]}/campaign: the connection to the "
        "server was lost (it restarted, or the network failed); nothing was written to the "
        "target; run store copy again"
    )
    counts = pg_counts(pg_schema)
    assert set(counts) == TABLES | {"meta", "schema_version"}
    assert {name: n for name, n in counts.items() if name != "schema_version"} == dict.fromkeys(
        TABLES | {"meta"}, 0
    )


def test_ctrl_c_midway_leaves_the_target_empty(source: Path, pg_schema: PgSchema) -> None:
    make_empty_store(pg_schema)
    # The copy stalls at the first send row; Ctrl-C comes while the server holds it there.
    as_admin(
        pg_schema,
        "CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(120); RETURN NEW; END $$;"
        "CREATE TRIGGER stall BEFORE INSERT ON sends FOR EACH ROW EXECUTE FUNCTION stall()",
    )
    process = subprocess.Popen(
        ["campaign-sync", "--config", str(source / "campaign-sync.yaml"), "store", "copy",
         "--to", pg_schema.url, "--schema", pg_schema.name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        with psycopg.connect(pg_schema.admin_url, autocommit=True) as admin:
            until(
                lambda: (
                    admin.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                        "AND usename = 'campaign'"
                    ).fetchall()[0][0]
                    == 1
                ),
                "the copy stalls in the trigger",
            )
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 1
    assert err.splitlines() == ["campaign-sync: error: interrupted before anything was changed"]
    assert all(n == 0 for name, n in pg_counts(pg_schema).items() if name != "schema_version")


def until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.05)


def test_a_copy_that_reads_back_different_is_exit_1_naming_the_table(
    source: Path, pg_schema: PgSchema
) -> None:
    make_empty_store(pg_schema)
    # A trigger on the target alters what arrives: the read-back must notice.
    as_admin(
        pg_schema,
        "CREATE FUNCTION alter_reason() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN NEW.reason := NEW.reason || '!'; RETURN NEW; END $$;"
        "CREATE TRIGGER alter_reason BEFORE INSERT ON blocklist "
        "FOR EACH ROW EXECUTE FUNCTION alter_reason()",
    )

    line = one_line(copy(source, pg_schema), 1)

    assert "copy not verified: table blocklist has the same 1 rows by count" in line
    assert "nothing was committed" in line
    assert all(n == 0 for name, n in pg_counts(pg_schema).items() if name != "schema_version")


# --------------------------------------------------------------------------- output


def test_the_password_is_never_printed(
    source: Path, pg_schema: PgSchema, pg_server: PgServer
) -> None:
    password = pg_server.password("campaign")
    parts = urlsplit(pg_schema.url)
    url = parts._replace(netloc=f"campaign:{password}@{parts.netloc.rpartition('@')[2]}").geturl()
    no_passfile = {"PGPASSFILE": "/nonexistent"}  # the URL's password is the only one

    runs = [
        cli(source, "--json", "store", "copy", "--to", url, "--schema", pg_schema.name,
            env=no_passfile),
        cli(source, "store", "copy", "--to", url, "--schema", pg_schema.name, env=no_passfile),
        cli(source, "store", "copy", "--to", url.replace(password, "wrong"),
            "--schema", pg_schema.name, env=no_passfile),
    ]  # fmt: skip

    assert [done.returncode for done in runs] == [0, 2, 2]
    document = json.loads(runs[0].stdout)
    assert document["verified"] is True
    assert document["target"].startswith("postgresql://campaign@")
    assert {table["name"] for table in document["tables"]} == TABLES
    for done in runs:
        assert password not in done.stdout + done.stderr
    assert "refused the password of user 'campaign'" in runs[2].stderr


def test_progress_is_shown_on_a_terminal_only(source: Path, pg_schema: PgSchema) -> None:
    master, slave = pty.openpty()
    try:
        process = subprocess.Popen(
            ["campaign-sync", "--config", str(source / "campaign-sync.yaml"), "store", "copy",
             "--to", pg_schema.url, "--schema", pg_schema.name],
            stdout=subprocess.PIPE,
            stderr=slave,
            env={**os.environ, "TERM": "xterm", "COLUMNS": "100"},
        )  # fmt: skip
        os.close(slave)
        seen = b""
        while True:
            ready, _, _ = select.select([master], [], [], 120)
            if not ready:
                break
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the terminal's other end closed: the command ended
                break
            if not chunk:
                break
            seen += chunk
        out, _ = process.communicate(timeout=120)
    finally:
        os.close(master)
    assert process.returncode == 0
    assert b"copying" in seen
    assert out.decode().splitlines()[-1].startswith(f"copy complete: {len(TABLES)} tables,")


def test_progress_stays_off_a_pipe(source: Path, pg_schema: PgSchema) -> None:
    done = copy(source, pg_schema)
    ok(done)
    assert done.stderr == ""


@pytest.mark.parametrize("url", ["/tmp/other.db", "postgresql://campaign@127.0.0.1:x/campaign"])
def test_the_target_must_be_a_postgresql_url(source: Path, url: str) -> None:
    done = cli(source, "store", "copy", "--to", url)
    assert one_line(done, 2) == (
        "campaign-sync: error: --to takes a PostgreSQL URL: postgresql://USER@HOST:PORT/DATABASE"
    )


def test_problems_with_the_target_name_the_options(source: Path, pg_schema: PgSchema) -> None:
    refused = cli(source, "store", "copy", "--to", "postgresql://campaign@127.0.0.1:1/campaign")
    assert one_line(refused, 1) == (
        "campaign-sync: error: cannot connect to the store postgresql://campaign@127.0.0.1:1/"
        "campaign: nothing accepts connections at 127.0.0.1:1; check that the server runs and "
        "that --to names its host and port"
    )
    missing = cli(source, "store", "copy", "--to", pg_schema.url, "--schema", "nosuch")
    assert one_line(missing, 2).endswith(
        '(CREATE SCHEMA "nosuch" AUTHORIZATION "campaign") or set --schema'
    )
