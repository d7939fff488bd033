"""PostgreSQL exports and `lists` give the same bytes as SQLite's for the same store content.

Each test fills an SQLite store, copies every row as it is into a fresh PostgreSQL schema
(fields become jsonb), and runs the export engine on both: every job type, both includes,
chosen and discovered fields, date formats, dialects, encodings, gzip, changes since a
watermark, and the status rules (unsubscriptions against newer confirmations, blocklist
patterns of every shape, bounce limits). The watermark test holds a writer open on another
connection while the export takes its snapshot.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Workspace
from pgfixtures import PgSchema

from campaign_sync import store as sqlite_store
from campaign_sync.config.model import BounceLimits, CsvFormat, JobConfig, TargetConfig
from campaign_sync.errors import InputError
from campaign_sync.exports.export import write_export
from campaign_sync.store.base import Store
from campaign_sync.store.postgres import PostgresStore
from campaign_sync.store.postgres import exports as pg_exports
from campaign_sync.store.sqlite import SqliteStore

T0 = "2026-01-01T00:00:00.000000+00:00"
T1 = "2026-01-10T08:00:00.000000+00:00"
T2 = "2026-02-20T09:30:00.000000+00:00"
T3 = "2026-03-05T12:00:00.000000+00:00"
LIMITS = BounceLimits(hard_limit=2, soft_limit=3)
WAIT = 30.0  # seconds a blocked session may take to show up as waiting on a loaded machine

# email, status, fields, doi_confirmed_at, created_at, updated_at
MEMBERS: list[tuple[str, str, dict[str, str], str | None, str, str]] = [
    ("anna@example.com", "active", {"first_name": "Anna", "city": "Köln"}, T1, T1, T1),
    ("bob@example.com", "active", {"first_name": "=cmd|' /C calc'!A0"}, None, T1, T2),
    ("+1-1@example.com", "active", {"first_name": "Plus"}, None, T1, T1),
    ("carl@example.com", "unsubscribed", {"first_name": "Carl"}, None, T1, T2),
    ("dora@example.com", "removed", {"first_name": "Dora"}, None, T1, T3),
    ("emil@example.com", "active", {"first_name": 'Emil "E"', "note": "a,b\nc"}, T3, T1, T1),
    ("fritz@example.com", "active", {"first_name": "Fritz"}, None, T1, T1),
    ("gina@example.com", "active", {"note": "tab\there\\back"}, None, T1, T1),
    ("hans@spam.example", "active", {"first_name": "Hans"}, None, T1, T1),
    ("ida@mail.spam.example", "active", {"first_name": "Ida"}, None, T1, T1),
    ("jo@müller.example", "active", {"first_name": "Jö"}, None, T1, T1),
    ("kim@example.org", "active", {"note": "sep\x1fin\x1ecell\x1dx"}, None, T1, T1),
    ("lea@example.org", "active", {"first_name": "Łea"}, None, T1, T1),
    ("max@example.net", "active", {"first_name": "-2+3"}, None, T1, T2),
    ("nina@example.net", "active", {}, None, T1, T1),
    ("otto@example.net", "active", {"first_name": ""}, None, T1, T1),
    ("promo-1@shop.example", "active", {"first_name": "P"}, None, T1, T1),
    ("quinn@example.de", "active", {"first_name": "Q", "zeta": "z"}, None, T1, T3),
]
OTHER_LIST = [("zoe@example.com", "active", {"first_name": "Zoe"}, None, T2, T2)]
BLOCKLIST = [  # pattern, reason, created_at, modified_at
    ("fritz@example.com", "asked", T1, T1),
    ("*@spam.example", "", T1, T1),
    ("*.spam.example", "", T1, T2),
    ("promo-*@shop.example", '=HYPERLINK("x")', T1, T1),
    ("*@*.de", "germany", T2, T3),
    ("l?a@*", "", T1, T1),
]
UNSUBSCRIBERS = [  # email, list, unsubscribed_at, reason, changed_at
    ("anna@example.com", "newsletter", T2, "", T2),  # newer than her DOI: unsubscribed
    ("emil@example.com", "", T2, "bye", T2),  # DOI T3 is newer: still active
    ("nina@example.net", "other", T1, "", T1),  # another list's
    ("zed@example.com", "", T1, "=1+1", T3),
]
BOUNCES = [  # email, type, bounced_at, changed_at
    ("max@example.net", "hard", T1, T1),
    ("max@example.net", "hard", T2, T3),
    ("otto@example.net", "soft", T1, T1),
    ("otto@example.net", "soft", T1, T1),
    ("gina@example.com", "soft", T1, T1),
]


@pytest.fixture
def stores(tmp_path: Path, pg_schema: PgSchema) -> Iterator[tuple[Store, Store]]:
    """The same content in an SQLite store and in a PostgreSQL store."""
    lite = SqliteStore(str(tmp_path / "store.db"))
    pg = PostgresStore(pg_schema.url, schema=pg_schema.name)
    try:
        _fill(lite.conn)
        _copy(lite.conn, pg.conn)
        yield lite, pg
    finally:
        lite.close()
        pg.close()


def _fill(conn: sqlite3.Connection) -> None:
    for name, members in (("newsletter", MEMBERS), ("other", OTHER_LIST)):
        conn.execute("INSERT INTO lists (name, created_at) VALUES (?, ?)", (name, T0))
        list_id = sqlite_store.list_id(conn, name, create=False)
        conn.executemany(
            "INSERT INTO recipients VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (list_id, email, status, json.dumps(fields, ensure_ascii=False), *dates)
                for email, status, fields, *dates in members
            ],
        )
    conn.executemany("INSERT INTO blocklist VALUES (?, ?, ?, ?)", BLOCKLIST)
    conn.executemany("INSERT INTO unsubscribers VALUES (?, ?, ?, ?, ?)", UNSUBSCRIBERS)
    conn.executemany(
        "INSERT INTO bounces (email, type, bounced_at, changed_at) VALUES (?, ?, ?, ?)", BOUNCES
    )


def _copy(lite: sqlite3.Connection, pg: Any) -> None:
    """Every row of the content tables, as it is (what `store copy` does)."""
    tables = {
        "lists": "id, name, created_at",
        "recipients": "list_id, email, status, fields, doi_confirmed_at, created_at, updated_at",
        "blocklist": "pattern, reason, created_at, modified_at",
        "unsubscribers": "email, list, unsubscribed_at, reason, changed_at",
        "bounces": "id, email, type, bounced_at, source, detail, changed_at",
    }
    for table, columns in tables.items():
        rows = lite.execute(f"SELECT {columns} FROM {table}").fetchall()
        marks = ", ".join("%s::jsonb" if c == "fields" else "%s" for c in columns.split(", "))
        with pg.cursor() as cursor:
            cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)


def _export(opened: Store, job: JobConfig, path: Path, since: str | None = None) -> bytes:
    """The file an export run writes (in the snapshot the runner opens for it)."""
    path.write_bytes(b"")
    opened.begin_snapshot()
    try:
        write_export(opened, job, LIMITS, path, changed_since=since, timezone="Europe/Berlin")
    finally:
        opened.rollback()
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


def _job(job_type: str = "recipient-export", **options: Any) -> JobConfig:
    needs_list = job_type == "recipient-export"
    return JobConfig(
        name="job",
        type=job_type,
        list=options.pop("list", "newsletter" if needs_list else None),
        target=TargetConfig(server="partner", path="/x.csv"),
        **options,
    )


def _same(stores: tuple[Store, Store], tmp_path: Path, job: JobConfig, **kw: Any) -> bytes:
    lite, pg = stores
    suffix = kw.pop("suffix", ".csv")
    expected = _export(lite, job, tmp_path / f"lite{suffix}", **kw)
    got = _export(pg, job, tmp_path / f"pg{suffix}", **kw)
    assert got == expected
    return got


JOBS = {
    "active, discovered fields": {},
    "all, discovered fields": {"include": "all"},
    "chosen fields with dates": {
        "fields": ("email", "first_name", "created_at", "doi_confirmed_at", "status"),
        "include": "all",
    },
    "only the address": {"fields": ("email",)},
    "date format in the zone": {
        "include": "all",
        "fields": ("email", "first_name", "updated_at", "doi_confirmed_at"),
        "format": CsvFormat(date_format="%d.%m.%Y %H:%M"),
    },
    "semicolon and single quote": {
        "include": "all",
        "format": CsvFormat(delimiter=";", quotechar="'"),
    },
    "latin-1 with chosen fields": {
        "fields": ("email", "city"),
        "format": CsvFormat(encoding="latin-1"),
        "list": "other",
    },
    "utf-8 with BOM": {"format": CsvFormat(encoding="utf-8-sig")},
    "changes only, first run": {"changes_only": True, "fields": ("email", "first_name")},
    "a field named like a builtin": {"fields": ("email", "note", "status"), "include": "all"},
}


@pytest.mark.parametrize("options", JOBS.values(), ids=list(JOBS))
def test_recipient_exports_are_the_same_bytes(
    stores: tuple[Store, Store], tmp_path: Path, options: dict[str, Any]
) -> None:
    got = _same(stores, tmp_path, _job(**options))
    assert got.count(b"\r\n") > 1 or "list" in options  # not just a header


def test_the_statuses_are_the_rules_of_statuses_py(
    stores: tuple[Store, Store], tmp_path: Path
) -> None:
    got = _same(stores, tmp_path, _job(include="all", fields=("email", "status")))
    statuses = dict(line.split(",") for line in got.decode().splitlines()[1:])
    assert statuses == {
        "+1-1@example.com": "active",
        "anna@example.com": "unsubscribed",  # unsubscribed after her confirmation
        "bob@example.com": "active",
        "carl@example.com": "unsubscribed",
        "emil@example.com": "active",  # confirmed again after unsubscribing
        "fritz@example.com": "blocklisted",
        "gina@example.com": "active",  # one soft bounce of three
        "hans@spam.example": "blocklisted",
        "ida@mail.spam.example": "blocklisted",
        "jo@müller.example": "active",
        "kim@example.org": "active",
        "lea@example.org": "blocklisted",  # l?a@*
        "max@example.net": "outbounced",
        "nina@example.net": "active",  # unsubscribed from another list only
        "otto@example.net": "active",
        "promo-1@shop.example": "blocklisted",
        "quinn@example.de": "blocklisted",  # *@*.de
    }


@pytest.mark.parametrize("since", [T0, T1, T2, T3])
def test_changes_since_a_watermark_are_the_same_rows(
    stores: tuple[Store, Store], tmp_path: Path, since: str
) -> None:
    job = _job(changes_only=True, fields=("email", "first_name"))
    got = _same(stores, tmp_path, job, since=since)
    if since == T3:
        assert got == b"email,first_name,status\r\n"


@pytest.mark.parametrize("job_type", ["blocklist-export", "unsubscriber-export", "bounce-export"])
@pytest.mark.parametrize("variant", ["plain", "list", "dates", "since"])
def test_small_exports_are_the_same_bytes(
    stores: tuple[Store, Store], tmp_path: Path, job_type: str, variant: str
) -> None:
    options: dict[str, Any] = {}
    if variant == "list":
        options["list"] = "newsletter"
    if variant == "dates":
        options["format"] = CsvFormat(date_format="%Y-%m-%d %H:%M %Z", delimiter="\t")
    since = T1 if variant == "since" else None
    got = _same(
        stores, tmp_path, _job(job_type, changes_only=since is not None, **options), since=since
    )
    assert got.count(b"\r\n") >= 2


def test_gzip_and_an_encoding_that_cannot_hold_a_name_fail_alike(
    stores: tuple[Store, Store], tmp_path: Path
) -> None:
    _same(stores, tmp_path, _job(include="all"), suffix=".csv.gz")
    job = _job(fields=("email", "first_name"), include="all", format=CsvFormat(encoding="latin-1"))
    errors = []
    for opened in stores:
        with pytest.raises(Exception) as caught:  # noqa: PT011 - compared below
            _export(opened, job, tmp_path / f"{opened.kind}.csv")
        errors.append(str(caught.value))
    assert errors[0] == errors[1]
    assert "'Ł' (U+0141) cannot be written in latin-1" in errors[0]


@pytest.mark.parametrize("block_bytes", [1, 300])
def test_a_failure_while_the_copy_still_sends_leaves_the_connection_usable(
    stores: tuple[Store, Store], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block_bytes: int
) -> None:
    """The writer stops in the middle of COPY's rows (small blocks: the failing row comes
    long before the last): the COPY is cancelled and drained, the snapshot rolls back, and
    the same connection runs the next export."""
    _, pg = stores
    monkeypatch.setattr(pg_exports, "BLOCK_BYTES", block_bytes)
    job = _job(fields=("email", "first_name"), include="all", format=CsvFormat(encoding="latin-1"))
    with pytest.raises(InputError, match="column first_name: 'Ł'"):
        _export(pg, job, tmp_path / "failed.csv")
    assert not pg.in_transaction
    assert pg.conn.execute("SELECT count(*) FROM recipients").fetchone()[0] == len(MEMBERS) + 1
    _same(stores, tmp_path, _job(include="all"))


def test_a_list_never_imported_into_is_a_header_alike(
    stores: tuple[Store, Store], tmp_path: Path
) -> None:
    assert _same(stores, tmp_path, _job(list="nobody")) == b"email\r\n"


def test_lists_counts_are_the_same(stores: tuple[Store, Store]) -> None:
    counted = []
    for opened in stores:
        statuses = opened.sql("statuses")
        names = sorted(statuses.list_names(opened.conn))
        counted.append({name: statuses.count_statuses(opened.conn, name, LIMITS) for name in names})
    assert counted[0] == counted[1]
    assert counted[1]["newsletter"] == {
        "active": 8,
        "unsubscribed": 2,
        "blocklisted": 6,
        "outbounced": 1,
    }


# --------------------------------------------------------------------------- the watermark


def _waiting_on_an_advisory_lock(conn: Any, pid: int) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = %s AND locktype = 'advisory' "
        "AND NOT granted)",
        (pid,),
    ).fetchone()
    return bool(row[0])


def test_a_change_committed_after_the_snapshot_started_reaches_the_next_changes_export(
    stores: tuple[Store, Store], tmp_path: Path, pg_schema: PgSchema
) -> None:
    """Host A's import has taken its change time but not committed when host B's
    changes-only export starts: B's snapshot waits for the commit, so A's row is in B's
    file or after B's watermark, never skipped by both this run and the next."""
    _, exporter = stores
    writer = PostgresStore(pg_schema.url, schema=pg_schema.name)
    job = _job(changes_only=True, fields=("email",))
    exported: dict[str, str] = {}
    try:
        writer.begin_write()
        change_time = writer.now()
        writer.conn.execute(
            "INSERT INTO recipients (list_id, email, created_at, updated_at) "
            "SELECT id, 'late@example.com', %s, %s FROM lists WHERE name = 'newsletter'",
            (change_time, change_time),
        )

        def export_run() -> None:
            path = tmp_path / "run1.csv"
            path.write_bytes(b"")
            exported["watermark"] = exporter.begin_snapshot()
            try:
                write_export(exporter, job, LIMITS, path, changed_since=T3)
            finally:
                exporter.rollback()
            exported["file"] = path.read_text(encoding="utf-8")

        run = threading.Thread(target=export_run)
        run.start()
        observer = PostgresStore(pg_schema.url, schema=pg_schema.name)
        try:
            backend = exporter.conn.info.backend_pid
            for _ in range(int(WAIT / 0.05)):
                if _waiting_on_an_advisory_lock(observer.conn, backend) or not run.is_alive():
                    break
                threading.Event().wait(0.05)
            assert run.is_alive(), "the export took its snapshot while a writer was in flight"
        finally:
            observer.close()
        writer.commit()
        run.join(WAIT)
        assert not run.is_alive()
    finally:
        writer.close()
    next_run = _export(exporter, job, tmp_path / "run2.csv", since=exported["watermark"])
    in_this_run = "late@example.com" in exported["file"]
    in_the_next = b"late@example.com" in next_run
    assert in_this_run or in_the_next
    assert exported["watermark"] > change_time  # B's snapshot is after A's commit
    assert in_this_run and not in_the_next


