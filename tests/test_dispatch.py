"""Double opt-in dispatch against a real SMTP server (aiosmtpd), including kill -9 runs, on
both stores: an SQLite file and a PostgreSQL schema on a real server.

The store is seeded directly (list, recipients with their DOI times, the job's first run) so
each test states exactly who is new, who is old and who is excluded.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from smtp_server import ClosedPort, SmtpTestServer

from campaign_sync import config as config_module
from campaign_sync import store
from campaign_sync.errors import JobLocked
from campaign_sync.ops.runner import RunOptions, run_job
from campaign_sync.result import RunResult
from campaign_sync.store.base import Store
from campaign_sync.store.open import open_store

if TYPE_CHECKING:
    import psycopg
    from pgfixtures import PgSchema

pytestmark = pytest.mark.stores("sqlite", "postgres")

TREE = str(Path(__file__).resolve().parent.parent)
SENDER = "welcome@example.com"
FIRST_RUN = "2026-11-01T00:00:00.000000+00:00"  # the job's first run: the DOI cut-off
NEW_DOI = "2026-11-10T12:00:00.000000+00:00"
OLD_DOI = "2026-10-01T12:00:00.000000+00:00"


# --------------------------------------------------------------------------- workspace


@dataclass
class Dispatch:
    """A dispatch job's folder, config and mailings, and its store: the SQLite file
    `store.db`, or (`pg` set) a PostgreSQL schema of its own on the suite's server."""

    root: Path
    server_host: str
    server_port: int
    pg: PgSchema | None = None

    @property
    def kind(self) -> str:
        return "sqlite" if self.pg is None else "postgres"

    @property
    def config_path(self) -> Path:
        return self.root / "campaign-sync.yaml"

    @property
    def store_path(self) -> Path:
        return self.root / "store.db"

    @property
    def mailings(self) -> Path:
        return self.root / "mailings"

    def on_server(self, server: SmtpTestServer) -> Dispatch:
        """This workspace and store, mailing through `server` instead."""
        other = dataclasses.replace(self, server_host=server.host, server_port=server.port)
        other.write_config()
        return other

    def write_config(
        self, *, rate: float | None = None, port: int | None = None, notify: str | None = None
    ) -> None:
        rate_line = f"\n    rate: {rate}" if rate else ""
        rate_line += f"\n    notify: [{notify}]" if notify else ""
        store_lines = (
            "store: store.db"
            if self.pg is None
            else f"store: {self.pg.url}\nstore_schema: {self.pg.name}"
        )
        self.config_path.write_text(
            store_lines
            + "\n"
            + textwrap.dedent(
                f"""\
                work_dir: var
                timezone: Europe/Berlin
                smtp:
                  host: {self.server_host}
                  port: {port or self.server_port}
                  from: {SENDER}
                  timeout: 5
                bounces:
                  hard_limit: 1
                  soft_limit: 3
                jobs:
                  welcome:
                    type: doi-dispatch
                    list: newsletter
                    mailings: mailings
                """
            )
            + rate_line
            + "\n",
            encoding="utf-8",
        )

    def mailing(
        self,
        name: str = "welcome.eml",
        *,
        date: str = "Mon, 02 Nov 2026 10:00:00 +0100",
        subject: str = "Welcome {{first_name}}",
        text: str = "Hello {{first_name}} {{last_name}}!\n",
        html: str = "<p>Hello <b>{{first_name}}</b>{{missing}}</p>",
    ) -> Path:
        msg = EmailMessage()
        msg["From"] = f"Newsletter <{SENDER}>"
        msg["Subject"] = subject
        msg["Date"] = date
        msg["Message-ID"] = f"<{name}@templates.example.com>"
        msg.set_content(text)
        msg.add_alternative(html, subtype="html")
        self.mailings.mkdir(exist_ok=True)
        path = self.mailings / name
        path.write_bytes(msg.as_bytes())
        return path

    def open(self) -> Store:
        """The store, opened (and created) as a run opens it."""
        if self.pg is None:
            return open_store(str(self.store_path))
        return open_store(self.pg.url, schema=self.pg.name)

    def seed(
        self,
        recipients: dict[str, str | None],
        fields: dict[str, dict[str, Any]] | None = None,
        *,
        status: dict[str, str] | None = None,
    ) -> None:
        """Put recipients (email → DOI time) into 'newsletter'; the job first ran at FIRST_RUN."""
        opened = self.open()
        conn = opened.conn
        try:
            with opened.transaction():
                conn.execute(
                    self._placeholders(
                        "INSERT INTO jobs (name, first_seen) VALUES ('welcome', ?) "
                        "ON CONFLICT DO NOTHING"
                    ),
                    (FIRST_RUN,),
                )
                conn.execute(
                    self._placeholders(
                        "INSERT INTO lists (name, created_at) VALUES ('newsletter', ?) "
                        "ON CONFLICT DO NOTHING"
                    ),
                    (FIRST_RUN,),
                )
                [list_id] = conn.execute(
                    "SELECT id FROM lists WHERE name = 'newsletter'"
                ).fetchone()
                for email, doi in recipients.items():
                    conn.execute(
                        self._placeholders(
                            "INSERT INTO recipients (list_id, email, status, fields, "
                            "doi_confirmed_at, created_at, updated_at) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)"
                        ),
                        (
                            list_id,
                            email,
                            (status or {}).get(email, "active"),
                            json.dumps((fields or {}).get(email, {})),
                            doi,
                            FIRST_RUN,
                            FIRST_RUN,
                        ),
                    )
        finally:
            opened.close()

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """Run one statement (`?` placeholders) in a transaction of its own."""
        opened = self.open()
        try:
            with opened.transaction():
                opened.conn.execute(self._placeholders(sql), params)
        finally:
            opened.close()

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of `sql` (`?` placeholders), read without opening the store as a run does."""
        if self.pg is None:
            conn = sqlite3.connect(self.store_path)
            try:
                return conn.execute(sql, params).fetchall()
            finally:
                conn.close()
        with self._pg() as conn:
            return [tuple(row) for row in conn.execute(self._placeholders(sql), params)]

    def _placeholders(self, sql: str) -> str:
        return sql if self.pg is None else sql.replace("%", "%%").replace("?", "%s")

    def _pg(self) -> psycopg.Connection[Any]:
        import psycopg

        assert self.pg is not None
        conn = psycopg.connect(self.pg.url, autocommit=True)
        conn.execute(f'SET search_path TO "{self.pg.name}"')
        return conn

    def dump(self) -> list[str]:
        """Every row of every table, for before/after comparisons."""
        if self.pg is None:
            conn = sqlite3.connect(self.store_path)
            try:
                return list(conn.iterdump())
            finally:
                conn.close()
        with self._pg() as conn:
            tables = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "ORDER BY tablename"
            ).fetchall()
            return [
                f"{table}: {row!r}"
                for (table,) in tables
                for row in conn.execute(f'SELECT * FROM "{table}" AS t ORDER BY t::text')
            ]

    def sends(self) -> dict[str, tuple[str, int]]:
        rows = self.query("SELECT email, state, attempts FROM sends WHERE job = 'welcome'")
        return {email: (state, attempts) for email, state, attempts in rows}

    def run(self, *, dry_run: bool = False) -> RunResult:
        config = config_module.load(str(self.config_path))
        return run_job(config, "welcome", "dispatch", RunOptions(dry_run=dry_run))

    def sessions_ended(self) -> None:
        """Wait until the server has ended the sessions of killed runs (on SQLite the kernel
        dropped their locks with the process). A killed client's session ends when its
        server process notices, a moment after the kill: until then its job lock and its
        run lock are held, and a rerun would rightly find the job busy and its sends alive."""
        if self.pg is None:
            return
        deadline = time.monotonic() + 30
        while self.query(ADVISORY_LOCKS_OF_THIS_SCHEMA) != [(0,)]:
            assert time.monotonic() < deadline, "the killed run's session did not end"
            time.sleep(0.01)


# The advisory locks runs hold in this store's schema: job locks (one bigint key, hashed from
# "<schema>/job/<job>") and the run locks of dispatch (two keys, the first the schema's).
ADVISORY_LOCKS_OF_THIS_SCHEMA = """
SELECT count(*) FROM pg_locks AS l
WHERE l.locktype = 'advisory' AND l.granted AND (
    (l.objsubid = 1 AND (l.classid::bigint << 32) | l.objid::bigint
        = hashtextextended(current_schema() || '/job/welcome', 0))
    OR (l.objsubid = 2 AND l.classid = hashtext(current_schema() || '/run')::oid))
