"""Exports of every kind, through the engine (run_job) onto a local 'server' folder, on both
stores (a test that uses `env` runs once on SQLite and once on PostgreSQL).

Stores are seeded with SQL (fixed timestamps, so the expected files are exact) or through the
recipient import engine (changes-only across runs).
"""

from __future__ import annotations

import csv
import datetime
import gzip
import io
import json
import os
import sqlite3
import stat
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Workspace
from hypothesis import given, settings
from hypothesis import strategies as st
from props import examples

from campaign_sync import config as config_module
from campaign_sync import store
from campaign_sync.config.model import BounceLimits, CsvFormat, JobConfig, TargetConfig
from campaign_sync.core import addresses, workdir
from campaign_sync.csvio.write import CELL_SEP, JSON_ROW, ROW_SEP, CsvWriter, neutralise
from campaign_sync.errors import InputError
from campaign_sync.exports.export import write_export
from campaign_sync.ops.runner import RunOptions, run_job
from campaign_sync.result import RunResult
from campaign_sync.store.open import open_store
from campaign_sync.store.postgres import connection
from campaign_sync.store.sqlite import SqliteStore
from campaign_sync.store.sqlite import exports as export

pytestmark = pytest.mark.stores("sqlite", "postgres")

T1 = "2026-01-10T08:00:00.000000+00:00"
T2 = "2026-02-20T09:30:00.000000+00:00"
T3 = "2026-03-05T12:00:00.000000+00:00"

CONFIG = """\
store: store.db
work_dir: var
timezone: Europe/Berlin
servers:
  partner:
    type: local
    path: partner
bounces:
  hard_limit: 2
  soft_limit: 3
jobs:
  newsletter-import:
    type: recipient-import
    list: newsletter
    mode: {mode}
    max_removals: 100%
    source: {{server: partner, path: /import/newsletter.csv}}
    columns: {{email: email, first_name: first_name}}
  newsletter-export:
    type: recipient-export
    list: newsletter
    target: {{server: partner, path: "{path}"}}
{extra}"""


class Env:
    """A config file, its store and the partner folder, in the workspace's folder; the store
    is the workspace's (SQLite or a PostgreSQL schema), created at once so SQL can seed it."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self._pg: Any = None
        self.root = ws.root
        (self.root / "partner").mkdir()
        self.write()
        open_store(self._location, schema=ws.pg.name if ws.pg else "public").close()

    @property
    def _location(self) -> str:
        return self.ws.pg.url if self.ws.pg else str(self.root / "store.db")

    def write(self, extra: str = "", *, path: str = "/export/out.csv", mode: str = "upsert"):
        extra = textwrap.indent(textwrap.dedent(extra).strip("\n"), "    ") + "\n" if extra else ""
        text = CONFIG.format(path=path, extra=extra, mode=mode)
        text = text.replace("store: store.db", self.ws.store_setting, 1)
        (self.root / "campaign-sync.yaml").write_text(text, encoding="utf-8")

    def add_job(self, name: str, body: str) -> None:
        """Append another job to the config."""
        config = self.root / "campaign-sync.yaml"
        body = textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")
        config.write_text(config.read_text() + f"  {name}:\n{body}\n", encoding="utf-8")

    @property
    def partner(self) -> Path:
        return self.root / "partner"

    def query(self, script: str, params: tuple = ()) -> list[tuple]:
        """Rows of `script` (`?` placeholders, on either store), committed if it writes."""
        if self.ws.pg is None:
            return self.ws.query(script, params)
        if self._pg is None:  # one connection for the test: each login costs a SCRAM round
            self._pg = connection.connect(self.ws.pg.url, self.ws.pg.name)
        cursor = self._pg.execute(script.replace("?", "%s"), params)
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()

    def sql(self, script: str, params: tuple = ()) -> None:
        self.query(script, params)

    def list_id(self, name: str) -> int:
        """The list's id, the list made on first use."""
        self.sql(
            "INSERT INTO lists (name, created_at) SELECT ?, ? "
            "WHERE NOT EXISTS (SELECT 1 FROM lists WHERE name = ?)",
            (name, T1, name),
        )
        return int(self.query("SELECT id FROM lists WHERE name = ?", (name,))[0][0])

    def run(self, job: str = "newsletter-export", kind: str = "export", **options) -> RunResult:
        config = config_module.load(str(self.root / "campaign-sync.yaml"), env={})
        return run_job(config, job, kind, RunOptions(**options))

    def export(self, job: str = "newsletter-export", remote: str = "export/out.csv") -> str:
        result = self.run(job)
        assert result.status == "succeeded", result.error
        return (self.partner / remote).read_bytes().decode("utf-8")

    def import_file(self, content: str) -> RunResult:
        (self.partner / "import").mkdir(exist_ok=True)
        (self.partner / "import" / "newsletter.csv").write_text(content, encoding="utf-8")
        result = self.run("newsletter-import", "import", force=True)
        assert result.status == "succeeded", result.error
        return result


def recipient(
    env: Env,
    email: str,
    status: str = "active",
    fields: dict | None = None,
    *,
    doi: str | None = None,
    created: str = T1,
    updated: str = T2,
    list_name: str = "newsletter",
) -> None:
    env.sql(
        "INSERT INTO recipients (list_id, email, status, fields, doi_confirmed_at, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (env.list_id(list_name), email, status, json.dumps(fields or {}), doi, created, updated),
    )


def bounce(env: Env, email: str, kind: str, when: str = T2, times: int = 1) -> None:
    for _ in range(times):
        env.sql(
            "INSERT INTO bounces (email, type, bounced_at) VALUES (?, ?, ?)", (email, kind, when)
        )