# --------------------------------------------------------------------------- the CLI on both


EXPORT_JOB = """\
  changes-export:
    type: recipient-export
    list: newsletter
    target: {server: inbox, path: /export/changes.csv}
    fields: [email, first_name]
    changes_only: true
bounces: {hard_limit: 2, soft_limit: 3}
"""


def _seeded(ws: Workspace) -> Workspace:
    """A store made by a first (empty) export run, then filled with SQL as on SQLite."""
    ws.write_config(text=ws.config.read_text() + EXPORT_JOB)
    assert ws.cli("export", "newsletter-export").exit_code == 0  # creates the store
    ws.query("INSERT INTO lists (name, created_at) VALUES ('newsletter', ?)", (T0,))
    (list_id,) = ws.query("SELECT id FROM lists WHERE name = 'newsletter'")[0]
    for email, status, fields, doi, created, updated in MEMBERS:
        ws.query(
            "INSERT INTO recipients (list_id, email, status, fields, doi_confirmed_at, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (list_id, email, status, json.dumps(fields, ensure_ascii=False), doi, created, updated),
        )
    for row in BLOCKLIST:
        ws.query("INSERT INTO blocklist VALUES (?, ?, ?, ?)", row)
    for row in UNSUBSCRIBERS:
        ws.query("INSERT INTO unsubscribers VALUES (?, ?, ?, ?, ?)", row)
    for row in BOUNCES:
        ws.query(
            "INSERT INTO bounces (email, type, bounced_at, changed_at) VALUES (?, ?, ?, ?)", row
        )
    return ws