"""


@pytest.fixture
def smtp() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as server:
        yield server


@pytest.fixture
def ws(
    tmp_path: Path, smtp: SmtpTestServer, store_kind: str, request: pytest.FixtureRequest
) -> Dispatch:
    pg = request.getfixturevalue("pg_schema") if store_kind == "postgres" else None
    workspace = Dispatch(tmp_path, smtp.host, smtp.port, pg)
    workspace.write_config()
    workspace.mailing()
    return workspace


def received(server: SmtpTestServer) -> Counter[str]:
    """How many messages each envelope recipient got."""
    return Counter(rcpt for message in server.messages for rcpt in message.rcpt_tos)


def counts(result: RunResult) -> dict[str, int]:
    return {name: result.counts[name] for name in ("sent", "skipped", "bounced", "unknown")}


# --------------------------------------------------------------------------- sending


def test_sends_latest_mailing_once_to_newly_confirmed(ws: Dispatch, smtp: SmtpTestServer) -> None:
    ws.mailing("a-newest.eml", date="Tue, 03 Nov 2026 09:00:00 +0000", subject="Newest")
    ws.mailing("z-older.eml", date="Tue, 03 Nov 2026 08:00:00 +0000", subject="Older")
    ws.seed({"anna@example.com": NEW_DOI, "ben@example.com": OLD_DOI, "carla@example.com": None})

    result = ws.run()

    assert (result.status, result.exit_code) == ("succeeded", 0)
    assert counts(result) == {"sent": 1, "skipped": 0, "bounced": 0, "unknown": 0}
    [message] = smtp.messages
    assert message.mail_from == SENDER
    assert message.rcpt_tos == ["anna@example.com"]
    parsed = message.message
    assert parsed["To"] == "anna@example.com"
    assert parsed["Subject"] == "Newest"
    assert parsed["Message-ID"].endswith("@example.com>")
    assert "templates" not in parsed["Message-ID"]  # our own, not the template's
    [(state, mailing, message_id)] = ws.query("SELECT state, mailing, message_id FROM sends")
    assert (state, mailing, message_id) == ("sent", "a-newest.eml", parsed["Message-ID"])
    assert ws.query("SELECT status, counts FROM runs") == [
        ("succeeded", json.dumps({"sent": 1, "skipped": 0, "bounced": 0, "unknown": 0}))
    ]

    again = ws.run()  # nobody new: nothing sent, even with a newer mailing in the folder
    ws.mailing("newer-still.eml", date="Wed, 04 Nov 2026 09:00:00 +0000")
    third = ws.run()
    assert counts(again) == counts(third) == {"sent": 0, "skipped": 0, "bounced": 0, "unknown": 0}
    assert len(smtp.messages) == 1


def test_new_confirmation_after_an_earlier_run_is_sent_next_run(
    ws: Dispatch, smtp: SmtpTestServer
) -> None:
    ws.seed({"anna@example.com": NEW_DOI})
    ws.run()
    ws.seed({"dora@example.com": "2026-11-20T08:00:00.000000+00:00"})

    result = ws.run()

    assert result.counts["sent"] == 1
    assert received(smtp) == Counter({"anna@example.com": 1, "dora@example.com": 1})


def test_first_run_of_a_new_job_only_mails_later_confirmations(
    ws: Dispatch, smtp: SmtpTestServer
) -> None:
    ws.seed({"anna@example.com": NEW_DOI})
    ws.execute("DELETE FROM jobs")  # the job never ran: its first run is the cut-off

    result = ws.run()

    assert counts(result) == {"sent": 0, "skipped": 0, "bounced": 0, "unknown": 0}
    assert smtp.messages == []
    [(first_seen,)] = ws.query("SELECT first_seen FROM jobs WHERE name = 'welcome'")
    assert first_seen == result.started


def test_personalisation_fills_fields_and_escapes_html(ws: Dispatch, smtp: SmtpTestServer) -> None:
    ws.seed(
        {"anna@example.com": NEW_DOI, "bo@example.com": NEW_DOI},
        {
            "anna@example.com": {"first_name": "Anna <b>&", "last_name": "Ärger"},
            "bo@example.com": {},
        },
    )

    ws.run()

    by_rcpt = {m.rcpt_tos[0]: m for m in smtp.messages}
    anna = by_rcpt["anna@example.com"]
    assert anna.message["Subject"] == "Welcome Anna <b>&"
    assert anna.text == "Hello Anna <b>& Ärger!\n"
    html = anna.message.get_body(preferencelist=("html",))
    assert html is not None
    assert html.get_content().strip() == "<p>Hello <b>Anna &lt;b&gt;&amp;</b></p>"
    bo = by_rcpt["bo@example.com"]
    assert bo.message["Subject"] == "Welcome"
    assert bo.text == "Hello  !\n"
    for message in smtp.messages:
        assert b"{{" not in message.data
        assert all(not part.defects for part in message.message.walk())


def test_exclusions_are_skipped_and_never_sent(ws: Dispatch, smtp: SmtpTestServer) -> None:
    later = "2026-11-12T00:00:00.000000+00:00"
    ws.seed(
        {
            "ok@example.com": NEW_DOI,
            "unsub-status@example.com": NEW_DOI,
            "unsub-row@example.com": NEW_DOI,
            "unsub-other-list@example.com": NEW_DOI,
            "reconfirmed@example.com": later,
            "someone@blocked.example": NEW_DOI,
            "hard@example.com": NEW_DOI,
            "soft@example.com": NEW_DOI,
            "removed@example.com": NEW_DOI,
            "old@example.com": OLD_DOI,
        },
        status={"unsub-status@example.com": "unsubscribed", "removed@example.com": "removed"},
    )
    ws.execute(
        "INSERT INTO unsubscribers (email, list, unsubscribed_at) VALUES "
        "('unsub-row@example.com', '', ?), ('unsub-other-list@example.com', 'other', ?), "
        "('reconfirmed@example.com', 'newsletter', ?)",
        (NEW_DOI, NEW_DOI, NEW_DOI),
    )
    ws.execute(
        "INSERT INTO blocklist (pattern, created_at, modified_at) "
        "VALUES ('*@blocked.example', ?, ?)",
        (FIRST_RUN, FIRST_RUN),
    )
    ws.execute(  # hard_limit 1, soft_limit 3 in this config
        "INSERT INTO bounces (email, type, bounced_at) VALUES ('hard@example.com', 'hard', ?), "
        "('soft@example.com', 'soft', ?), ('soft@example.com', 'soft', ?), "
        "('soft@example.com', 'soft', ?)",
        (FIRST_RUN,) * 4,
    )

    result = ws.run()

    assert received(smtp) == Counter(
        {
            "ok@example.com": 1,
            "unsub-other-list@example.com": 1,
            "reconfirmed@example.com": 1,
        }
    )
    assert counts(result) == {"sent": 3, "skipped": 5, "bounced": 0, "unknown": 0}
    assert set(ws.sends()) == set(received(smtp))


# --------------------------------------------------------------------------- future confirmations

FUTURE_DOI = "2099-01-01T00:00:00.000000+00:00"


def with_import_and_export_jobs(ws: Dispatch) -> None:
    """Add the jobs a partner's files go through, and an active export onto a local folder."""
    (ws.root / "out").mkdir()
    extra = (
        "  rec: {type: recipient-import, list: newsletter, max_rejects: 50%}\n"
        "  unsub: {type: unsubscriber-import}\n"
        "  active:\n"
        "    {type: recipient-export, list: newsletter, fields: [email],"
        " target: {server: out, path: /active.csv}}\n"
        "servers:\n  out: {type: local, path: out}\n"
    )
    ws.config_path.write_text(ws.config_path.read_text() + extra, encoding="utf-8")


