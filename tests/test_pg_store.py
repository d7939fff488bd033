"""The PostgreSQL store's groundwork against a real server: connections and their errors, the
schema and its migrations from several processes at once, and job locks across processes."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from pgchild import CHILD
from sshd import _free_port

from campaign_sync import store as sqlite_store
from campaign_sync.errors import JobLocked, StoreError, StoreUnusable
from campaign_sync.store.postgres import connection, locks, schema

if TYPE_CHECKING:
    from pgfixtures import PgSchema
    from pgserver import PgServer



WAIT = 30.0  # seconds a condition may take on a loaded machine before the test fails


@pytest.fixture
def conn(pg_schema: PgSchema) -> Iterator[psycopg.Connection[Any]]:
    with connection.connect(pg_schema.url, pg_schema.name) as opened:
        yield opened


@pytest.fixture
def store(conn: psycopg.Connection[Any], pg_schema: PgSchema) -> psycopg.Connection[Any]:
    assert schema.migrate(conn, pg_schema.url, pg_schema.name) == schema.SCHEMA_VERSION
    return conn


def _until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.05)


def _child(*args: str, stdin: int | None = subprocess.DEVNULL) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, CHILD, *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent,
    )


# -- connections ----------------------------------------------------------------------------


def test_connection_is_set_up_for_the_store(conn: psycopg.Connection[Any], pg_schema: PgSchema):
    row = conn.execute(
        "SELECT current_setting('search_path'), current_setting('application_name'),"
        " current_setting('tcp_keepalives_idle'), current_user"
    ).fetchone()
    assert row == (f'"{pg_schema.name}"', "campaign-sync", "30", "campaign")
    assert conn.autocommit
    assert conn.info.get_parameters()["keepalives"] == "1"
    assert conn.info.get_parameters()["keepalives_idle"] == "30"


def test_wrong_password_is_one_line_without_it(pg_schema: PgSchema):
    secret = "Sup3r-secret-pw"
    url = pg_schema.url.replace("campaign@", f"campaign:{secret}@")
    with pytest.raises(StoreUnusable) as caught:
        connection.connect(url, pg_schema.name)
    host = url.rpartition("@")[2].split("/")[0]
    assert str(caught.value) == (
        f"cannot connect to the store postgresql://campaign@{host}/campaign: the server "
        "refused the password of user 'campaign'; check the password (PGPASSWORD, "
        "PGPASSFILE or ~/.pgpass of the user the jobs run as)"
    )
    assert caught.value.exit_code == 2


def test_wrong_pgpassword_is_not_shown(pg_schema: PgSchema, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PGPASSWORD", "Env-secret-pw")
    with pytest.raises(StoreUnusable) as caught:
        connection.connect(pg_schema.url, pg_schema.name)
    assert "the server refused the password of user 'campaign'" in str(caught.value)
    assert "Env-secret-pw" not in str(caught.value)


def test_unreachable_server_is_one_line_without_the_password():
    port = _free_port()  # nothing listens there
    url = f"postgresql://campaign:Sup3r-secret-pw@127.0.0.1:{port}/campaign?sslmode=disable"
    with pytest.raises(StoreError) as caught:
        connection.connect(url)
    assert str(caught.value) == (
        f"cannot connect to the store postgresql://campaign@127.0.0.1:{port}/campaign: "
        f"nothing accepts connections at 127.0.0.1:{port}; check that the server runs and "
        "that `store` names its host and port"
    )
    assert caught.value.exit_code == 1


def test_unknown_host_is_one_line_without_the_password():
    url = "postgresql://campaign:Sup3r-secret-pw@nohost.invalid/campaign"
    with pytest.raises(StoreError) as caught:
        connection.connect(url)
    assert str(caught.value) == (
        "cannot connect to the store postgresql://campaign@nohost.invalid/campaign: the host "
        "name nohost.invalid cannot be resolved; check the host in `store` and this machine's DNS"
    )
    assert caught.value.exit_code == 1


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "postgresql://campaign:pw@127.0.0.1:5432/campaign?no_such_setting=pw",
            "store postgresql://campaign@127.0.0.1:5432/campaign is not a valid PostgreSQL "
            "URL; write it as postgresql://USER@HOST:PORT/DATABASE (settings such as "
            "?sslmode=verify-full after it)",
        ),
        (
            "postgresql://campaign:pw@127.0.0.1:x5432/campaign",
            "cannot connect to the store the PostgreSQL store in `store`: the URL has a "
            "setting libpq cannot use; write it as "
            "postgresql://USER@HOST:PORT/DATABASE?SETTING=VALUE",
        ),
    ],
)
def test_bad_url_is_one_line(url: str, message: str):
    with pytest.raises(StoreUnusable) as caught:
        connection.connect(url)
    assert str(caught.value) == message


def test_unknown_database_names_it(pg_schema: PgSchema):
    url = pg_schema.url.rpartition("/")[0] + "/nosuchdb"
    with pytest.raises(StoreUnusable) as caught:
        connection.connect(url)
    assert str(caught.value).endswith(
        ": the database 'nosuchdb' does not exist on the server; "
        "create it or correct the database in `store`"
    )


def test_display_never_shows_a_password():
    assert connection.display("postgres://u:pw@db.example.net/c?password=pw2&sslmode=require") == (
        "postgres://u@db.example.net/c"
    )
    assert connection.display("host=db password=pw") == "the PostgreSQL store in `store`"


def test_without_psycopg_one_line_names_the_extra():
    # psycopg hidden from the import system, as on an installation without the extra.
    script = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from campaign_sync.store.postgres import connection\n"
        "try:\n"
        "    connection.connect('postgresql://campaign@127.0.0.1/campaign')\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc.exit_code, exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
        check=True,
    )
    assert done.stdout == (
        "StoreUnusable 2 a PostgreSQL store needs the psycopg driver, which is not installed; "
        "install it with: pip install 'campaign-sync[postgres]'\n"
    )


def test_bad_schema_name_is_refused_before_connecting():
    with pytest.raises(StoreUnusable) as caught:
        connection.connect("postgresql://campaign@127.0.0.1:1/campaign", 'x"; DROP')
    assert str(caught.value) == (
        "store_schema 'x\"; DROP' is not a plain schema name; use letters, digits and _ "
        "(not starting with a digit, at most 63 characters)"
    )


def test_server_restart_mid_session_is_a_lost_connection(
    store: psycopg.Connection[Any], pg_schema: PgSchema, pg_server: PgServer
):
    if pg_server.dir is None:
        pytest.skip("the server was not started by the test suite (no CAMPAIGN_SYNC_TEST_PG_DIR)")
    pg_server.restart_immediate()
    with pytest.raises(psycopg.Error) as caught:
        store.execute("SELECT 1 FROM runs")
    error = connection.failure("cannot record the run in the store", pg_schema.url, caught.value)
    assert type(error) is StoreError
    assert str(error).endswith(
        "/campaign: the connection to the server was lost (it restarted, or the network "
        "failed); run the job again; nothing of this run was committed past its last "
        "completed step"
    )
    # The store survived the crash: a new connection finds it whole.
    with connection.connect(pg_schema.url, pg_schema.name) as again:
        assert schema.version(again) == schema.SCHEMA_VERSION


# -- schema and migrations ------------------------------------------------------------------


def _pg_columns(conn: psycopg.Connection[Any], table: str) -> list[tuple[str, bool]]:
    rows = conn.execute(
        "SELECT column_name, is_nullable = 'NO' FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    return [(name, bool(required)) for name, required in rows]


def test_schema_has_sqlite_v5_tables_and_columns(store: psycopg.Connection[Any], tmp_path: Path):
    lite = sqlite_store.connect(str(tmp_path / "store.db"))
    assert schema.SCHEMA_VERSION == sqlite_store.SCHEMA_VERSION
    tables = [r[0] for r in lite.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    pg_tables = store.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
    ).fetchall()
    assert sorted(r[0] for r in pg_tables) == sorted([*tables, "meta", "schema_version"])
    for table in tables:
        # SQLite reports a primary key column as nullable; PostgreSQL as NOT NULL.
        keys = {r[1] for r in lite.execute(f"PRAGMA table_info({table})") if r[5]}
        expected = [
            (r[1], bool(r[3]) or r[1] in keys) for r in lite.execute(f"PRAGMA table_info({table})")
        ]
        assert _pg_columns(store, table) == expected, table
    lite.close()


def test_every_text_column_sorts_bytewise_and_fields_are_jsonb(store: psycopg.Connection[Any]):
    not_c = store.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND data_type = 'text' "
        "AND coalesce(collation_name, '') <> 'C'"
    ).fetchall()
    assert not_c == []
    kind = store.execute(
        "SELECT data_type FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = 'recipients' AND column_name = 'fields'"
    ).fetchone()
    assert kind == ("jsonb",)
    store.execute("INSERT INTO lists (name, created_at) VALUES ('n', 't')")
    for email in ("a@x.de", "B@x.de", "ä@x.de", "Z@x.de"):
        store.execute(
            "INSERT INTO recipients (list_id, email, created_at, updated_at) "
            "SELECT id, %s, 't', 't' FROM lists",
            (email,),
        )
    order = [r[0] for r in store.execute("SELECT email FROM recipients ORDER BY email")]
    assert order == sorted(["a@x.de", "B@x.de", "ä@x.de", "Z@x.de"], key=str.encode)


def test_default_change_time_has_the_stores_text_form(store: psycopg.Connection[Any]):
    store.execute(
        "INSERT INTO unsubscribers (email, unsubscribed_at) VALUES ('a@x.de', '2020-01-01')"
    )
    (changed,) = store.execute("SELECT changed_at FROM unsubscribers").fetchone() or ("",)
    form = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00"
    assert re.fullmatch(form, sqlite_store.now())  # the form the store writes itself
    assert re.fullmatch(form, changed)


def test_migrate_twice_is_a_no_op(store: psycopg.Connection[Any], pg_schema: PgSchema):
    assert schema.migrate(store, pg_schema.url, pg_schema.name) == schema.SCHEMA_VERSION
    assert store.execute("SELECT version FROM schema_version ORDER BY version").fetchall() == [
        (version,) for version in sorted(schema.MIGRATIONS)
    ]


def test_missing_schema_is_one_line(pg_schema: PgSchema):
    with connection.connect(pg_schema.url, "nosuchschema") as conn:
        assert not schema.exists(conn)
        with pytest.raises(StoreUnusable) as caught:
            schema.migrate(conn, pg_schema.url, "nosuchschema")
    assert str(caught.value).endswith(
        "/campaign (schema nosuchschema): the schema does not exist; create it for the store's "
        'role (CREATE SCHEMA "nosuchschema" AUTHORIZATION "campaign") or set `store_schema`'
    )


def test_newer_store_is_refused_with_sqlites_wording(
    store: psycopg.Connection[Any], pg_schema: PgSchema, tmp_path: Path
):
    newer = schema.SCHEMA_VERSION + 1
    store.execute("INSERT INTO schema_version VALUES (%s, 'later')", (newer,))
    with pytest.raises(StoreUnusable) as caught:
        schema.migrate(store, pg_schema.url, pg_schema.name)
    where = f"{connection.display(pg_schema.url)} (schema {pg_schema.name})"
    assert str(caught.value) == (
        f"store {where} has schema version {newer}, newer than this campaign-sync understands "
        f"({schema.SCHEMA_VERSION}); "
        "upgrade campaign-sync"
    )
    # SQLite's refusal, word for word apart from the store's name.
    lite_path = tmp_path / "store.db"
    sqlite_store.connect(str(lite_path)).close()
    with sqlite3.connect(lite_path) as lite:
        lite.execute(f"PRAGMA user_version = {newer}")
    with pytest.raises(StoreUnusable) as lite_caught:
        sqlite_store.connect(str(lite_path))
    assert str(lite_caught.value) == str(caught.value).replace(where, str(lite_path))


def _waiting_for_advisory_lock(admin_url: str, count: int) -> Any:
    def check() -> bool:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            row = admin.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()
        return bool(row and row[0] == count)

    return check


def test_two_processes_migrating_at_once_make_one_store(pg_schema: PgSchema):
    # Hold the migrate lock ourselves until both hosts queue on it, so that both have read
    # version 0 and then race for the same step: the re-check under the lock must save them.
    key = f"{pg_schema.name}/migrate"
    with psycopg.connect(pg_schema.admin_url) as gate:
        gate.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))
        hosts = [_child("migrate", pg_schema.url, pg_schema.name) for _ in range(2)]
        _until(_waiting_for_advisory_lock(pg_schema.admin_url, 2), "both hosts wait")
        gate.commit()
    results = [host.communicate(timeout=WAIT) for host in hosts]
    assert [host.returncode for host in hosts] == [0, 0], results
    assert [out for out, _ in results] == [f"{schema.SCHEMA_VERSION}\n"] * 2
    with connection.connect(pg_schema.url, pg_schema.name) as conn:
        versions = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert versions == [(version,) for version in sorted(schema.MIGRATIONS)]
        (tables,) = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (pg_schema.name,)
        ).fetchone() or (0,)
    assert tables == 13  # v5's ten (schema_version and meta among them), v6's two, v8's one


# -- job locks ------------------------------------------------------------------------------


def _hold(pg_schema: PgSchema, job: str) -> subprocess.Popen[str]:
    holder = _child("hold", pg_schema.url, pg_schema.name, job, stdin=subprocess.PIPE)
    assert holder.stdout is not None
    assert holder.stdout.readline() == "held\n", holder.stderr and holder.stderr.read()
    return holder


def _try(pg_schema: PgSchema, job: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, CHILD, "try", pg_schema.url, pg_schema.name, job],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
        timeout=WAIT,
    )


def test_job_lock_is_exclusive_across_processes(
    store: psycopg.Connection[Any], pg_schema: PgSchema
):
    holder = _hold(pg_schema, "newsletter-import")
    try:
        busy = _try(pg_schema, "newsletter-import")
        assert (busy.returncode, busy.stderr) == (
            75,
            "another run of 'newsletter-import' is in progress; this one changed nothing "
            "(see `campaign-sync list-jobs --running`)\n",
        )
        assert _try(pg_schema, "newsletter-export").returncode == 0  # other jobs run
        with pytest.raises(JobLocked), locks.job_lock(store, pg_schema.name, "newsletter-import"):
            pass
    finally:
        holder.communicate("")  # closing stdin ends the holder, which unlocks
    assert holder.returncode == 0
    assert _try(pg_schema, "newsletter-import").returncode == 0


def test_job_locks_are_per_schema(pg_schema: PgSchema):
    holder = _hold(pg_schema, "newsletter-import")
    try:
        with (
            connection.connect(pg_schema.url, "public") as other,
            locks.job_lock(other, "public", "newsletter-import"),
        ):
            pass
    finally:
        holder.communicate("")


def _run(conn: psycopg.Connection[Any], job: str) -> int:
    row = conn.execute(
        "INSERT INTO runs (job, type, status, started) VALUES (%s, 'recipient-import', "
        "'running', 't') RETURNING id",
        (job,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_killed_holders_lock_frees_and_its_run_is_dead(
    store: psycopg.Connection[Any], pg_schema: PgSchema
):
    killed = _hold(pg_schema, "killed-job")
    alive = _hold(pg_schema, "alive-job")
    try:
        killed_run = _run(store, "killed-job")
        alive_run = _run(store, "alive-job")
        assert locks.dead_running_runs(store, pg_schema.name) == []
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=WAIT)
        _until(lambda: _try(pg_schema, "killed-job").returncode == 0, "the lock is free")
        assert locks.dead_running_runs(store, pg_schema.name) == [(killed_run, "killed-job")]
        assert _try(pg_schema, "alive-job").returncode == 75  # the living holder keeps it
        # A new holder of the killed job: its own (newer) run is alive, the old one stays dead.
        again = _hold(pg_schema, "killed-job")
        new_run = _run(store, "killed-job")
        dead = locks.dead_running_runs(store, pg_schema.name)
        assert dead == [(killed_run, "killed-job")]
        assert (new_run, "killed-job") not in dead and alive_run not in [d[0] for d in dead]
        again.communicate("")
    finally:
        alive.communicate("")