@pytest.mark.stores("sqlite", "postgres")
def test_lists_json_is_the_same_on_both_stores(ws: Workspace) -> None:
    done = _seeded(ws).cli("--json", "lists")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == [
        {"list": "newsletter", "active": 8, "unsubscribed": 2, "blocklisted": 6, "outbounced": 1}
    ]


@pytest.mark.stores("sqlite", "postgres")
def test_changes_only_runs_through_the_cli_on_both_stores(ws: Workspace) -> None:
    _seeded(ws)
    assert ws.cli("export", "changes-export").exit_code == 0
    first = (ws.inbox / "export" / "changes.csv").read_bytes()
    # A first run exports the members `include` names (the active ones), with their status.
    assert first.startswith(b"email,first_name,status\r\n+1-1@example.com,Plus,active\r\n")
    assert first.count(b"\r\n") == 1 + 8
    later = "2090-01-01T00:00:00.000000+00:00"  # after any watermark of this test
    ws.query("UPDATE recipients SET updated_at = ? WHERE email = 'bob@example.com'", (later,))
    assert ws.cli("export", "changes-export").exit_code == 0
    assert (ws.inbox / "export" / "changes.csv").read_bytes() == (
        b"email,first_name,status\r\nbob@example.com,'=cmd|' /C calc'!A0,active\r\n"
    )