def seed_list(env: Env) -> None:
    """One recipient per status, plus a second list that must never show up."""
    recipient(env, "anna@example.com", fields={"first_name": "Anna", "city": "Köln"}, doi=T1)
    recipient(env, "ben@example.com", fields={"first_name": "Ben"})
    recipient(env, "carla@spam.example", fields={"first_name": "Carla"})  # blocklisted
    recipient(env, "dora@example.com", "unsubscribed", {"first_name": "Dora"})
    recipient(env, "emil@example.com", fields={"first_name": "Emil"})  # unsubscriber list
    recipient(env, "fritz@example.com", fields={"first_name": "Fritz"})  # hard bounces
    recipient(env, "gina@example.com", fields={"first_name": "Gina"})  # below the limits
    recipient(env, "hans@example.com", "removed", {"first_name": "Hans"})
    recipient(env, "ines@example.com", fields={"first_name": "Ines"}, doi=T3)  # re-confirmed
    recipient(env, "zoe@example.com", fields={"first_name": "Zoe"}, list_name="other")
    env.sql(
        "INSERT INTO blocklist (pattern, reason, created_at, modified_at) "
        "VALUES ('*@spam.example', 'spam trap', ?, ?)",
        (T1, T2),
    )
    env.sql(
        "INSERT INTO unsubscribers (email, list, unsubscribed_at, reason) VALUES "
        "('emil@example.com', '', ?, 'all lists'), ('ines@example.com', 'newsletter', ?, ''), "
        "('zoe@example.com', 'other', ?, 'elsewhere')",
        (T2, T2, T2),
    )
    bounce(env, "fritz@example.com", "hard", times=2)
    bounce(env, "gina@example.com", "soft", times=2)
    bounce(env, "gina@example.com", "hard", T3)


def in_parts(
    patch: pytest.MonkeyPatch,
    parts: int = 3,
    chunk_rows: int | None = None,
    *,
    wait_after: int = 0,
    wait: bool = True,
) -> None:
    """Read lists of 1 row and more in `parts` parts, part 0 waiting for the children's
    cuts after `wait_after` chunks (if `wait`).

    In production part 0 never waits: on a small list it may well be done before a child
    has started, and then the children are not needed. Here they must do their share.
    """
    patch.setattr(export, "PARTS", parts)
    patch.setattr(export, "PARALLEL_MIN_ROWS", 1)
    if chunk_rows:
        patch.setattr(export, "CHUNK_ROWS", chunk_rows)
    if not wait:
        return
    chunks = getattr(export._chunks, "unwrapped", export._chunks)

    def after_the_handover(conn, query, params, limit=None):  # type: ignore[no-untyped-def]
        if limit is None:
            return chunks(conn, query, params, limit)
        asked = 0

        def waiting(progress: str) -> str:
            nonlocal asked
            asked += 1
            deadline = time.monotonic() + 60
            while asked > wait_after and not limit.__self__.settled:
                assert time.monotonic() < deadline, "the children never reported"
                limit(progress)  # settles once every child has reported its cut
                time.sleep(0.01)
            return limit(progress)

        return chunks(conn, query, params, waiting)

    after_the_handover.unwrapped = chunks  # type: ignore[attr-defined]
    patch.setattr(export, "_chunks", after_the_handover)


