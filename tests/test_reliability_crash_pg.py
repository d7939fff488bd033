"""Crash safety on a PostgreSQL store: SIGKILL at seeded points of an export and a dispatch.

The SQLite twin is tests/test_reliability_crash.py; the import's kills on PostgreSQL are
tests/test_import_pg_kill.py (one per phase, aimed by the statement the server is running)
and tests/test_pg_hosts.py (a whole host killed). Kill points are drawn as there: a seeded,
stratified schedule over the I/O of an uninterrupted run, so a loaded machine moves no kill
into another phase. After each kill the test checks what the product promises:

- the partner sees last week's file or the complete new one under the final name;
- an export changes no data; a dispatch mails nobody twice, and its rerun converges;
- the killed run reads `interrupted` (or `succeeded` when the kill came after its commit),
  and the server ends the dead session, so its job lock is free for the next run.

RELIABILITY_TRIALS overrides the number of trials (20) for a quicker local loop.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from faults import (
    EXIT_OK,
    Kill,
    generate_recipients,
    io_of_run,
    json_out,
    kill_at_io,
    run_cli,
    seeded_points,
    start_cli,
)
from pgfixtures import _as_user
from pgserver import APP_ROLE
from smtp_server import SmtpTestServer
from test_reliability_crash import DISPATCH_RECIPIENTS, FIRST_SEEN, _mailing, _received

TRIALS = int(os.environ.get("RELIABILITY_TRIALS", "20"))
EXPORT_ROWS = 60_000
SEED = 20261207
MIN_KILLED = TRIALS * 3 // 5  # as in the SQLite twin: room for a kill that comes too late
OLD_EXPORT = b"email,first_name\nold@example.com,Old\n"
WAIT = 120.0  # for the server to end a dead client's session; seconds, generous

CONFIG = """\
store: {url}
store_schema: {schema}
work_dir: var
timezone: Europe/Berlin
servers:
  inbox: {{type: local, path: inbox}}
smtp: {{host: {smtp_host}, port: {smtp_port}, from: news@example.com, timeout: 5}}
jobs:
  big-import:
    type: recipient-import
    list: newsletter
    source: {{server: inbox, path: /import/big.csv}}
  list-export:
    type: recipient-export
    list: newsletter
    target: {{server: inbox, path: /export/newsletter.csv}}
    fields: [email, first_name, last_name, city, zip]
  welcome:
    type: doi-dispatch
    list: newsletter
    mailings: mailings
"""


@dataclass
class Outcome:
    kill: Kill
    state: str  # "before" | "after" | "partial" (dispatch)
    run_status: str | None


class Schemas:
    """Fresh schemas owned by the `campaign` role on the suite's server, dropped at the end."""

    def __init__(self, admin_url: str) -> None:
        import psycopg

        self.admin = psycopg.connect(admin_url, autocommit=True)
        self.app_url = _as_user(admin_url, APP_ROLE)
        self.made: list[str] = []

    def new(self, stem: str) -> str:
        name = f"crash_{os.getpid()}_{len(self.made)}_{stem}"
        self.admin.execute(f'CREATE SCHEMA "{name}" AUTHORIZATION {APP_ROLE}')
        self.made.append(name)
        return name

    def query(self, schema: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        self.admin.execute(f'SET search_path TO "{schema}"')
        cursor = self.admin.execute(sql, params)
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []

    def close(self) -> None:
        for name in self.made:
            self.admin.execute(f'DROP SCHEMA "{name}" CASCADE')
        self.admin.close()


@pytest.fixture(scope="module")
def schemas(pg_url: str) -> Iterator[Schemas]:
    made = Schemas(pg_url)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as server:
        yield server


def _config(root: Path, schemas: Schemas, schema: str, smtp: SmtpTestServer) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "inbox").mkdir(exist_ok=True)
    path = root / "campaign-sync.yaml"
    path.write_text(
        CONFIG.format(url=schemas.app_url, schema=schema, smtp_host=smtp.host, smtp_port=smtp.port),
        encoding="utf-8",
    )
    return path


def _digest(schemas: Schemas, schema: str) -> tuple[int, str]:
    """(members, a sum over every member's columns): tells a changed list from the same."""
    row = schemas.query(
        schema,
        "SELECT count(*), coalesce(sum(length(email) + length(fields::text) + length(status) "
        "+ coalesce(length(doi_confirmed_at), 0)), 0) FROM recipients",
    )[0]
    return int(row[0]), str(row[1])


def _last_run(config: Path, job: str, started_after: int) -> str | None:
    """The status `history` shows for the newest run of `job` above `started_after`."""
    done = run_cli(config, "--json", "history", job, "--limit", "1")
    assert done.returncode == EXIT_OK, done.stderr
    runs = json_out(done)
    if not runs or runs[0]["run_id"] <= started_after:
        return None
    return str(runs[0]["status"])