# --------------------------------------------------------------------------- after store copy

COPY_CONFIG = """\
store: store.db
work_dir: var
timezone: Europe/Berlin
bounces: {hard_limit: 2, soft_limit: 3}
servers:
  outbox: {type: local, path: outbox}
jobs:
  rec: {type: recipient-import, list: news, mode: replace, max_removals: 100%}
  block: {type: blocklist-import}
  unsub: {type: unsubscriber-import}
  bounce: {type: bounce-import}
  everyone:
    type: recipient-export
    list: news
    target: {server: outbox, path: /everyone.csv.gz}
    include: all
  active:
    type: recipient-export
    list: news
    target: {server: outbox, path: /active.csv}
    fields: [email, first_name, doi_confirmed_at]
    format: {delimiter: ";", encoding: utf-8-sig, date_format: "%d.%m.%Y %H:%M"}
  changes:
    type: recipient-export
    list: news
    target: {server: outbox, path: /changes.csv}
    fields: [email, first_name]
    changes_only: true
  blocked: {type: blocklist-export, target: {server: outbox, path: /blocked.csv}}
  unsubscribed:
    type: unsubscriber-export
    list: news
    target: {server: outbox, path: /unsub.csv}
  outbounced: {type: bounce-export, target: {server: outbox, path: /bounced.csv}}
"""
COPY_FILES = {
    "rec": (
        "email,first_name,last_name,doi_confirmed_at\n"
        "anna@example.com,Anna,Schmidt,2026-11-20T10:15:00+01:00\n"
        "ben@example.com,=1+2,Müller,2026-11-22T09:00:00Z\n"
        'juergen@bücher.de,Jürgen,"Groß, Dr.",\n'
        "carla@example.org,Carla,Rossi,\n"
        "spam1@spam.example,Spam,,\n"
    ),
    "block": "pattern,reason\n*@spam.example,spam\nc?rla@*,typo\n",
    "unsub": "email,list,date,reason\nben@example.com,news,2026-11-25,asked\n",
    "bounce": (
        "email,type,date\nanna@example.com,hard,2026-11-26T08:00:00Z\n"
        "anna@example.com,hard,2026-11-27T08:00:00Z\n"
    ),
}


