"""The store: opening a new one from many processes at once, as simultaneous cron jobs do."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from campaign_sync import store

OPEN = """
import sys, time
from campaign_sync import store
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # start together
conn = store.connect(sys.argv[1])
print(conn.execute("PRAGMA journal_mode").fetchone()[0], store.SCHEMA_VERSION)
"""


def old_store(path: Path, version: int) -> sqlite3.Connection:
    """A store as campaign-sync at schema `version` left it, for a migration to take over."""
    conn = sqlite3.connect(path)
    for script in store.MIGRATIONS[:version]:
        for statement in store._statements(script):
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    return conn


def test_many_processes_creating_one_store_at_once_all_succeed(tmp_path: Path) -> None:
    import time

    db = tmp_path / "store.db"
    for attempt in range(3):
        db_path = str(db.with_name(f"store{attempt}.db"))
        start = str(time.time() + 1.0)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", OPEN, db_path, start],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(8)
        ]
        results = [proc.communicate(timeout=60) for proc in procs]
        assert [proc.returncode for proc in procs] == [0] * 8, [err for _, err in results]
        assert {out.split()[0] for out, _ in results} == {"wal"}


def test_version_2_store_migrates_without_the_update_index(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    old = old_store(path, 2)
    old.execute("INSERT INTO lists (id, name, created_at) VALUES (1, 'news', 't')")
    old.execute(
        "INSERT INTO recipients (list_id, email, fields, created_at, updated_at) "
        "VALUES (1, 'a@example.com', '{\"x\":\"1\"}', 't', 't')"
    )
    old.commit()
    old.close()

    conn = store.connect(str(path))
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "recipients_by_update" not in indexes
        assert conn.execute("SELECT email, fields FROM recipients").fetchall() == [
            ("a@example.com", '{"x":"1"}')
        ]
        # What the index served: changes since a moment, read in key order as exports do.
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT email FROM recipients WHERE list_id = 1 "
            "AND updated_at > 't' AND email > '' ORDER BY email LIMIT 10"
        ).fetchall()
        assert "USING PRIMARY KEY" in plan[0][-1]
    finally:
        conn.close()


def test_version_3_store_migrates_with_change_times_from_the_rows_own_dates(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v3.db"
    old = old_store(path, 3)
    old.execute(
        "INSERT INTO unsubscribers (email, list, unsubscribed_at, reason) "
        "VALUES ('a@example.com', 'news', '2024-01-01T00:00:00.000000+00:00', 'asked')"
    )
    old.execute(
        "INSERT INTO bounces (id, email, type, bounced_at, source, detail) "
        "VALUES (7, 'b@example.com', 'hard', '2024-02-01T00:00:00.000000+00:00', 'j', '550')"
    )
    old.commit()
    old.close()

    conn = store.connect(str(path))
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION >= 4
        assert conn.execute("SELECT * FROM unsubscribers").fetchall() == [
            ("a@example.com", "news", "2024-01-01T00:00:00.000000+00:00", "asked")
            + ("2024-01-01T00:00:00.000000+00:00",)
        ]
        assert conn.execute("SELECT * FROM bounces").fetchall() == [
            (7, "b@example.com", "hard", "2024-02-01T00:00:00.000000+00:00", "j", "550")
            + ("2024-02-01T00:00:00.000000+00:00",)
        ]
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "bounces_by_email" in indexes
        # A writer that does not name the column still gets a change time, in store form.
        before = store.now()
        conn.execute("INSERT INTO bounces (email, type, bounced_at) VALUES ('c@x.de', 'soft', 't')")
        (stamp,) = conn.execute("SELECT changed_at FROM bounces WHERE email = 'c@x.de'").fetchone()
        assert len(stamp) == len(before) and stamp >= before[:23]
    finally:
        conn.close()


def test_version_4_store_gives_a_label_addresses_the_unicode_form_losing_no_suppression(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v4.db"
    old = old_store(path, 4)
    old.execute("INSERT INTO lists (id, name, created_at) VALUES (1, 'news', 't0')")
    members = [
        # Both spellings: the older row is unsubscribed, the newer one has new fields.
        ("anna@xn--bcher-kva.de", "unsubscribed", '{"a":"1","b":"old"}', None, "t1", "t2"),
        ("anna@bücher.de", "active", '{"b":"new"}', "2024-05-01", "t3", "t4"),
        # Only the A-label spelling.
        ("bob@xn--bcher-kva.de", "active", '{"c":"3"}', None, "t1", "t1"),
        # A replace import that switched spelling: removed and inserted at the same moment.
        ("cleo@bücher.de", "removed", '{"v":"1"}', None, "t1", "t5"),
        ("cleo@xn--bcher-kva.de", "active", '{"v":"2"}', None, "t5", "t5"),
        # Three spellings of one address: the newest row's fields win.
        ("dan@xn--bcher-kva.xn--p1ai", "active", '{"v":"old"}', None, "t1", "t1"),
        ("dan@bücher.xn--p1ai", "active", '{"v":"newest"}', None, "t1", "t3"),
        ("dan@xn--bcher-kva.рф", "active", '{"v":"middle"}', None, "t1", "t2"),
        ("carl@example.com", "active", "{}", None, "t1", "t1"),
    ]
    old.executemany(
        "INSERT INTO recipients (list_id, email, status, fields, doi_confirmed_at, created_at, "
        "updated_at) VALUES (1, ?, ?, ?, ?, ?, ?)",
        members,
    )
    old.executemany(
        "INSERT INTO unsubscribers (email, list, unsubscribed_at, reason, changed_at) "
        "VALUES (?, ?, ?, ?, 'c')",
        [
            ("dora@xn--bcher-kva.de", "", "2024-03-01", "later"),
            ("dora@bücher.de", "", "2024-01-01", "earlier"),
            ("emil@xn--bcher-kva.de", "news", "2024-02-01", ""),
        ],
    )
    old.executemany(
        "INSERT INTO bounces (email, type, bounced_at, changed_at) VALUES (?, ?, ?, 'c')",
        [
            ("fritz@xn--bcher-kva.de", "hard", "2024-01-01"),
            ("fritz@bücher.de", "hard", "2024-01-01"),  # the same bounce, twice recorded
            ("fritz@xn--bcher-kva.de", "hard", "2024-01-02"),
        ],
    )
    old.executemany(
        "INSERT INTO sends (job, email, list, mailing, mailing_id, message_id, state, "
        "created_at, updated_at) VALUES ('welcome', ?, 'news', 'm.eml', 'm', ?, ?, 't', 't')",
        [("gina@xn--bcher-kva.de", "<1@x>", "sent"), ("gina@bücher.de", "<2@x>", "deferred")],
    )
    old.executemany(
        "INSERT INTO blocklist (pattern, reason, created_at, modified_at) VALUES (?, ?, ?, ?)",
        [("*@xn--bcher-kva.de", "old", "t1", "t1"), ("*@bücher.de", "new", "t2", "t3")],
    )
    old.commit()
    old.close()

    conn = store.connect(str(path))
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
        rows = conn.execute(
            "SELECT email, status, fields, doi_confirmed_at, created_at FROM recipients "
            "ORDER BY email"
        ).fetchall()
        assert [(e, s, json.loads(f), d, c) for e, s, f, d, c in rows] == [
            ("anna@bücher.de", "unsubscribed", {"a": "1", "b": "new"}, "2024-05-01", "t1"),
            ("bob@bücher.de", "active", {"c": "3"}, None, "t1"),
            ("carl@example.com", "active", {}, None, "t1"),
            ("cleo@bücher.de", "active", {"v": "2"}, None, "t1"),
            ("dan@bücher.рф", "active", {"v": "newest"}, None, "t1"),
        ]
        (untouched,) = conn.execute(
            "SELECT updated_at FROM recipients WHERE email = 'carl@example.com'"
        ).fetchone()
        assert untouched == "t1"
        assert conn.execute(
            "SELECT email, list, unsubscribed_at, reason FROM unsubscribers ORDER BY email"
        ).fetchall() == [
            ("dora@bücher.de", "", "2024-03-01", "later"),
            ("emil@bücher.de", "news", "2024-02-01", ""),
        ]
        assert conn.execute(
            "SELECT email, bounced_at FROM bounces ORDER BY bounced_at"
        ).fetchall() == [
            ("fritz@bücher.de", "2024-01-01"),
            ("fritz@bücher.de", "2024-01-02"),
        ]
        assert conn.execute("SELECT email, state FROM sends").fetchall() == [
            ("gina@bücher.de", "sent")
        ]
        assert conn.execute("SELECT pattern, reason, created_at FROM blocklist").fetchall() == [
            ("*@bücher.de", "new", "t1")
        ]
        changed = conn.execute("SELECT changed_at FROM unsubscribers").fetchall()
        assert all(stamp != "c" for (stamp,) in changed)  # changes-only exports see them
    finally:
        conn.close()


def test_a_new_store_and_work_dir_are_private_whatever_the_umask(tmp_path: Path) -> None:
    import os
    import stat

    from campaign_sync.store.sqlite import runs

    old = os.umask(0o022)
    try:
        conn = store.connect(str(tmp_path / "data" / "store.db"))
        with store.transaction(conn):
            conn.execute("INSERT INTO jobs (name, first_seen) VALUES ('j', 't')")
        with runs.job_lock(tmp_path / "var", "j"):
            pass
    finally:
        os.umask(old)
    modes = {
        name: stat.S_IMODE((tmp_path / name).stat().st_mode)
        for name in ("data/store.db", "data/store.db-wal", "var", "var/locks")
    }
    assert modes == {
        "data/store.db": 0o600,
        "data/store.db-wal": 0o600,
        "var": 0o700,
        "var/locks": 0o700,
    }
    conn.close()
    assert not Path(":memory:").exists()


def _write_read_only(path: Path) -> None:
    store.connect(str(path)).close()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.execute("CREATE TABLE t (x)")


def _write_while_locked(path: Path) -> None:
    holder = store.connect(str(path))
    holder.execute("BEGIN IMMEDIATE")
    sqlite3.connect(path, timeout=0).execute("BEGIN IMMEDIATE")


def _open_garbage(path: Path) -> None:
    path.write_bytes(b"not a database at all " * 100)
    sqlite3.connect(path).execute("PRAGMA user_version")


@pytest.mark.parametrize(
    ("provoke", "reason", "exit_code"),
    [
        (
            _open_garbage,
            "the file is not a campaign-sync store (not an SQLite database); set `store` to "
            "the store's file",
            2,
        ),
        (
            _write_read_only,
            "it is read-only for this user; make the file, its folder and any -wal/-shm files "
            "beside it writable for the user the jobs run as",
            2,
        ),
        (
            _write_while_locked,
            "another process held its write lock past the busy timeout (60 s); find it with "
            "`fuser {path}` (often an open sqlite3 shell) and run the job again",
            1,
        ),
    ],
    ids=["garbage", "read-only", "locked"],
)
def test_sqlite_errors_are_one_line_in_our_words_with_the_documented_exit_code(
    tmp_path: Path,
    provoke,
    reason: str,
    exit_code: int,  # noqa: ANN001 - a function
) -> None:
    path = tmp_path / "store.db"
    with pytest.raises(sqlite3.Error) as raised:
        provoke(path)
    problem = store.failure("cannot write to the store", path, raised.value)
    assert str(problem) == f"cannot write to the store {path}: {reason.format(path=path)}"
    assert problem.exit_code == exit_code


def test_without_an_error_code_sqlite_errors_are_known_by_their_text(tmp_path: Path) -> None:
    # Python 3.10's sqlite3 errors carry no code: the disk-full text still reads as such.
    problem = store.failure("x", tmp_path, sqlite3.OperationalError("database or disk is full"))
    assert (str(problem), problem.exit_code) == (
        f"x {tmp_path}: the disk is full; free space there and run the job again",
        1,
    )
    unknown = store.failure("x", tmp_path, sqlite3.IntegrityError("UNIQUE constraint failed: t.x"))
    assert str(unknown) == f"x {tmp_path}: unexpected SQLite error IntegrityError"