@pytest.fixture(autouse=True, scope="module", params=["whole", "in parts"])
def parts(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs twice: recipient lists read by one connection, and in three
    parts by three processes at once (store/sqlite/parts.py), which must give the same bytes."""
    with pytest.MonkeyPatch.context() as patch:
        if request.param == "in parts":
            in_parts(patch)
        else:
            patch.setattr(export, "PARTS", 1)
        yield request.param


@pytest.fixture
def env(ws: Workspace) -> Iterator[Env]:
    """On the store `ws` is on: each test runs on SQLite and on PostgreSQL (pytestmark)."""
    made = Env(ws)
    yield made
    made.close()


# --------------------------------------------------------------------------- recipient export


def test_active_export_leaves_out_unsubscribed_blocklisted_outbounced_and_removed(env: Env):
    seed_list(env)
    env.write("fields: [email, first_name, city, updated_at]")
    assert env.export() == (
        "email,first_name,city,updated_at\r\n"
        f"anna@example.com,Anna,Köln,{T2}\r\n"
        f"ben@example.com,Ben,,{T2}\r\n"
        f"gina@example.com,Gina,,{T2}\r\n"
        f"ines@example.com,Ines,,{T2}\r\n"
    )


def test_all_adds_the_status_of_every_member(env: Env):
    seed_list(env)
    env.write("fields: [email, first_name]\ninclude: all")
    assert env.export() == (
        "email,first_name,status\r\n"
        "anna@example.com,Anna,active\r\n"
        "ben@example.com,Ben,active\r\n"
        "carla@spam.example,Carla,blocklisted\r\n"
        "dora@example.com,Dora,unsubscribed\r\n"
        "emil@example.com,Emil,unsubscribed\r\n"
        "fritz@example.com,Fritz,outbounced\r\n"
        "gina@example.com,Gina,active\r\n"
        "ines@example.com,Ines,active\r\n"
    )


def test_builtin_fields_in_any_order_and_status_as_a_field(env: Env):
    seed_list(env)
    env.write("fields: [status, first_name, email, doi_confirmed_at, created_at]\ninclude: all")
    lines = env.export().splitlines()
    assert lines[0] == "status,first_name,email,doi_confirmed_at,created_at"
    assert lines[1] == f"active,Anna,anna@example.com,{T1},{T1}"
    assert lines[4] == f"unsubscribed,Dora,dora@example.com,,{T1}"


def test_without_fields_every_json_field_follows_the_address(env: Env):
    seed_list(env)
    assert env.export().splitlines()[:2] == ["email,city,first_name", "anna@example.com,Köln,Anna"]


def test_an_empty_or_unknown_list_gives_a_header_only_file(env: Env):
    env.write("fields: [email, first_name]")
    result = env.run()
    assert result.status == "succeeded" and result.counts["written"] == 0
    assert (env.partner / "export/out.csv").read_bytes() == b"email,first_name\r\n"


def test_blocklist_check_is_case_and_pattern_exact(env: Env):
    for email in ("a@x.de", "a.b@x.de", "ab@x.de", "q?@x.de", "keep@y.de"):
        recipient(env, email)
    for pattern in ("a?b@x.de", "a@*", "q\\?@x.de"):
        env.sql(
            "INSERT INTO blocklist (pattern, created_at, modified_at) VALUES (?, ?, ?)",
            (pattern, T1, T1),
        )
    env.write("fields: [email]\ninclude: all")
    assert env.export() == (
        "email,status\r\n"
        "a.b@x.de,blocklisted\r\n"
        "a@x.de,blocklisted\r\n"
        "ab@x.de,active\r\n"
        "keep@y.de,active\r\n"
        "q?@x.de,blocklisted\r\n"
    )


def test_date_format_applies_to_dates(env: Env):
    recipient(env, "anna@example.com", doi=T3)
    env.write("fields: [email, doi_confirmed_at, created_at]\nformat: {date_format: '%d.%m.%Y'}")
    assert (
        env.export()
        == "email,doi_confirmed_at,created_at\r\nanna@example.com,05.03.2026,10.01.2026\r\n"
    )


# Europe/Berlin (the config's zone) went to summer time on 31 March 2024 and back on 27 October.
ROUND_TRIPS = {
    "%d.%m.%Y": ["01.05.2024", "01.01.2024", "31.03.2024", "27.10.2024"],
    "%d.%m.%Y %H:%M": [
        "01.05.2024 00:30",
        "30.03.2024 23:30",  # the evening before summer time: UTC+1
        "31.03.2024 03:30",  # just after the clocks went forward: UTC+2
        "27.10.2024 02:30",  # occurs twice; read as the first (summer time) one
        "27.10.2024 23:59",
    ],
}


@pytest.mark.parametrize("date_format", list(ROUND_TRIPS))
def test_dates_in_a_date_format_come_back_the_same_after_export_and_reimport(
    env: Env, date_format: str
):
    """Imports read a formatted date in the config's zone, so exports write it in that zone:
    the file a partner gets back reads in as the same moments, run after run."""
    env.write(f"fields: [email, doi_confirmed_at]\nformat: {{date_format: '{date_format}'}}")
    env.add_job(
        "doi-import",
        "type: recipient-import\nlist: newsletter\n"
        "source: {server: partner, path: /export/out.csv}\n"
        f"format: {{date_format: '{date_format}'}}",
    )
    dates = ROUND_TRIPS[date_format]
    original = "email,doi_confirmed_at\r\n" + "".join(
        f"a{n}@example.com,{date}\r\n" for n, date in enumerate(dates)
    )
    (env.partner / "export").mkdir()
    (env.partner / "export" / "out.csv").write_text(original, encoding="utf-8")
    for _ in range(2):
        result = env.run("doi-import", "import", force=True)
        assert result.status == "succeeded", result.error
        assert env.export() == original
    # The store still holds UTC: local midnight of 1 May is 22:00 UTC the day before.
    ((stored,),) = env.query(
        "SELECT doi_confirmed_at FROM recipients WHERE email = 'a0@example.com'"
    )
    assert stored == (
        "2024-04-30T22:00:00.000000+00:00"
        if date_format == "%d.%m.%Y"
        else "2024-04-30T22:30:00.000000+00:00"
    )


def test_date_format_writes_every_export_kind_in_the_configs_zone(env: Env):
    env.sql(
        "INSERT INTO blocklist (pattern, reason, created_at, modified_at) "
        "VALUES ('*@spam.example', '', ?, ?)",
        ("2024-10-26T22:30:00.000000+00:00", "2024-10-27T23:30:00.000000+00:00"),
    )
    env.sql(
        "INSERT INTO unsubscribers (email, list, unsubscribed_at, reason) VALUES (?, '', ?, '')",
        ("u@example.com", "2024-03-30T23:30:00.000000+00:00"),
    )
    bounce(env, "b@example.com", "hard", "2024-06-30T22:15:00.000000+00:00", times=3)
    dates = "format: {date_format: '%d.%m.%Y %H:%M'}"
    for name, kind in [("bl", "blocklist"), ("unsub", "unsubscriber"), ("bounce", "bounce")]:
        env.add_job(
            name, f"type: {kind}-export\ntarget: {{server: partner, path: /{name}.csv}}\n{dates}"
        )
    assert env.export("bl", "bl.csv") == (
        "pattern,reason,created,modified\r\n"
        "*@spam.example,,27.10.2024 00:30,28.10.2024 00:30\r\n"  # summer time, then winter
    )
    assert env.export("unsub", "unsub.csv") == (
        "email,list,date,reason\r\nu@example.com,,31.03.2024 00:30,\r\n"
    )
    assert env.export("bounce", "bounce.csv") == (
        "email,hard_bounces,soft_bounces,last_bounce\r\nb@example.com,3,0,01.07.2024 00:15\r\n"
    )


# --------------------------------------------------------------------------- other kinds


def test_blocklist_export(env: Env):
    seed_list(env)
    env.sql(
        "INSERT INTO blocklist (pattern, reason, created_at, modified_at) "
        "VALUES ('=cmd@x.de', '=formula, \"quoted\"', ?, ?), ('=sum(1)', '', ?, ?)",
        (T2, T3, T2, T3),
    )
    env.add_job(
        "blocklist-export",
        "type: blocklist-export\ntarget: {server: partner, path: /export/blocklist.csv}",
    )
    # An address-like pattern goes out as it is (see test_addresses_are_written_as_stored_…);
    # one that could be a function call is neutralised, like the free-text reason.
    assert env.export("blocklist-export", "export/blocklist.csv") == (
        "pattern,reason,created,modified\r\n"
        f"*@spam.example,spam trap,{T1},{T2}\r\n"
        f'=cmd@x.de,"\'=formula, ""quoted""",{T2},{T3}\r\n'
        f"'=sum(1),,{T2},{T3}\r\n"
    )