def test_every_export_and_lists_from_a_copied_store_are_the_same_bytes(
    tmp_path: Path, pg_schema: PgSchema
) -> None:
    """An SQLite store built by the real commands, copied by `store copy`: every export
    kind and `lists --json` give the same bytes from the copy as from the original."""
    ws = Workspace(tmp_path)
    (tmp_path / "outbox").mkdir()
    ws.write_config(text=COPY_CONFIG)
    for job, content in COPY_FILES.items():
        source = tmp_path / f"{job}.csv"
        source.write_text(content, encoding="utf-8")
        done = ws.cli("import", job, "--file", str(source))
        assert done.exit_code == 0, done.output
    assert ws.cli("export", "changes").exit_code == 0  # a watermark to copy along
    copied = ws.cli("store", "copy", "--to", pg_schema.url, "--schema", pg_schema.name)
    assert copied.exit_code == 0, copied.output
    moved = Workspace(tmp_path, "postgres", pg_schema)
    files: dict[str, list[bytes]] = {}
    for where in (ws, moved):
        where.write_config(text=COPY_CONFIG)
        for job in ("everyone", "active", "changes", "blocked", "unsubscribed", "outbounced"):
            out = tmp_path / f"{where.kind}-{job}.csv"
            done = where.cli("export", job, "--output", str(out))
            assert done.exit_code == 0, done.output
            files.setdefault(job, []).append(out.read_bytes())
        files.setdefault("lists", []).append(where.cli("--json", "lists").stdout.encode())
    for job, (original, copy) in files.items():
        assert copy == original, job
    assert b"spam1@spam.example,Spam,,blocklisted" in files["everyone"][0]
    assert files["changes"][0] == b"email,first_name,status\r\n"  # nothing since the watermark
    assert json.loads(files["lists"][0]) == [
        {"list": "news", "active": 1, "unsubscribed": 1, "blocklisted": 2, "outbounced": 1}
    ]