def cli(ws: Dispatch, *args: str, file: str | None = None) -> dict[str, Any]:
    """The installed command with --json, as cron runs it (`file`: the import's content)."""
    if file is not None:
        path = ws.root / f"in-{len(list(ws.root.glob('in-*')))}.csv"
        path.write_text(file, encoding="utf-8")
        args = (*args, "--file", str(path))
    done = subprocess.run(
        ["campaign-sync", "--config", str(ws.config_path), "--json", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def mailed_and_exported(ws: Dispatch) -> tuple[Counter[str], str, Any]:
    """A dispatch run's counts, the active export and the `lists` figures for newsletter."""
    dispatched = Counter(cli(ws, "dispatch", "welcome")["counts"])
    cli(ws, "export", "active")
    exported = (ws.root / "out" / "active.csv").read_bytes().decode("utf-8")
    [figures] = [entry for entry in cli(ws, "lists") if entry["list"] == "newsletter"]
    return dispatched, exported, (figures["active"], figures["unsubscribed"])


def test_a_future_confirmation_is_rejected_and_resubscribes_nobody(
    ws: Dispatch, smtp: SmtpTestServer
) -> None:
    """The reported case: after anna unsubscribed, a file confirms her for 2099."""
    with_import_and_export_jobs(ws)
    ws.execute("DELETE FROM jobs")
    cli(ws, "dispatch", "welcome")  # the first run: later confirmations are new
    cli(ws, "import", "rec", file="email\nanna@example.com\nben@example.com\n")
    assert (
        cli(ws, "import", "unsub", file="email\nanna@example.com\n")["counts"]["unsubscribed"] == 1
    )
    now = datetime.datetime.now(datetime.timezone.utc).isoformat()
    doc = cli(
        ws,
        "import",
        "rec",
        file=f"email,doi_confirmed_at\nanna@example.com,2099-01-01\nben@example.com,{now}\n",
    )
    assert (doc["counts"]["rejected"], doc["counts"]["updated"]) == (1, 1)
    assert doc["first_rejects"] == [
        {
            "line": 2,
            "reason": "doi_confirmed_at: '2099-01-01' is in the future "
            "(more than 5 minutes after this run)",
            "row": ["anna@example.com", "2099-01-01"],
        }
    ]
    assert ws.query(
        "SELECT email, status, doi_confirmed_at IS NULL FROM recipients ORDER BY email"
    ) == [
        ("anna@example.com", "unsubscribed", 1),
        ("ben@example.com", "active", 0),
    ]
    dispatched, exported, figures = mailed_and_exported(ws)
    assert (dispatched["sent"], dispatched["skipped"]) == (1, 0)
    assert received(smtp) == Counter({"ben@example.com": 1})
    assert exported == "email\r\nben@example.com\r\n"
    assert figures == (1, 1)


def test_an_unsubscription_outranks_a_future_confirmation_already_stored(
    ws: Dispatch, smtp: SmtpTestServer
) -> None:
    """A store from an older version: anna unsubscribed, then a file confirmed her for 2099
    and made her active again. That date is no real moment: her unsubscription on record
    holds for dispatch, exports and `lists`, and unsubscribing her today marks her record."""
    with_import_and_export_jobs(ws)
    ws.execute("DELETE FROM jobs")
    cli(ws, "dispatch", "welcome")
    cli(ws, "import", "rec", file="email\nanna@example.com\nben@example.com\n")
    cli(ws, "import", "unsub", file="email,date\nanna@example.com,2026-01-01\n")
    ws.execute(
        "UPDATE recipients SET status = 'active', doi_confirmed_at = ? WHERE email = ?",
        (FUTURE_DOI, "anna@example.com"),
    )

    dispatched, exported, figures = mailed_and_exported(ws)
    assert (dispatched["sent"], dispatched["skipped"]) == (0, 1)
    assert exported == "email\r\nben@example.com\r\n"
    assert figures == (1, 1)

    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    doc = cli(ws, "import", "unsub", file=f"email,date\nanna@example.com,{today}\n")
    assert (doc["counts"]["updated"], doc["counts"]["unsubscribed"]) == (1, 1)
    assert ws.query("SELECT status FROM recipients WHERE email = 'anna@example.com'") == [
        ("unsubscribed",)
    ]
    dispatched, exported, figures = mailed_and_exported(ws)
    assert (dispatched["sent"], dispatched["skipped"]) == (0, 1)
    assert exported == "email\r\nben@example.com\r\n"
    assert figures == (1, 1)
    assert smtp.messages == []


# --------------------------------------------------------------------------- SMTP outcomes


def test_5xx_is_a_hard_bounce_and_never_retried(ws: Dispatch, smtp: SmtpTestServer) -> None:
    ws.seed({"gone@example.com": NEW_DOI, "ok@example.com": NEW_DOI})
    smtp.reject("gone@example.com", 550, "No such user")

    result = ws.run()

    assert counts(result) == {"sent": 1, "skipped": 0, "bounced": 1, "unknown": 0}
    assert received(smtp) == Counter({"ok@example.com": 1})
    assert ws.query("SELECT email, type, source, detail FROM bounces") == [
        ("gone@example.com", "hard", "welcome", "550 No such user")
    ]
    assert ws.sends() == {"gone@example.com": ("failed", 1), "ok@example.com": ("sent", 1)}

    smtp.clear()  # the address would work now; it must still not be retried
    again = ws.run()
    assert counts(again) == {"sent": 0, "skipped": 0, "bounced": 0, "unknown": 0}
    assert smtp.messages == []
    assert len(ws.query("SELECT * FROM bounces")) == 1


def test_4xx_is_retried_next_run_and_counted_as_soft_bounce(
    ws: Dispatch, smtp: SmtpTestServer
) -> None:
    ws.seed({"busy@example.com": NEW_DOI})
    smtp.reject("busy@example.com", 451, "Greylisted")

    first = ws.run()
    second = ws.run()

    assert counts(first) == counts(second) == {"sent": 0, "skipped": 0, "bounced": 1, "unknown": 0}
    assert ws.sends() == {"busy@example.com": ("deferred", 2)}
    assert ws.query("SELECT type, detail FROM bounces") == [("soft", "451 Greylisted")] * 2

    smtp.clear()
    third = ws.run()
    assert counts(third) == {"sent": 1, "skipped": 0, "bounced": 0, "unknown": 0}
    assert received(smtp) == Counter({"busy@example.com": 1})
    assert ws.sends() == {"busy@example.com": ("sent", 3)}


def test_repeated_4xx_reaches_soft_limit_and_stops_retrying(
    ws: Dispatch, smtp: SmtpTestServer
) -> None:
    ws.seed({"busy@example.com": NEW_DOI})
    smtp.reject("busy@example.com", 452, "Mailbox full")

    results = [ws.run() for _ in range(4)]  # soft_limit is 3 in this config

    assert [r.counts["bounced"] for r in results] == [1, 1, 1, 0]
    assert results[3].counts["skipped"] == 1
    assert ws.sends() == {"busy@example.com": ("deferred", 3)}


def test_connection_failure_fails_the_run_and_claims_nobody(
    ws: Dispatch, smtp: SmtpTestServer
) -> None:
    ws.seed({"anna@example.com": NEW_DOI})
    with ClosedPort() as closed:
        ws.write_config(port=closed.port)
        result = ws.run()

    assert (result.status, result.exit_code) == ("failed", 1)
    assert result.error is not None and "connection refused" in result.error
    assert ws.sends() == {}
    assert ws.query("SELECT status FROM runs") == [("failed",)]

    ws.write_config()
    assert ws.run().counts["sent"] == 1
    assert received(smtp) == Counter({"anna@example.com": 1})


def test_no_password_without_tls_fails_the_run_and_claims_nobody(ws: Dispatch) -> None:
    # validate refuses this config; a config built around it meets the mail code's refusal.
    with SmtpTestServer(auth={"mailer": "pw-long-enough"}, auth_require_tls=False) as server:
        ws = ws.on_server(server)
        ws.seed({"anna@example.com": NEW_DOI})
        config = config_module.load(str(ws.config_path))
        assert config.smtp is not None
        smtp = dataclasses.replace(config.smtp, user="mailer", password="pw-long-enough")
        config = dataclasses.replace(config, smtp=smtp)
        result = run_job(config, "welcome", "dispatch", RunOptions())
        assert server.auth_commands == [] and server.messages == []
    assert (result.status, result.exit_code) == ("failed", 1)
    assert result.error == (
        f"SMTP server {server.host}:{server.port}: not sending the password over a connection "
        "without TLS: set starttls: true (or ssl: true) in the smtp block; for a relay on this "
        "machine, allow_plaintext_auth: true"
    )
    assert ws.sends() == {}


def test_session_lost_after_data_is_unknown_and_not_resent(
    ws: Dispatch, smtp: SmtpTestServer
) -> None:
    ws.seed({"a@example.com": NEW_DOI, "b@example.com": "2026-11-11T00:00:00.000000+00:00"})
    smtp.drop_after_data = True  # takes the first message, then hangs up without a reply

    result = ws.run()

    assert (result.status, result.exit_code) == ("failed", 1)
    assert counts(result) == {"sent": 0, "skipped": 0, "bounced": 0, "unknown": 1}
    assert ws.sends() == {"a@example.com": ("unknown", 1)}

    smtp.drop_after_data = False
    again = ws.run()
    assert counts(again) == {"sent": 1, "skipped": 0, "bounced": 0, "unknown": 0}
    assert received(smtp) == Counter({"a@example.com": 1, "b@example.com": 1})


def test_rate_limits_messages_per_second(ws: Dispatch, smtp: SmtpTestServer) -> None:
    ws.write_config(rate=20)
    ws.seed({f"r{i}@example.com": NEW_DOI for i in range(6)})

    clock = time.monotonic()
    result = ws.run()
    elapsed = time.monotonic() - clock

    assert result.counts["sent"] == 6
    assert elapsed >= 5 / 20  # six messages: five gaps of 1/20 s


def test_missing_mailing_fails_clearly(ws: Dispatch, smtp: SmtpTestServer) -> None:
    ws.seed({"anna@example.com": NEW_DOI})
    for path in ws.mailings.iterdir():
        path.unlink()

    result = ws.run()

    assert (result.status, result.exit_code) == ("failed", 1)
    assert result.error == f"no mailing: {ws.mailings} holds no .eml file"
    assert smtp.messages == [] and ws.sends() == {}


@pytest.mark.parametrize("dry_run", [False, True])
def test_unknown_charset_fails_the_run_clearly_and_claims_nobody(
    ws: Dispatch, smtp: SmtpTestServer, dry_run: bool
) -> None:
    ws.seed({"anna@example.com": NEW_DOI})
    path = ws.mailings / "welcome.eml"
    path.write_bytes(path.read_bytes().replace(b'charset="utf-8"', b"charset=x-bogus", 1))

    result = ws.run(dry_run=dry_run)

    assert (result.status, result.exit_code) == ("failed", 1)
    assert result.error == (
        f"mailing {path}: part 2 (text/plain) declares unknown charset 'x-bogus'"
    )
    assert smtp.messages == [] and ws.sends() == {}


def test_a_recipient_whose_message_cannot_be_made_is_skipped_not_the_run(
    ws: Dispatch, smtp: SmtpTestServer
) -> None:
    ws.seed(
        {"anna@example.com": NEW_DOI, "bo@example.com": NEW_DOI},
        {"anna@example.com": {"code": "?utf-8?q?a=0D=0AB?="}, "bo@example.com": {"code": "7"}},
    )
    path = ws.mailings / "welcome.eml"
    path.write_bytes(path.read_bytes().replace(b"Subject:", b"X-Code: ={{code}}\nSubject:", 1))

    result = ws.run()

    assert result.status == "succeeded"
    assert counts(result) == {"sent": 1, "skipped": 1, "bounced": 0, "unknown": 0}
    assert result.warnings == [
        "not sent to anna@example.com: cannot personalise: the X-Code header would hold a "
        "control character or line break"
    ]
    assert received(smtp) == Counter({"bo@example.com": 1})
    assert "anna@example.com" not in ws.sends()  # not claimed: tried again once mended


def test_a_mailing_that_cannot_make_any_message_fails_the_run(
    ws: Dispatch, smtp: SmtpTestServer
) -> None:
    ws.seed({"anna@example.com": NEW_DOI, "bo@example.com": NEW_DOI})
    path = ws.mailings / "welcome.eml"
    path.write_bytes(path.read_bytes().replace(b"Subject:", b"Subject: one\nSubject:", 1))

    result = ws.run()

    assert (result.status, result.exit_code) == ("failed", 1)
    assert result.error is not None
    assert result.error.startswith(f"mailing {path}: There may be at most 1 Subject headers")
    assert smtp.messages == [] and ws.sends() == {}


def test_dry_run_lists_recipients_and_changes_nothing(ws: Dispatch, smtp: SmtpTestServer) -> None:
    ws.seed(
        {"anna@example.com": NEW_DOI, "bo@example.com": NEW_DOI, "old@example.com": OLD_DOI},
        {"anna@example.com": {"first_name": "Anna"}},
    )
    before = ws.dump()

    result = ws.run(dry_run=True)

    assert result.status == "succeeded" and result.dry_run
    assert counts(result) == {"sent": 2, "skipped": 0, "bounced": 0, "unknown": 0}
    assert result.message is not None
    assert result.message.splitlines() == [
        "dry run: nothing was sent or changed; mailing welcome.eml "
        "(Date 2026-11-02T10:00:00+01:00) would go to 2 recipient(s), 0 skipped",
        "  anna@example.com: Welcome Anna",
        "  bo@example.com: Welcome",
    ]
    assert smtp.messages == []
    assert ws.dump() == before


def test_lock_refuses_an_overlapping_run(ws: Dispatch) -> None:
    ws.seed({"anna@example.com": NEW_DOI})
    config = config_module.load(str(ws.config_path))
    # Another run's lock, both parts: a file on SQLite, a lock of the server on PostgreSQL.
    holder = ws.open()
    try:
        with (
            type(holder).job_lock_before_opening(config.work_dir, "welcome"),
            holder.job_lock(config.work_dir, "welcome"),
            pytest.raises(JobLocked) as info,
        ):
            ws.run()
    finally:
        holder.close()
    assert info.value.exit_code == 75
    assert ws.sends() == {}
    assert ws.query("SELECT count(*) FROM runs") == [(0,)]


# --------------------------------------------------------------------------- crashes


# Runs the job in a child process with the tree's code. `point` chooses where the child
# kills itself with SIGKILL: before the n-th SMTP transaction (claimed, nothing sent), after it
# (sent, not yet recorded), or after recording the n-th outcome. `block` makes the n-th
# transaction wait for a file, to hold a run in the middle of a send.
CHILD = """
import json, os, signal, sys, time
sys.path.insert(0, {tree!r})
from campaign_sync import config, dispatch
from campaign_sync.dispatch import smtp as mail
from campaign_sync.ops.runner import RunOptions, run_job

point, at, flag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
calls = {{"send": 0, "settle": 0}}
real_send, real_settle = mail.SmtpSession.send, dispatch.settle

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def send(self, message, recipients):
    calls["send"] += 1
    if calls["send"] == at and point == "before-send":
        die()
    if calls["send"] == at and point == "block":
        open(flag + ".waiting", "w").close()
        while not os.path.exists(flag):
            time.sleep(0.01)
    outcome = real_send(self, message, recipients)
    if calls["send"] == at and point == "after-send":
        die()
    return outcome

def settle(*args, **kwargs):
    real_settle(*args, **kwargs)
    calls["settle"] += 1
    if calls["settle"] == at and point == "after-settle":
        die()

mail.SmtpSession.send = send
dispatch.settle = settle
if point == "unlocked":  # a second run that ignores the lock: state-level safety only
    from campaign_sync.ops import runner
    from campaign_sync.store.open import open_store
    cfg = config.load({config!r})
    store = open_store(cfg.store, schema=cfg.store_schema)
    result = runner._run_locked(cfg, cfg.job("welcome"), RunOptions(), store)
else:
    result = run_job(config.load({config!r}), "welcome", "dispatch", RunOptions())
print(json.dumps(result.as_dict()))
"""


# The command line with this tree's engine first on the path.
CLI = f"import sys; sys.path.insert(0, {TREE!r}); from campaign_sync_cli.main import main; main()"


def child(ws: Dispatch, point: str, at: int = 0, flag: str = "") -> subprocess.Popen[str]:
    code = CHILD.format(tree=TREE, config=str(ws.config_path))
    return subprocess.Popen(
        [sys.executable, "-c", code, point, str(at), flag or str(ws.root / "flag")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return json.loads(out)


def recipients(n: int) -> dict[str, str]:
    # Distinct DOI times make the send order (by confirmation time) predictable.
    return {f"r{i:02d}@example.com": f"2026-11-10T12:00:{i:02d}.000000+00:00" for i in range(n)}


@pytest.mark.parametrize(
    ("point", "at", "delivered_before_kill"),
    [
        ("before-send", 1, 0),  # claimed, killed before the SMTP transaction
        ("before-send", 3, 2),
        ("after-send", 1, 1),  # the server has it, the store says `sending`
        ("after-send", 4, 4),
        ("after-settle", 2, 2),  # killed between two recipients
    ],
)
def test_kill_9_then_rerun_sends_nobody_twice(
    ws: Dispatch, smtp: SmtpTestServer, point: str, at: int, delivered_before_kill: int
) -> None:
    due = recipients(6)
    ws.seed(due)

    proc = child(ws, point, at)
    proc.communicate(timeout=60)
    ws.sessions_ended()
    assert proc.returncode == -signal.SIGKILL
    assert sum(received(smtp).values()) == delivered_before_kill

    rerun = ws.run()

    got = received(smtp)
    unknown = {email for email, (state, _) in ws.sends().items() if state == "unknown"}
    expected_unknown = 0 if point == "after-settle" else 1
    assert rerun.status == "succeeded"
    assert rerun.counts["unknown"] == len(unknown) == expected_unknown
    assert max(got.values()) == 1  # nobody twice
    assert set(due) - set(got) <= unknown  # nobody missing except reported unknowns
    assert sum(got.values()) == 6 - (1 if point == "before-send" else 0)
    for email in unknown:
        assert any(email in warning for warning in rerun.warnings)
    assert ws.query("SELECT status FROM runs ORDER BY id") == [("interrupted",), ("succeeded",)]
    # A further run has nothing left to report or send.
    assert counts(ws.run()) == {"sent": 0, "skipped": 0, "bounced": 0, "unknown": 0}
    assert received(smtp) == got


def kill_when_data_arrives(server: SmtpTestServer, victim: list[int], nth: int) -> None:
    """Make the server SIGKILL the process in `victim` when it has taken its nth message,
    before it replies: the client dies with its send handed over but not confirmed."""
    handler = server._handler
    real = type(handler).handle_DATA

    async def handle_data(srv: Any, session: Any, envelope: Any) -> str:
        reply = await real(handler, srv, session, envelope)
        if len(server.messages) == nth and victim:
            os.kill(victim[0], signal.SIGKILL)
        return reply

    handler.handle_DATA = handle_data  # type: ignore[method-assign]


def test_repeated_kills_at_arbitrary_moments(ws: Dispatch, smtp: SmtpTestServer) -> None:
    """Kill -9 from outside three times: inside the DATA exchange, at a moment set by the
    clock, and between two sends; then finish with a normal run."""
    due = recipients(30)
    ws.seed(due)
    ws.write_config(rate=40)
    victim: list[int] = []
    kill_when_data_arrives(smtp, victim, nth=4)
    for mode in ("in-data", "timer", "poll"):
        proc = child(ws, "none")
        victim[:] = [proc.pid] if mode == "in-data" else []
        deadline = time.monotonic() + 30
        if mode == "timer":
            # Rate-limited to 40 a second, the 26 sends left take at least 0.65 s after
            # start-up: a kill after 0.45 s lands before the end, whatever the machine's load.
            time.sleep(0.45)
        elif mode == "poll":
            while sum(received(smtp).values()) < 19 and time.monotonic() < deadline:
                time.sleep(0.002)
        else:
            proc.wait(timeout=30)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        ws.sessions_ended()
        assert proc.returncode == -signal.SIGKILL

    final = ws.run()

    got = received(smtp)
    states = ws.sends()
    unknown = {email for email, (state, _) in states.items() if state == "unknown"}
    assert final.status == "succeeded"
    assert max(got.values()) == 1  # nobody twice
    assert set(due) - set(got) <= unknown  # nobody missing except unknowns
    assert set(got) | unknown == set(due)
    assert 1 <= len(unknown) <= 3  # the in-DATA kill, at most one more per other kill
    assert "r03@example.com" in unknown and got["r03@example.com"] == 1
    assert {state for email, (state, _) in states.items() if email not in unknown} == {"sent"}
    for (detail,) in ws.query("SELECT detail FROM sends WHERE state = 'unknown'"):
        assert detail == "the run ended during the SMTP transaction"
    assert counts(ws.run()) == {"sent": 0, "skipped": 0, "bounced": 0, "unknown": 0}


def test_overlapping_runs_without_the_lock_still_send_once(
    ws: Dispatch, smtp: SmtpTestServer
) -> None:
    due = recipients(5)
    ws.seed(due)
    flag = str(ws.root / "release")
    first = child(ws, "block", 2, flag)  # holds r01 claimed, mid-send
    deadline = time.monotonic() + 30
    while not os.path.exists(flag + ".waiting") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert os.path.exists(flag + ".waiting")

    # The lock refuses a normal second run, in the engine and as cron runs the command ...
    with pytest.raises(JobLocked):
        ws.run()
    cli = subprocess.run(
        [sys.executable, "-c", CLI, "--config", str(ws.config_path), "dispatch", "welcome"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 75, cli.stderr
    assert "another run of 'welcome' is in progress" in cli.stderr
    # ... and a run that bypasses it must not take over the send the first run holds.
    second = finished(child(ws, "unlocked"))
    Path(flag).touch()
    first_result = finished(first)

    assert received(smtp) == Counter(dict.fromkeys(due, 1))
    # The bypassing run sent the three nobody held and left the held one alone (no false
    # "unknown"); the first run sent its two and found the rest taken.
    assert (second["counts"]["sent"], second["counts"]["unknown"]) == (3, 0)
    assert (first_result["counts"]["sent"], first_result["counts"]["unknown"]) == (2, 0)
    assert {state for state, _ in ws.sends().values()} == {"sent"}


def test_run_that_died_holding_a_send_is_reported_even_if_interrupted_by_signal(
    ws: Dispatch, smtp: SmtpTestServer
) -> None:
    """SIGTERM (cron's timeout) is as abrupt as kill -9 for a send in flight."""
    due = recipients(3)
    ws.seed(due)
    flag = str(ws.root / "never")
    proc = child(ws, "block", 1, flag)
    deadline = time.monotonic() + 30
    while not os.path.exists(flag + ".waiting") and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    ws.sessions_ended()

    rerun = ws.run()

    assert counts(rerun) == {"sent": 2, "skipped": 0, "bounced": 0, "unknown": 1}
    assert received(smtp) == Counter({"r01@example.com": 1, "r02@example.com": 1})
    assert ws.sends()["r00@example.com"] == ("unknown", 1)


@pytest.mark.stores("sqlite")  # about upgrading an SQLite file from its first schema version
def test_store_migration_keeps_existing_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for statement in store._statements(store.MIGRATIONS[0]):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO jobs (name, first_seen) VALUES ('welcome', ?)", (FIRST_RUN,))
    conn.commit()
    conn.close()

    migrated = store.connect(str(path))
    try:
        assert migrated.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
        assert migrated.execute("SELECT name FROM jobs").fetchall() == [("welcome",)]
        assert migrated.execute("SELECT count(*) FROM sends").fetchone() == (0,)
    finally:
        migrated.close()


# --------------------------------------------------------------------------- more outcomes


def test_nobody_due_needs_no_smtp_connection(ws: Dispatch) -> None:
    ws.seed({"old@example.com": OLD_DOI})
    with ClosedPort() as closed:
        ws.write_config(port=closed.port)
        result = ws.run()
    assert (result.status, counts(result)) == (
        "succeeded",
        {"sent": 0, "skipped": 0, "bounced": 0, "unknown": 0},
    )


def test_421_at_rcpt_fails_the_run_and_retries_without_a_bounce(
    ws: Dispatch, smtp: SmtpTestServer
) -> None:
    ws.write_config(notify="ops@example.com")
    ws.seed({"a@example.com": NEW_DOI})
    smtp.reject("a@example.com", 421, "Service shutting down")

    result = ws.run()

    assert (result.status, result.exit_code) == ("failed", 1)
    assert result.error is not None and "421 Service shutting down" in result.error
    assert ws.sends() == {"a@example.com": ("deferred", 1)}
    assert ws.query("SELECT count(*) FROM bounces") == [(0,)]
    [notice] = smtp.messages  # the failure notice, on a new session
    assert notice.rcpt_tos == ["ops@example.com"]
    assert "421 Service shutting down" in notice.text
    smtp.messages.clear()

    smtp.clear()
    assert ws.run().counts["sent"] == 1
    assert received(smtp) == Counter({"a@example.com": 1})


def test_message_refused_after_data_is_a_hard_bounce(ws: Dispatch, smtp: SmtpTestServer) -> None:
    ws.seed({"a@example.com": NEW_DOI})
    smtp.reject_data(554, "Spam detected")

    result = ws.run()

    assert counts(result) == {"sent": 0, "skipped": 0, "bounced": 1, "unknown": 0}
    assert ws.sends() == {"a@example.com": ("failed", 1)}
    assert ws.query("SELECT email, type, detail FROM bounces") == [
        ("a@example.com", "hard", "554 Spam detected")
    ]


def test_address_the_session_cannot_carry_is_skipped_not_bounced(ws: Dispatch) -> None:
    with SmtpTestServer(smtputf8=False) as server:
        ws = ws.on_server(server)
        ws.seed({"jürgen@example.com": NEW_DOI, "ok@example.com": NEW_DOI})

        result = ws.run()

        assert counts(result) == {"sent": 1, "skipped": 1, "bounced": 0, "unknown": 0}
        assert received(server) == Counter({"ok@example.com": 1})
    assert ws.sends()["jürgen@example.com"] == ("deferred", 1)
    assert ws.query("SELECT count(*) FROM bounces") == [(0,)]
    assert any("jürgen@example.com" in warning for warning in result.warnings)


def test_idn_recipient_without_smtputf8_gets_a_punycode_to_header(ws: Dispatch) -> None:
    with SmtpTestServer(smtputf8=False) as server:
        ws = ws.on_server(server)
        ws.seed({"idn2@bücher.example": NEW_DOI})

        result = ws.run()

        assert counts(result) == {"sent": 1, "skipped": 0, "bounced": 0, "unknown": 0}
        [message] = server.messages
    assert message.rcpt_tos == ["idn2@xn--bcher-kva.example"]
    assert b"\r\nTo: idn2@xn--bcher-kva.example\r\n" in message.data


def test_dry_run_before_the_first_run_says_why_nobody_is_due(
    ws: Dispatch, smtp: SmtpTestServer
) -> None:
    ws.seed({"anna@example.com": NEW_DOI})
    ws.execute("DELETE FROM jobs")

    result = ws.run(dry_run=True)

    assert result.counts["sent"] == 0
    assert result.message is not None
    assert result.message.endswith(
        "(the job has never run: its first run sets the cut-off, and only confirmations "
        "after it are sent)"
    )
    assert ws.query("SELECT count(*) FROM jobs") == [(0,)]


def test_dry_run_reports_a_dead_send_without_settling_it(
    ws: Dispatch, smtp: SmtpTestServer
) -> None:
    ws.seed(recipients(2))
    proc = child(ws, "before-send", 1)
    proc.communicate(timeout=60)
    ws.sessions_ended()

    dry = ws.run(dry_run=True)

    assert (dry.counts["unknown"], dry.counts["sent"]) == (1, 1)
    assert ws.sends() == {"r00@example.com": ("sending", 1)}
    real = ws.run()
    assert (real.counts["unknown"], real.counts["sent"]) == (1, 1)
    assert ws.sends() == {"r00@example.com": ("unknown", 1), "r01@example.com": ("sent", 1)}