def test_unsubscriber_export_all_and_per_list(env: Env):
    seed_list(env)
    env.add_job(
        "unsub-export",
        "type: unsubscriber-export\ntarget: {server: partner, path: /export/unsub.csv}",
    )
    env.add_job(
        "unsub-newsletter",
        "type: unsubscriber-export\nlist: newsletter\n"
        "target: {server: partner, path: /export/unsub-nl.csv}",
    )
    assert env.export("unsub-export", "export/unsub.csv") == (
        "email,list,date,reason\r\n"
        f"emil@example.com,,{T2},all lists\r\n"
        f"ines@example.com,newsletter,{T2},\r\n"
        f"zoe@example.com,other,{T2},elsewhere\r\n"
    )
    assert env.export("unsub-newsletter", "export/unsub-nl.csv") == (
        "email,list,date,reason\r\n"
        f"emil@example.com,,{T2},all lists\r\n"
        f"ines@example.com,newsletter,{T2},\r\n"
    )


def test_bounce_export_lists_the_outbounced_with_counts_and_last_bounce(env: Env):
    seed_list(env)
    bounce(env, "soft@example.com", "soft", T1, times=2)
    bounce(env, "soft@example.com", "soft", T3)
    env.add_job(
        "bounce-export",
        "type: bounce-export\ntarget: {server: partner, path: /export/bounces.csv}",
    )
    assert env.export("bounce-export", "export/bounces.csv") == (
        "email,hard_bounces,soft_bounces,last_bounce\r\n"
        f"fritz@example.com,2,0,{T2}\r\n"
        f"soft@example.com,0,3,{T3}\r\n"
    )


def test_bounce_export_of_one_list_only_has_its_members(env: Env):
    seed_list(env)
    bounce(env, "stranger@example.com", "hard", times=2)
    env.add_job(
        "bounce-export",
        "type: bounce-export\nlist: newsletter\n"
        "target: {server: partner, path: /export/bounces.csv}",
    )
    assert env.export("bounce-export", "export/bounces.csv") == (
        f"email,hard_bounces,soft_bounces,last_bounce\r\nfritz@example.com,2,0,{T2}\r\n"
    )


# --------------------------------------------------------------------------- cells and format


def test_formula_like_cells_are_neutralised_and_quoted_where_needed(env: Env):
    cells = ["=1+2", "+49 30 1234", "-5", "@SUM(A1)", "\tx", "\rx", "a,b", 'say "hi"', "l1\nl2"]
    for index, value in enumerate(cells):
        recipient(env, f"r{index}@example.com", fields={"note": value})
    env.write("fields: [email, note]")
    assert env.export() == (
        "email,note\r\n"
        "r0@example.com,'=1+2\r\n"
        "r1@example.com,'+49 30 1234\r\n"
        "r2@example.com,'-5\r\n"
        "r3@example.com,'@SUM(A1)\r\n"
        "r4@example.com,'\tx\r\n"
        'r5@example.com,"\'\rx"\r\n'
        'r6@example.com,"a,b"\r\n'
        'r7@example.com,"say ""hi"""\r\n'
        'r8@example.com,"l1\nl2"\r\n'
    )


# Valid addresses that start like a formula ('@' cannot start one: the local part is empty).
FORMULA_ADDRESSES = ["+1-1@example.com", "-x@example.com", "=a@example.com"]


def test_addresses_are_written_as_stored_and_come_back_the_same(env: Env):
    """A formula-like address goes out byte for byte ('+1-1@… with a quote would be another
    valid address); every other cell is still neutralised. The file imports back into a
    new list as the same addresses."""
    assert addresses.check("@a@example.com") is not None
    notes = {"+1-1@example.com": "-1", "-x@example.com": "plain", "=a@example.com": "=a@x.de"}
    for email, note in notes.items():
        recipient(env, email, fields={"note": note})
    recipient(env, "ok@example.com", fields={"note": "+49 30 1234"})
    env.write("fields: [email, note]")
    assert env.export() == (
        "email,note\r\n"
        "+1-1@example.com,'-1\r\n"
        "-x@example.com,plain\r\n"
        "=a@example.com,'=a@x.de\r\n"
        "ok@example.com,'+49 30 1234\r\n"
    )
    env.add_job(
        "copy-import",
        "type: recipient-import\nlist: copy\nsource: {server: partner, path: /export/out.csv}",
    )
    result = env.run("copy-import", "import")
    assert result.status == "succeeded", result.error
    assert (result.counts["inserted"], result.counts["rejected"]) == (4, 0)
    copied = env.query(
        "SELECT r.email FROM recipients AS r JOIN lists AS l ON l.id = r.list_id "
        "WHERE l.name = 'copy' ORDER BY r.email"
    )
    assert [email for (email,) in copied] == [*FORMULA_ADDRESSES, "ok@example.com"]