def _max_run_id(schemas: Schemas, schema: str) -> int:
    return int(schemas.query(schema, "SELECT coalesce(max(id), 0) FROM runs")[0][0])


def _no_session_left(schemas: Schemas) -> None:
    """The server has ended every campaign-sync session (so every advisory lock is free)."""
    deadline = time.monotonic() + WAIT
    while True:
        left = schemas.query(
            "public",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'campaign-sync' "
            "AND pid <> pg_backend_pid()",
        )[0][0]
        if left == 0:
            return
        assert time.monotonic() < deadline, f"{left} dead campaign-sync sessions stay open"
        time.sleep(0.05)


def _report(what: str, outcomes: list[Outcome]) -> str:
    killed = sum(o.kill.killed for o in outcomes)
    line = (
        f"{what} on PostgreSQL: {len(outcomes)} trials, {killed} killed mid-run, states "
        f"{dict(Counter(o.state for o in outcomes))}, killed-run statuses "
        f"{dict(Counter(str(o.run_status) for o in outcomes))}"
    )
    print(line)
    return line


# --------------------------------------------------------------------------- export


def test_sigkill_during_an_export(schemas: Schemas, smtp: SmtpTestServer, tmp_path: Path) -> None:
    schema = schemas.new("export")
    config = _config(tmp_path, schemas, schema, smtp)
    generate_recipients(tmp_path / "inbox" / "import" / "big.csv", EXPORT_ROWS, seed=5)
    done = run_cli(config, "--json", "import", "big-import")
    assert done.returncode == EXIT_OK, done.stderr
    data = _digest(schemas, schema)
    target = tmp_path / "inbox" / "export" / "newsletter.csv"
    target.parent.mkdir()
    for _ in range(2):  # the first run is cold (page cache, bytecode): keep the warm one
        io, _marked = io_of_run(start_cli(config, "--json", "export", "list-export"))
    reference = target.read_bytes()
    assert reference.count(b"\n") == EXPORT_ROWS + 1

    outcomes = []
    for share in seeded_points(SEED, TRIALS, 0.02, 0.98):
        target.write_bytes(OLD_EXPORT)  # last week's file: what a partner may read meanwhile
        outcomes.append(_export_trial(schemas, schema, config, target, reference, int(share * io)))
        assert _digest(schemas, schema) == data  # an export changes no data
    _report(f"export of {EXPORT_ROWS} rows", outcomes)

    rerun = run_cli(config, "--json", "export", "list-export")
    assert rerun.returncode == EXIT_OK, rerun.stderr
    assert target.read_bytes() == reference
    assert sum(o.kill.killed for o in outcomes) >= MIN_KILLED, _report("killed", outcomes)
    # A killed upload may leave its hidden temporary file; never a file under another name.
    leftovers = sorted(p.name for p in target.parent.iterdir() if p != target)
    assert all(name.startswith(".") for name in leftovers), leftovers


def _export_trial(
    schemas: Schemas, schema: str, config: Path, target: Path, reference: bytes, at: int
) -> Outcome:
    last = _max_run_id(schemas, schema)
    kill = kill_at_io(start_cli(config, "--json", "export", "list-export"), at)
    where = f"kill at {at:,} bytes"
    content = target.read_bytes()
    assert content in (OLD_EXPORT, reference), f"{where}: a partial export is visible"
    state = "after" if content == reference else "before"
    _no_session_left(schemas)
    status = _last_run(config, "list-export", last)
    if kill.killed:
        assert status in ("interrupted", "succeeded", None), f"{where}: {status}"
        if state == "before":
            assert status != "succeeded", f"{where}: succeeded, but the file was not replaced"
    return Outcome(kill, state, status)


# --------------------------------------------------------------------------- dispatch


def _dispatch_store(schemas: Schemas, root: Path, smtp: SmtpTestServer) -> Path:
    """A fresh schema (made by the CLI itself) with DISPATCH_RECIPIENTS newly confirmed
    members, so that each is due once; its config."""
    schema = schemas.new(root.name)
    config = _config(root, schemas, schema, smtp)
    _mailing(root / "mailings")
    done = run_cli(config, "--json", "dispatch", "welcome")  # nobody to send to yet
    assert done.returncode == EXIT_OK, done.stderr
    schemas.query(schema, "DELETE FROM runs")
    schemas.query(schema, "DELETE FROM jobs")
    schemas.query(
        schema, "INSERT INTO jobs (name, first_seen) VALUES ('welcome', %s)", (FIRST_SEEN,)
    )
    list_id = schemas.query(
        schema,
        "INSERT INTO lists (name, created_at) VALUES ('newsletter', %s) "
        "ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id",
        (FIRST_SEEN,),
    )[0][0]
    for i in range(DISPATCH_RECIPIENTS):
        schemas.query(
            schema,
            "INSERT INTO recipients (list_id, email, fields, doi_confirmed_at, created_at, "
            "updated_at) VALUES (%s, %s, %s, %s, %s, %s)",
            (
                list_id,
                f"r{i:04d}@example.com",
                f'{{"first_name": "R{i}"}}',
                f"2026-06-01T00:00:{i % 60:02d}.{i:06d}+00:00",
                FIRST_SEEN,
                FIRST_SEEN,
            ),
        )
    return config