@pytest.mark.parametrize(
    ("kind", "header", "dates"),
    [("unsubscriber", "email,list,date,reason", f",,{T1},"), ("blocklist", "", f",,{T1},{T1}")],
)
def test_small_exports_write_addresses_as_stored_and_read_back_unchanged(
    env: Env, kind: str, header: str, dates: str
):
    """Unsubscriber and blocklist exports: the address (pattern) column as stored; imported
    back, every row is an entry the store already has."""
    for email in FORMULA_ADDRESSES:
        env.sql("INSERT INTO unsubscribers (email, unsubscribed_at) VALUES (?, ?)", (email, T1))
        env.sql(
            "INSERT INTO blocklist (pattern, created_at, modified_at) VALUES (?, ?, ?)",
            (email, T1, T1),
        )
    header = header or "pattern,reason,created,modified"
    env.add_job(f"{kind}-export", f"type: {kind}-export\ntarget: {{server: partner, path: /x.csv}}")
    assert env.export(f"{kind}-export", "x.csv") == (
        f"{header}\r\n" + "".join(f"{email}{dates}\r\n" for email in FORMULA_ADDRESSES)
    )
    env.add_job(f"{kind}-import", f"type: {kind}-import\nsource: {{server: partner, path: /x.csv}}")
    result = env.run(f"{kind}-import", "import")
    assert result.status == "succeeded", result.error
    assert (result.counts["unchanged"], result.counts["inserted"]) == (3, 0)


def test_bounce_export_writes_addresses_as_stored(env: Env):
    for email in FORMULA_ADDRESSES:
        bounce(env, email, "hard", times=2)
    env.add_job("bounce-export", "type: bounce-export\ntarget: {server: partner, path: /b.csv}")
    assert env.export("bounce-export", "b.csv") == (
        "email,hard_bounces,soft_bounces,last_bounce\r\n"
        + "".join(f"{email},2,0,{T2}\r\n" for email in FORMULA_ADDRESSES)
    )


def test_control_characters_in_fields_do_not_break_rows(env: Env):
    recipient(env, "a@example.com", fields={"note": f"x{CELL_SEP}y\x1ez", "n": 7})
    recipient(env, "b@example.com", fields={"note": "plain"})
    env.write("fields: [note, email, n]")
    assert env.export() == (
        f"note,email,n\r\nx{CELL_SEP}y\x1ez,a@example.com,7\r\nplain,b@example.com,\r\n"
    )


def test_dialect_per_job(env: Env):
    recipient(env, "anna@example.com", fields={"name": "O'Neil; Jr."})
    recipient(env, "ben@example.com", fields={"name": "Ben"})
    env.write("fields: [email, name]\nformat: {delimiter: ';', quotechar: \"'\"}")
    assert (
        env.export() == "email;name\r\nanna@example.com;'O''Neil; Jr.'\r\nben@example.com;Ben\r\n"
    )


def test_tab_delimiter(env: Env):
    recipient(env, "anna@example.com", fields={"name": "A\tB"})
    env.write('fields: [email, name]\nformat: {delimiter: "\\t"}')
    assert env.export() == 'email\tname\r\nanna@example.com\t"A\tB"\r\n'


def test_latin1_encoding(env: Env):
    recipient(env, "anna@example.com", fields={"name": "Jürgen Müßig"})
    env.write("fields: [email, name]\nformat: {encoding: latin-1}")
    env.run()
    data = (env.partner / "export/out.csv").read_bytes()
    assert data == "email,name\r\nanna@example.com,Jürgen Müßig\r\n".encode("latin-1")


def test_unencodable_character_fails_clearly_and_uploads_nothing(env: Env):
    recipient(env, "anna@example.com", fields={"name": "Anna"})
    recipient(env, "lech@example.com", fields={"name": "Łukasz"})
    env.write("fields: [email, name]\nformat: {encoding: cp1252}")
    result = env.run()
    assert result.status == "failed" and result.exit_code == 1
    assert result.error == (
        "data row 2, column name: 'Ł' (U+0141) cannot be written in cp1252; set the job's "
        "format.encoding to utf-8 (or one that has this character)"
    )
    assert not (env.partner / "export").exists()
    assert [p for p in (env.root / "var/staging").rglob("*") if p.is_file()] == []


def test_utf8_sig_writes_one_bom(env: Env):
    for index in range(3):
        recipient(env, f"r{index}@example.com")
    env.write("fields: [email]\nformat: {encoding: utf-8-sig}")
    env.run()
    data = (env.partner / "export/out.csv").read_bytes()
    assert data == b"\xef\xbb\xbfemail\r\nr0@example.com\r\nr1@example.com\r\nr2@example.com\r\n"


def test_gzip_target_round_trips(env: Env):
    for index in range(5000):  # several chunks
        recipient(env, f"r{index:05d}@example.com", fields={"n": f"={index}"})
    env.write("fields: [email, n]", path="/export/out_{date:%Y%m%d}.csv.gz")
    result = env.run(date=datetime.date(2026, 3, 1))
    assert result.status == "succeeded" and result.counts["written"] == 5000
    packed = (env.partner / "export/out_20260301.csv.gz").read_bytes()
    text = gzip.decompress(packed).decode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == ["email", "n"] and len(rows) == 5001
    assert rows[1234] == ["r01233@example.com", "'=1233"]
    assert result.file is not None and result.file.bytes == len(packed)


def test_single_column_with_empty_cells(env: Env):
    recipient(env, "a@example.com", fields={"n": "x"})
    recipient(env, "b@example.com")
    env.write("fields: [n]")
    assert env.export() == 'n\r\nx\r\n""\r\n'


# --------------------------------------------------------------------------- changes only


def test_changes_only_across_runs_includes_updates_and_removals(env: Env):
    env.write("fields: [email, first_name]\nchanges_only: true", mode="replace")
    env.import_file(
        "email,first_name\nanna@example.com,Anna\nben@example.com,Ben\ncarl@x.de,Carl\n"
    )
    assert env.export() == (
        "email,first_name,status\r\n"
        "anna@example.com,Anna,active\r\n"
        "ben@example.com,Ben,active\r\n"
        "carl@x.de,Carl,active\r\n"
    )
    assert env.export() == "email,first_name,status\r\n"  # nothing changed since

    # Ben renamed, Carl removed by the replace, Dana new; Anna unchanged.
    env.import_file(
        "email,first_name\nanna@example.com,Anna\nben@example.com,Benno\ndana@x.de,Dana\n"
    )
    assert env.export() == (
        "email,first_name,status\r\n"
        "ben@example.com,Benno,active\r\n"
        "carl@x.de,Carl,removed\r\n"
        "dana@x.de,Dana,active\r\n"
    )

    # Status changes that come through the other tables.
    now = store.now()
    env.sql(
        "INSERT INTO unsubscribers (email, list, unsubscribed_at) "
        "VALUES ('anna@example.com', '', ?)",
        (now,),
    )
    env.sql(
        "INSERT INTO blocklist (pattern, created_at, modified_at) VALUES ('dana@*', ?, ?)",
        (now, now),
    )
    bounce(env, "ben@example.com", "hard", now, times=2)
    assert env.export() == (
        "email,first_name,status\r\n"
        "anna@example.com,Anna,unsubscribed\r\n"
        "ben@example.com,Benno,outbounced\r\n"
        "dana@x.de,Dana,blocklisted\r\n"
    )
    assert env.export() == "email,first_name,status\r\n"


def test_changes_only_watermark_is_not_moved_by_a_failed_run(env: Env):
    env.write("fields: [email, name]\nchanges_only: true\nformat: {encoding: ascii}")
    recipient(env, "a@example.com", fields={"name": "A"}, updated=store.now())
    assert env.export() == "email,name,status\r\na@example.com,A,active\r\n"
    recipient(env, "b@example.com", fields={"name": "Bé"}, updated=store.now())
    assert env.run().status == "failed"
    env.sql("UPDATE recipients SET fields = '{\"name\": \"Be\"}' WHERE email = 'b@example.com'")
    assert env.export() == "email,name,status\r\nb@example.com,Be,active\r\n"


# --------------------------------------------------------------------------- staging and upload


def test_staging_file_is_private(tmp_path: Path):
    staging = workdir.staging_file(tmp_path / "var", "job", ".csv")
    opened = SqliteStore(str(tmp_path / "store.db"))
    job = JobConfig(
        name="job",
        type="blocklist-export",
        target=TargetConfig(server="partner", path="/x.csv"),
    )
    write_export(opened, job, BounceLimits(), staging, changed_since=None)
    assert stat.S_IMODE(staging.stat().st_mode) == 0o600
    assert staging.read_bytes() == b"pattern,reason,created,modified\r\n"