def _sends(schemas: Schemas, config: Path) -> dict[str, str]:
    schema = config.read_text().split("store_schema: ", 1)[1].split("\n", 1)[0]
    return dict(schemas.query(schema, "SELECT email, state FROM sends WHERE job = 'welcome'"))


def test_sigkill_during_a_dispatch(schemas: Schemas, smtp: SmtpTestServer, tmp_path: Path) -> None:
    # Kill points: in the start-up, by the I/O of a reference run up to its first message
    # (the second, warm, run is kept, as the trials run warm); in the sending, by the number
    # of messages the SMTP server has taken (a PostgreSQL client sends and receives on
    # sockets, which the process's I/O counters do not see).
    for attempt in range(2):
        config = _dispatch_store(schemas, tmp_path / f"ref{attempt}", smtp)
        smtp.clear()
        proc = start_cli(config, "--json", "dispatch", "welcome")
        _total, first_message = io_of_run(proc, mark=lambda: bool(smtp.messages))
        assert _received(smtp) == Counter(
            f"r{i:04d}@example.com" for i in range(DISPATCH_RECIPIENTS)
        )
    assert first_message is not None
    start_up = TRIALS // 5
    points = [
        *(
            ("io", int(share * first_message))
            for share in seeded_points(SEED + 1, start_up, 0.2, 1.0)
        ),
        *(
            ("messages", 1 + int(share * (DISPATCH_RECIPIENTS - 1)))
            for share in seeded_points(SEED + 2, TRIALS - start_up, 0.0, 1.0)
        ),
    ]
    outcomes, unknown = [], 0
    for index, point in enumerate(points):
        outcome, left_unknown = _dispatch_trial(schemas, smtp, tmp_path / f"t{index}", point)
        outcomes.append(outcome)
        unknown += left_unknown
    _report(f"dispatch to {DISPATCH_RECIPIENTS} recipients", outcomes)
    print("unknown sends after kills:", unknown)
    assert sum(o.kill.killed for o in outcomes) >= MIN_KILLED, _report("killed", outcomes)


def _kill_at_message(proc: Any, smtp: SmtpTestServer, count: int) -> Kill:
    """SIGKILL `proc` as soon as the SMTP server has taken `count` messages."""
    deadline = time.monotonic() + WAIT
    while proc.poll() is None and len(smtp.messages) < count:
        assert time.monotonic() < deadline, "the dispatch neither finished nor sent enough"
        time.sleep(0.001)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    return Kill(count, proc.returncode, killed=proc.returncode == -signal.SIGKILL)


def _dispatch_trial(
    schemas: Schemas, smtp: SmtpTestServer, root: Path, point: tuple[str, int]
) -> tuple[Outcome, int]:
    config = _dispatch_store(schemas, root, smtp)
    smtp.clear()
    proc = start_cli(config, "--json", "dispatch", "welcome")
    by, at = point
    kill = kill_at_io(proc, at) if by == "io" else _kill_at_message(proc, smtp, at)
    first = _received(smtp)
    assert max(first.values(), default=0) <= 1, "a recipient got the mailing twice"
    # A send reads `sent` only after the server's reply: every one really reached it.
    sent = {email for email, state in _sends(schemas, config).items() if state == "sent"}
    assert sent <= set(first), sorted(sent - set(first))[:3]
    _no_session_left(schemas)
    status = _last_run(config, "welcome", 0)
    if kill.killed:
        assert status in ("interrupted", None, "succeeded"), status

    rerun = run_cli(config, "--json", "dispatch", "welcome")
    assert rerun.returncode == EXIT_OK, rerun.stderr
    received = _received(smtp)
    sends = _sends(schemas, config)
    # Converged: each recipient mailed exactly once, or, for the one send in flight when the
    # process died, reported unknown and never repeated.
    assert max(received.values()) == 1, "a recipient got the mailing twice across the crash"
    unknown = {email for email, state in sends.items() if state == "unknown"}
    assert len(unknown) <= 1, unknown
    everyone = {f"r{i:04d}@example.com" for i in range(DISPATCH_RECIPIENTS)}
    assert set(received) | unknown == everyone
    assert {state for email, state in sends.items() if email not in unknown} == {"sent"}
    state = "after" if len(first) == DISPATCH_RECIPIENTS else "before" if not first else "partial"
    return Outcome(kill, state, status), len(unknown)