def test_upload_is_atomic_and_leaves_no_temp_file(env: Env):
    recipient(env, "anna@example.com")
    env.write("fields: [email]")
    final = env.partner / "export/out.csv"
    final.parent.mkdir()
    final.write_bytes(b"previous complete file\r\n")
    seen: list[bytes] = []
    original = os.rename

    def watching_rename(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        # Just before the rename (relative to the folder's descriptor) the final name still
        # holds the previous complete file.
        if dst == final.name and kwargs.get("dst_dir_fd") is not None:
            seen.append(final.read_bytes())
            assert src.startswith(".campaign-sync-out.csv.") and src.endswith(".part")
        return original(src, dst, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "rename", watching_rename)
        assert env.run().status == "succeeded"
    assert seen == [b"previous complete file\r\n"]
    assert final.read_bytes() == b"email\r\nanna@example.com\r\n"
    assert sorted(p.name for p in final.parent.iterdir()) == ["out.csv"]
    assert [p for p in (env.root / "var/staging").rglob("*") if p.is_file()] == []


def test_failed_upload_leaves_neither_temp_nor_partial_file(env: Env):
    recipient(env, "anna@example.com")
    env.write("fields: [email]")
    (env.partner / "export").mkdir()
    (env.partner / "export/out.csv").mkdir()  # the rename onto it must fail
    result = env.run()
    assert result.status == "failed"
    assert sorted(p.name for p in (env.partner / "export").iterdir()) == ["out.csv"]
    assert list((env.partner / "export/out.csv").iterdir()) == []
    assert [p for p in (env.root / "var/staging").rglob("*") if p.is_file()] == []


def test_dry_run_uploads_nothing(env: Env):
    recipient(env, "anna@example.com")
    env.write("fields: [email]")
    result = env.run(dry_run=True)
    assert result.status == "succeeded" and result.counts == {"written": 1}
    assert not (env.partner / "export").exists()


# --------------------------------------------------------------------------- writer paths


def test_neutralise():
    assert [neutralise(c) for c in ("=a", "+a", "-a", "@a", "\ta", "\ra", "a=", "", "'a")] == [
        "'=a",
        "'+a",
        "'-a",
        "'@a",
        "'\ta",
        "'\ra",
        "a=",
        "",
        "'a",
    ]
    addresses_and_others = ("+1-1@x.de", "=a.b@bücher.de", "-*@x.de", "=a(1)", "+a b", "\ta")
    assert [neutralise(c, address=True) for c in addresses_and_others] == [
        "+1-1@x.de",
        "=a.b@bücher.de",
        "-*@x.de",
        "'=a(1)",
        "'+a b",
        "'\ta",
    ]


def _written(tmp_path: Path, fmt: CsvFormat, header: list[str], feed, verbatim=()) -> bytes:  # type: ignore[no-untyped-def]
    path = tmp_path / f"out-{len(list(tmp_path.iterdir()))}.csv"
    path.touch()
    writer = CsvWriter(path, fmt, compress=False)
    writer.write_header(header, verbatim=verbatim)
    feed(writer)
    writer.close()
    return path.read_bytes()


cell_text = st.text(alphabet=st.sampled_from(list("ab ,;'\"=+-@\t\r\n\x1d\x1e\x1fä§")), max_size=6)


@settings(max_examples=examples(300), deadline=None)
@given(
    rows=st.lists(st.lists(cell_text, min_size=2, max_size=2), max_size=8),
    dialect=st.sampled_from(
        [(",", '"'), (";", "'"), ("\t", '"'), ("§", '"'), ("\x1e", '"'), (",", "\x1f")]
    ),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16"]),
    verbatim=st.sampled_from([(), ("a",), ("b",)]),
)
def test_packed_and_plain_paths_write_the_same_bytes(
    tmp_path_factory, rows, dialect, encoding, verbatim
):
    """The fast packed path agrees with the csv module on any cells, in any encoding, with
    or without a column written verbatim."""
    tmp = tmp_path_factory.mktemp("w")
    fmt = CsvFormat(delimiter=dialect[0], quotechar=dialect[1], encoding=encoding)
    plain = _written(tmp, fmt, ["a", "b"], lambda w: w.write_many(rows), verbatim)

    def packed(writer: CsvWriter) -> None:
        # As SQLite packs them: raw cells, JSON for rows with a separator character.
        lines = [
            JSON_ROW + json.dumps(row)
            if any(ch in cell for cell in row for ch in "\x1d\x1e\x1f")
            else CELL_SEP.join(row)
            for row in rows
        ]
        writer.write_packed(ROW_SEP.join(lines), len(lines))

    assert _written(tmp, fmt, ["a", "b"], packed, verbatim) == plain
    # A verbatim column reads back as the cells given, unless a cell is no address.
    text = io.StringIO(plain.decode(encoding), newline="")
    read = list(csv.reader(text, delimiter=dialect[0], quotechar=dialect[1]))
    for index in (["a", "b"].index(column) for column in verbatim):
        expected = [neutralise(row[index], address=True) for row in rows]
        assert [row[index] for row in read[1:]] == expected


def test_encoding_error_in_plain_rows_names_row_and_column(tmp_path: Path):
    path = tmp_path / "x.csv"
    path.touch()
    writer = CsvWriter(path, CsvFormat(encoding="latin-1"), compress=False)
    writer.write_header(["pattern", "reason"])
    writer.write(["a@x.de", "ok"])
    with pytest.raises(InputError, match=r"data row 3, column reason: '€' \(U\+20AC\)"):
        writer.write_many([["b@x.de", "fine"], ["c@x.de", "costs 5 €"]])
    writer.close()


# --------------------------------------------------------------------------- blocklist in SQL

ADDRESSES = [
    f"{local}@{domain}"
    for local in ("a", "b", "ab", "a.b", "spam1", "info")
    for domain in ("x.de", "y.de", "a.x.de", "ab.com")
]
pattern_text = st.lists(
    st.sampled_from(["a", "b", "@", ".", "*", "?", "\\*", "x.de", "de", "spam", "info@", "*@"]),
    min_size=1,
    max_size=5,
).map("".join)


@settings(max_examples=examples(150), deadline=None)
@given(patterns=st.lists(pattern_text, min_size=1, max_size=4, unique=True))
def test_blocklist_in_sql_agrees_with_the_matcher(tmp_path_factory, patterns):
    """Whatever shapes the patterns have, the SQL shortcuts block exactly what matches()."""
    from campaign_sync.core.addresses import Blocklist, pattern_problem

    patterns = [p for p in patterns if pattern_problem(p) is None]
    if not patterns:
        return
    tmp = tmp_path_factory.mktemp("bl")
    opened = SqliteStore(str(tmp / "store.db"))
    conn = opened.conn
    list_id = store.list_id(conn, "newsletter", create=True)
    conn.executemany(
        "INSERT INTO recipients (list_id, email, created_at, updated_at) VALUES (?, ?, ?, ?)",
        [(list_id, email, T1, T1) for email in ADDRESSES],
    )
    conn.executemany(
        "INSERT INTO blocklist (pattern, created_at, modified_at) VALUES (?, ?, ?)",
        [(p, T1, T1) for p in patterns],
    )
    job = JobConfig(
        name="job",
        type="recipient-export",
        list="newsletter",
        target=TargetConfig(server="partner", path="/x.csv"),
        fields=("email",),
        include="all",
    )
    staging = workdir.staging_file(tmp / "var", "job", ".csv")
    write_export(opened, job, BounceLimits(), staging, changed_since=None)
    got = dict(line.split(",") for line in staging.read_text().splitlines()[1:])
    matcher = Blocklist(patterns)
    expected = {
        email: "blocklisted" if matcher.matches(email) is not None else "active"
        for email in ADDRESSES
    }
    assert got == expected
    assert conn.execute("SELECT count(*) FROM temp.sqlite_master").fetchone()[0] == 0
    conn.close()


# --------------------------------------------------------------------------- parts


def big_list(env: Env, members: int) -> None:
    """A list where every status, matcher path and date occurs across its whole key range."""
    list_id = env.list_id("newsletter")
    conn = sqlite3.connect(env.root / "store.db")
    try:
        with conn:
            conn.executemany(
                "INSERT INTO recipients (list_id, email, status, fields, doi_confirmed_at, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        list_id,
                        f"m{n:04d}@{('spam' if n % 7 == 0 else 'ok')}{n % 5}.example",
                        "unsubscribed" if n % 11 == 0 else "active",
                        json.dumps({"name": f"N{n}", "note": "=1+1" if n % 13 == 0 else "x, y"}),
                        T3 if n % 3 == 0 else None,
                        T1,
                        T2 if n % 2 else T3,
                    )
                    for n in range(members)
                ],
            )
            conn.executemany(
                "INSERT INTO blocklist (pattern, created_at, modified_at) VALUES (?, ?, ?)",
                [(p, T1, T1) for p in ("*@spam0.example", "m01?9@*", "*3@*", "m0042@ok2.example")],
            )
            conn.executemany(
                "INSERT INTO unsubscribers (email, list, unsubscribed_at) VALUES (?, '', ?)",
                [(f"m{n:04d}@ok{n % 5}.example", T2) for n in range(1, members, 17)],
            )
            conn.executemany(
                "INSERT INTO bounces (email, type, bounced_at) VALUES (?, 'hard', ?)",
                [(f"m{n:04d}@ok{n % 5}.example", T2) for n in range(2, members, 19) for _ in "ab"],
            )
    finally:
        conn.close()


# Parts are the SQLite store's (child processes reading its file); on PostgreSQL one COPY
# is the fast path.
@pytest.mark.stores("sqlite")
@pytest.mark.parametrize(
    ("include", "handover"),
    [
        ("active", "waits"),
        ("all", "waits"),
        ("active", "after 8 chunks"),  # part 0 is past the first cut when it settles
        ("active", "never waits"),  # part 0 may finish before the children report
    ],
)
def test_parts_give_the_same_file_as_one_connection(env: Env, include: str, handover: str):
    big_list(env, 900)
    env.write(
        f"fields: [email, name, note, doi_confirmed_at]\ninclude: {include}\n"
        "format: {date_format: '%d.%m.%Y %H:%M'}"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export, "PARTS", 1)
        whole = env.export()
        in_parts(
            patch,
            3,
            chunk_rows=50,  # several chunks per part
            wait_after=8 if handover == "after 8 chunks" else 0,
            wait=handover != "never waits",
        )
        parted = env.export()
    assert parted == whole
    lines = whole.splitlines()
    assert len(lines) > 300 and lines[1].startswith("m000")
    assert any("'=1+1" in line for line in lines) and any(
        "blocklisted" in line for line in lines
    ) == (include == "all")


# Parts are the SQLite store's (child processes reading its file); on PostgreSQL one COPY
# is the fast path.
@pytest.mark.stores("sqlite")
def test_an_error_in_a_later_part_names_its_row_and_leaves_nothing(env: Env):
    big_list(env, 900)
    env.sql(
        "UPDATE recipients SET fields = '{\"name\": \"Łukasz\"}' WHERE email = 'm0800@ok0.example'"
    )
    env.write("fields: [email, name]\ninclude: all\nformat: {encoding: cp1252}")
    with pytest.MonkeyPatch.context() as patch:
        in_parts(patch, 3, chunk_rows=50)
        result = env.run()
    # Every member but the unsubscribed (n % 11 == 0) and removed ones is written under
    # `include: all`; m0800 is the 800th - 73 unsubscribed before it... counted, not guessed:
    ((row,),) = env.query("SELECT count(*) FROM recipients WHERE email <= 'm0800@ok0.example'")
    assert result.status == "failed"
    assert result.error.startswith(f"data row {row}, column name: 'Ł' (U+0141)")
    assert not (env.partner / "export").exists()
    assert [p for p in (env.root / "var/staging").rglob("*") if p.is_file()] == []


# Parts are the SQLite store's (child processes reading its file); on PostgreSQL one COPY
# is the fast path.
@pytest.mark.stores("sqlite")
def test_a_failing_part_stops_the_export(env: Env):
    big_list(env, 900)
    env.write("fields: [email, name]")
    later_parts = export._later_parts

    def broken_later_parts(*args):  # type: ignore[no-untyped-def]
        later = later_parts(*args)
        for part in later:
            part.plan = part.plan.replace(b"FROM recipients", b"FROM no_such_table")
        return later

    with pytest.MonkeyPatch.context() as patch:
        in_parts(patch, 2)
        patch.setattr(export, "_later_parts", broken_later_parts)
        result = env.run()
    assert result.status == "failed" and result.exit_code == 1
    assert result.error == (
        "export part 1 failed: sqlite3.OperationalError: no such table: no_such_table"
    )
    assert not (env.partner / "export").exists()
    assert [p for p in (env.root / "var/staging").rglob("*") if p.is_file()] == []


# Parts are the SQLite store's (child processes reading its file); on PostgreSQL one COPY
# is the fast path.
@pytest.mark.stores("sqlite")
def test_the_part_process_runs_this_tree_whatever_the_working_folder(env: Env, tmp_path: Path):
    shadow = tmp_path / "elsewhere" / "campaign_sync"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise SystemExit('a campaign_sync from the cwd ran')\n")
    big_list(env, 300)
    env.write("fields: [email, name]")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export, "PARTS", 1)
        whole = env.export()
        in_parts(patch, 2)
        patch.chdir(shadow.parent)  # cron may start us in any folder
        assert env.export() == whole
