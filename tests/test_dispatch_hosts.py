"""Dispatch on a PostgreSQL store shared by several hosts, against a real server and SMTP server.

First the backend's sends SQL on its own (the claim, and the run lock that tells a live claim
from a dead one), then whole runs on separate "hosts": processes in their own PID and UTS
namespaces (`unshare`, each with its own hostname) dispatching one job at once into one store.
The SMTP server counts what each address received: nobody may get the mailing twice.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from smtp_server import SmtpTestServer

from campaign_sync import config as config_module
from campaign_sync.config.model import BounceLimits
from campaign_sync.ops.runner import RunOptions, run_job
from campaign_sync.store.base import Store
from campaign_sync.store.open import open_store

if TYPE_CHECKING:
    from pgfixtures import PgSchema
    from pgserver import PgServer


WAIT = 30.0  # seconds a condition may take on a loaded machine before the test fails
FIRST_RUN = "2026-11-01T00:00:00.000000+00:00"
LATEST = "2026-12-01T00:00:00.000000+00:00"
SENDER = "welcome@example.com"
DETAIL = "the run ended during the SMTP transaction"


def _until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.02)


@pytest.fixture
def pg(pg_schema: PgSchema) -> Iterator[Store]:
    opened = open_store(pg_schema.url, schema=pg_schema.name)
    yield opened
    opened.close()


@pytest.fixture
def other(pg: Store, pg_schema: PgSchema) -> Iterator[Store]:
    """A second session on the same store: another run, as far as the server can tell."""
    opened = open_store(pg_schema.url, schema=pg_schema.name)
    yield opened
    opened.close()


def _claim(store: Store, email: str, run_id: int | None, job: str = "welcome") -> int | None:
    found: int | None = store.sql("sends").claim(
        store,
        job,
        email,
        list_name="newsletter",
        mailing="welcome.eml",
        mailing_id="<welcome@templates.example.com>",
        message_id=f"<{run_id}.{email}>",
        run_id=run_id,
    )
    return found


def _sends(store: Store, job: str = "welcome") -> dict[str, tuple[str, int, int | None]]:
    rows = store.conn.execute(
        "SELECT email, state, attempts, run_id FROM sends WHERE job = %s", (job,)
    ).fetchall()
    return {email: (state, attempts, run_id) for email, state, attempts, run_id in rows}


# --------------------------------------------------------------------------- the claim


def test_a_claim_is_exactly_once_and_only_a_deferred_send_is_taken_over(
    pg: Store, other: Store
) -> None:
    sends = pg.sql("sends")
    first = _claim(pg, "anna@example.com", 1)
    assert first is not None
    assert _claim(other, "anna@example.com", 2) is None  # held by run 1
    assert _sends(pg) == {"anna@example.com": ("sending", 1, 1)}

    sends.settle(pg, first, "deferred", "451 Greylisted")
    again = _claim(other, "anna@example.com", 2)
    assert again == first  # the same row, taken over by run 2
    assert _claim(pg, "anna@example.com", 1) is None
    assert _sends(pg) == {"anna@example.com": ("sending", 2, 2)}

    sends.settle(other, first, "sent", "")
    assert _claim(pg, "anna@example.com", 3) is None  # sent: never again
    assert _claim(pg, "anna@example.com", 3, job="other-job") is not None  # per job
    assert _sends(pg)["anna@example.com"][0] == "sent"
    assert _sends(pg, "other-job") == {"anna@example.com": ("sending", 1, 3)}


def test_simultaneous_claims_of_one_address_from_many_sessions_give_one_winner(
    pg_schema: PgSchema, pg: Store
) -> None:
    stores = [open_store(pg_schema.url, schema=pg_schema.name) for _ in range(8)]
    try:
        for round_ in range(20):
            email = f"r{round_:02d}@example.com"
            start = threading.Barrier(len(stores))
            won: list[int | None] = [None] * len(stores)
            threads = [
                threading.Thread(target=_claim_at, args=(start, stores, i, email, won))
                for i in range(len(stores))
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            winners = [i for i, found in enumerate(won) if found is not None]
            assert len(winners) == 1, (email, won)
            assert _sends(pg)[email] == ("sending", 1, winners[0] + 1)
    finally:
        for opened in stores:
            opened.close()


def _claim_at(
    start: threading.Barrier, stores: list[Store], index: int, email: str, won: list[int | None]
) -> None:
    """Claim `email` as run index + 1 on its own session, once every thread is ready."""
    start.wait()
    won[index] = _claim(stores[index], email, index + 1)


def test_a_settled_bounce_is_recorded_with_the_send(pg: Store) -> None:
    send_id = _claim(pg, "gone@example.com", 1)
    assert send_id is not None
    pg.sql("sends").settle(
        pg, send_id, "failed", "550 No such user", ("gone@example.com", "hard", "welcome")
    )
    [(state, updated_at)] = pg.conn.execute("SELECT state, updated_at FROM sends").fetchall()
    [bounce] = pg.conn.execute(
        "SELECT email, type, source, detail, bounced_at, changed_at FROM bounces"
    ).fetchall()
    assert state == "failed"
    assert bounce == (
        "gone@example.com",
        "hard",
        "welcome",
        "550 No such user",
        updated_at,
        updated_at,
    )


# --------------------------------------------------------------------------- dead sends


def test_a_claim_is_alive_while_its_run_lock_is_held_whatever_the_run_record_says(
    pg: Store, pg_schema: PgSchema
) -> None:
    sends = pg.sql("sends")
    runner = open_store(pg_schema.url, schema=pg_schema.name)
    try:
        with sends.claiming(runner, 7):
            assert _claim(runner, "held@example.com", 7) is not None
            # Another run marked run 7 interrupted (it ignored the job lock, or the record is
            # another host's): the lock still says it is sending.
            pg.conn.execute(
                "INSERT INTO runs (id, job, type, status, pid, host, started) "
                "VALUES (7, 'welcome', 'doi-dispatch', 'interrupted', 1, 'elsewhere', %s)",
                (FIRST_RUN,),
            )
            assert sends.dead_sends(pg, "welcome", DETAIL, mark=True) == []
        # The run left its claiming block (finished, or failed): its `sending` row is dead.
        [(send_id, email, message_id, run_id)] = sends.dead_sends(pg, "welcome", DETAIL, mark=True)
        assert (email, message_id, run_id) == ("held@example.com", "<7.held@example.com>", 7)
        assert _sends(pg) == {"held@example.com": ("unknown", 1, 7)}
        [(detail,)] = pg.conn.execute("SELECT detail FROM sends").fetchall()
        assert detail == DETAIL
    finally:
        runner.close()


def test_a_claim_dies_with_its_session_and_is_reported_once(pg: Store, pg_schema: PgSchema) -> None:
    sends = pg.sql("sends")
    runner = open_store(pg_schema.url, schema=pg_schema.name)
    context = sends.claiming(runner, 3)
    context.__enter__()  # never left: the session ends under it, as with kill -9
    assert _claim(runner, "a@example.com", 3) is not None
    assert _claim(pg, "b@example.com", None) is not None  # no run at all: dead at once
    assert [row[1] for row in sends.dead_sends(pg, "welcome", DETAIL, mark=False)] == [
        "b@example.com"
    ]
    backend = runner.conn.info.backend_pid
    pg.conn.execute("SELECT pg_terminate_backend(%s)", (backend,))

    _until(
        lambda: len(sends.dead_sends(pg, "welcome", DETAIL, mark=False)) == 2,
        "the terminated session's lock is gone",
    )
    assert _sends(pg)["a@example.com"][0] == "sending"  # a dry look changes nothing
    found = sends.dead_sends(pg, "welcome", DETAIL, mark=True)
    assert [row[1] for row in found] == ["a@example.com", "b@example.com"]  # claim order
    assert sends.dead_sends(pg, "welcome", DETAIL, mark=True) == []
    assert {email: row[0] for email, row in _sends(pg).items()} == {
        "a@example.com": "unknown",
        "b@example.com": "unknown",
    }
    assert _claim(pg, "a@example.com", 4) is None  # unknown: never sent again
    with pytest.raises(psycopg.OperationalError):
        runner.conn.execute("SELECT 1")
    runner.close()


# --------------------------------------------------------------------------- who is due


def _seed(execute: Any, placeholder: str) -> None:
    """The same recipients, unsubscribers, bounces and sends, through either driver."""

    def run(sql: str, *params: Any) -> None:
        execute(sql.replace("?", placeholder), params)

    run("INSERT INTO lists (id, name, created_at) VALUES (1, 'newsletter', ?)", FIRST_RUN)
    run("INSERT INTO lists (id, name, created_at) VALUES (2, 'other', ?)", FIRST_RUN)
    run("INSERT INTO jobs (name, first_seen) VALUES ('welcome', ?)", FIRST_RUN)
    members = {
        # email: (list id, status, DOI, fields)
        "zed@example.com": (1, "active", "2026-11-10T12:00:00.000000+00:00", {"n": 1}),
        "ärger@example.com": (1, "active", "2026-11-10T12:00:00.000000+00:00", {"n": "ä"}),
        "Upper@example.com": (1, "active", "2026-11-10T12:00:00.000000+00:00", {}),
        "early@example.com": (1, "active", "2026-11-05T00:00:00.000000+00:00", {"x": [1]}),
        "old@example.com": (1, "active", "2026-10-01T00:00:00.000000+00:00", {}),
        "none@example.com": (1, "active", None, {}),
        "removed@example.com": (1, "removed", "2026-11-10T12:00:00.000000+00:00", {}),
        "unsub@example.com": (1, "unsubscribed", "2026-11-10T12:00:00.000000+00:00", {}),
        "row-unsub@example.com": (1, "active", "2026-11-11T00:00:00.000000+00:00", {}),
        "reconfirmed@example.com": (1, "active", "2026-11-20T00:00:00.000000+00:00", {}),
        "future@example.com": (1, "active", "2099-01-01T00:00:00.000000+00:00", {}),
        "hard@example.com": (1, "active", "2026-11-12T00:00:00.000000+00:00", {}),
        "soft@example.com": (1, "active", "2026-11-12T00:00:00.000000+00:00", {}),
        "sent@example.com": (1, "active", "2026-11-13T00:00:00.000000+00:00", {}),
        "deferred@example.com": (1, "active", "2026-11-13T00:00:00.000000+00:00", {}),
        "elsewhere@example.com": (2, "active", "2026-11-13T00:00:00.000000+00:00", {}),
    }
    for email, (list_id, status, doi, fields) in members.items():
        run(
            "INSERT INTO recipients (list_id, email, status, fields, doi_confirmed_at, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            *(list_id, email, status, json.dumps(fields), doi, FIRST_RUN, FIRST_RUN),
        )
    for email, list_name, when in [
        ("row-unsub@example.com", "", "2026-11-15T00:00:00.000000+00:00"),
        ("reconfirmed@example.com", "newsletter", "2026-11-15T00:00:00.000000+00:00"),
        ("future@example.com", "newsletter", "2026-11-15T00:00:00.000000+00:00"),
        ("zed@example.com", "other", "2026-11-15T00:00:00.000000+00:00"),
    ]:
        run(
            "INSERT INTO unsubscribers (email, list, unsubscribed_at, changed_at) "
            "VALUES (?, ?, ?, ?)",
            *(email, list_name, when, when),
        )
    for email, kind in [("hard@example.com", "hard")] + [("soft@example.com", "soft")] * 3:
        run(
            "INSERT INTO bounces (email, type, bounced_at, changed_at) VALUES (?, ?, ?, ?)",
            *(email, kind, FIRST_RUN, FIRST_RUN),
        )
    for email, state in [("sent@example.com", "sent"), ("deferred@example.com", "deferred")]:
        run(
            "INSERT INTO sends (job, email, list, mailing, mailing_id, message_id, state, "
            "run_id, created_at, updated_at) VALUES ('welcome', ?, 'newsletter', 'm.eml', "
            "'<m>', '<x>', ?, NULL, ?, ?)",
            *(email, state, FIRST_RUN, FIRST_RUN),
        )


def test_who_is_due_is_the_same_on_both_stores(pg: Store, tmp_path: Path) -> None:
    lite = open_store(str(tmp_path / "store.db"))
    try:
        with lite.transaction():
            _seed(lambda sql, params: lite.conn.execute(sql, params), "?")
        with pg.transaction():
            _seed(lambda sql, params: pg.conn.execute(sql, params), "%s")
        limits = BounceLimits(hard_limit=1, soft_limit=3)
        found = {
            store.kind: store.sql("sends").candidates(
                store, "welcome", "newsletter", FIRST_RUN, LATEST, limits
            )
            for store in (lite, pg)
        }
        cutoffs = {store.sql("sends").cutoff(store, "welcome") for store in (lite, pg)}
        missing = {store.sql("sends").cutoff(store, "never") for store in (lite, pg)}
        none_listed = pg.sql("sends").candidates(pg, "welcome", "nolist", FIRST_RUN, LATEST, limits)
    finally:
        lite.close()
    assert found["postgres"] == found["sqlite"]
    assert cutoffs == {FIRST_RUN} and missing == {None} and none_listed == []
    # Byte order, as SQLite sorts ("U" < "z" < "ä"), whatever the database's collation.
    assert found["postgres"] == [
        ("early@example.com", {"x": [1]}, False, False),
        ("Upper@example.com", {}, False, False),
        ("unsub@example.com", {}, True, False),
        ("zed@example.com", {"n": 1}, False, False),
        ("ärger@example.com", {"n": "ä"}, False, False),
        ("row-unsub@example.com", {}, True, False),
        ("hard@example.com", {}, False, True),
        ("soft@example.com", {}, False, True),
        ("deferred@example.com", {}, False, False),
        ("reconfirmed@example.com", {}, False, False),
        ("future@example.com", {}, True, False),
    ]


# --------------------------------------------------------------------------- several hosts


def _mailing(folder: Path) -> None:
    msg = EmailMessage()
    msg["From"] = f"Newsletter <{SENDER}>"
    msg["Subject"] = "Welcome {{first_name}}"
    msg["Date"] = "Mon, 02 Nov 2026 10:00:00 +0100"
    msg["Message-ID"] = "<welcome.eml@templates.example.com>"
    msg.set_content("Hello {{first_name}}!\n")
    folder.mkdir()
    (folder / "welcome.eml").write_bytes(msg.as_bytes())


def _workspace(
    root: Path, pg_schema: PgSchema, smtp: SmtpTestServer, rate: int, notify: str = "[]"
) -> Path:
    config = root / "campaign-sync.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            store: {pg_schema.url}
            store_schema: {pg_schema.name}
            work_dir: var
            timezone: Europe/Berlin
            smtp: {{host: {smtp.host}, port: {smtp.port}, from: {SENDER}, timeout: 10}}
            jobs:
              welcome:
                type: doi-dispatch
                list: newsletter
                mailings: mailings
                rate: {rate}
                notify: {notify}
            """
        ),
        encoding="utf-8",
    )
    _mailing(root / "mailings")
    return config


def _seed_due(pg: Store, count: int) -> list[str]:
    due = [f"r{i:03d}@example.com" for i in range(count)]
    with pg.transaction():
        pg.conn.execute("INSERT INTO jobs (name, first_seen) VALUES ('welcome', %s)", (FIRST_RUN,))
        pg.conn.execute(
            "INSERT INTO lists (id, name, created_at) VALUES (1, 'newsletter', %s)", (FIRST_RUN,)
        )
        for i, email in enumerate(due):
            doi = f"2026-11-10T12:{i // 60:02d}:{i % 60:02d}.000000+00:00"
            pg.conn.execute(
                "INSERT INTO recipients (list_id, email, fields, doi_confirmed_at, created_at, "
                "updated_at) VALUES (1, %s, %s, %s, %s, %s)",
                (email, json.dumps({"first_name": f"R{i}"}), doi, FIRST_RUN, FIRST_RUN),
            )
    return due


# One run of the job on its own "host", past the job lock when asked: the store is opened,
# the host says it is ready, and the run starts when the go file appears.
HOST_CHILD = """
import json, os, socket, sys, time
from campaign_sync import config
from campaign_sync.ops import runner
from campaign_sync.store.open import open_store

path, go, mode = sys.argv[1:4]
cfg = config.load(path)
if mode == "past-the-lock":
    store = open_store(cfg.store, schema=cfg.store_schema)
open(go + "." + socket.gethostname(), "w").close()
while not os.path.exists(go):
    time.sleep(0.002)
if mode == "past-the-lock":
    result = runner._run_locked(cfg, cfg.job("welcome"), runner.RunOptions(), store)
    print(json.dumps(result.as_dict()))
else:
    from campaign_sync_cli.main import main
    sys.argv = ["campaign-sync", "--config", path, "--json", "dispatch", "welcome"]
    main()
"""


def _host(name: str, config: Path, go: Path, mode: str) -> subprocess.Popen[str]:
    """A process on a host of its own: new PID and UTS namespaces, hostname `name`."""
    unshare = shutil.which("unshare")
    assert unshare is not None, "util-linux unshare is needed to simulate hosts"
    command = [
        *(unshare, "--pid", "--fork", "--mount-proc", "--uts", "--"),
        *("sh", "-c", 'hostname "$0" && exec "$@"', name),
        *(sys.executable, "-c", HOST_CHILD, str(config), str(go), mode),
    ]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=config.parent
    )


def _on_hosts(config: Path, mode: str, hosts: list[str]) -> list[tuple[int, str, str]]:
    """Start the job on every host at once; each one's exit code, stdout and stderr."""
    go = config.parent / "go"
    procs = [_host(name, config, go, mode) for name in hosts]
    try:
        _until(
            lambda: (
                all(Path(f"{go}.{name}").exists() for name in hosts)
                or any(proc.poll() is not None for proc in procs)
            ),
            "every host is ready",
        )
        go.touch()
        done = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [(proc.returncode, out, err) for proc, (out, err) in zip(procs, done, strict=True)]


def _received(smtp: SmtpTestServer) -> Counter[str]:
    return Counter(rcpt for message in smtp.messages for rcpt in message.rcpt_tos)


@pytest.fixture
def smtp() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as server:
        yield server


def test_two_hosts_dispatching_one_job_at_once_mail_nobody_twice(
    pg: Store, pg_schema: PgSchema, smtp: SmtpTestServer, tmp_path: Path
) -> None:
    """As cron runs it on two hosts: the job lock lets one run at a time; whichever runs
    second (or exits 75 while the first still runs) finds nobody left to mail."""
    due = _seed_due(pg, 40)
    config = _workspace(tmp_path, pg_schema, smtp, rate=200)

    outcomes = _on_hosts(config, "cli", ["host-a", "host-b"])

    codes = sorted(code for code, _, _ in outcomes)
    assert codes in ([0, 0], [0, 75]), outcomes
    assert _received(smtp) == Counter(dict.fromkeys(due, 1))
    runs = pg.conn.execute("SELECT host, status, counts FROM runs ORDER BY id").fetchall()
    assert {host for host, _, _ in runs} <= {"host-a", "host-b"}
    assert sum(json.loads(counts)["sent"] for _, _, counts in runs) == len(due)
    assert {status for _, status, _ in runs} == {"succeeded"}


def test_runs_on_three_hosts_past_the_job_lock_share_the_sends(
    pg: Store, pg_schema: PgSchema, smtp: SmtpTestServer, tmp_path: Path
) -> None:
    """Three runs of one job that all bypass the job lock race through the same recipients
    in the same order: only the claim keeps them apart. Each address is mailed once, every
    run sees the others' claims as alive (no false `unknown`), and the sends add up."""
    due = _seed_due(pg, 120)
    config = _workspace(tmp_path, pg_schema, smtp, rate=400)
    hosts = ["host-a", "host-b", "host-c"]

    outcomes = _on_hosts(config, "past-the-lock", hosts)

    assert [code for code, _, _ in outcomes] == [0, 0, 0], outcomes
    results = [json.loads(out) for _, out, _ in outcomes]
    assert _received(smtp) == Counter(dict.fromkeys(due, 1))
    assert sum(result["counts"]["sent"] for result in results) == len(due)
    assert [result["counts"]["unknown"] for result in results] == [0, 0, 0]
    assert [result["status"] for result in results] == ["succeeded"] * 3
    states = pg.conn.execute("SELECT state, count(*) FROM sends GROUP BY state").fetchall()
    assert states == [("sent", len(due))]
    [(hosts_seen,)] = pg.conn.execute("SELECT count(DISTINCT host) FROM runs").fetchall()
    assert hosts_seen == 3


# --------------------------------------------------------------------------- faults


def test_server_restart_mid_dispatch_fails_the_run_and_the_next_mails_nobody_twice(
    pg: Store, pg_schema: PgSchema, pg_server: PgServer, smtp: SmtpTestServer, tmp_path: Path
) -> None:
    """PostgreSQL crash-restarts while the SMTP server holds the third message: that send
    cannot be settled, the run fails with one line, and the next run reports the send as
    unknown (the lock that said its run was alive went with the restart) and mails the rest."""
    due = _seed_due(pg, 6)
    path = _workspace(tmp_path, pg_schema, smtp, rate=1000, notify="[ops@example.com]")
    config = config_module.load(str(path))
    handler = smtp._handler
    real = type(handler).handle_DATA

    async def restart_on_third(srv: Any, session: Any, envelope: Any) -> str:
        reply: str = await real(handler, srv, session, envelope)
        if len(smtp.messages) == 3:
            pg_server.restart_immediate()  # before the client has its reply
        return reply

    handler.handle_DATA = restart_on_third  # type: ignore[method-assign]

    failed = run_job(config, "welcome", "dispatch", RunOptions())
    handler.handle_DATA = real.__get__(handler)  # type: ignore[method-assign]

    assert (failed.status, failed.exit_code) == ("failed", 1)
    assert failed.error is not None
    assert "the connection to the server was lost" in failed.error
    assert "\n" not in failed.error and "Traceback" not in failed.error
    [notice] = [m for m in smtp.messages if m.rcpt_tos == ["ops@example.com"]]
    assert failed.error in notice.text
    smtp.messages.remove(notice)
    assert _received(smtp) == Counter(dict.fromkeys(due[:3], 1))

    rerun = run_job(config, "welcome", "dispatch", RunOptions())

    assert (rerun.status, rerun.counts["unknown"], rerun.counts["sent"]) == ("succeeded", 1, 3)
    assert any(due[2] in warning for warning in rerun.warnings)
    mailed = _received(smtp)
    assert mailed.pop("ops@example.com") == 1  # the rerun's notice of the unknown outcome
    assert mailed == Counter(dict.fromkeys(due, 1))  # nobody twice, nobody missing
    with psycopg.connect(pg_schema.url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{pg_schema.name}"')
        states = dict(conn.execute("SELECT email, state FROM sends").fetchall())
        runs = conn.execute("SELECT status, error FROM runs ORDER BY id").fetchall()
    assert states == {**dict.fromkeys(due, "sent"), due[2]: "unknown"}
    # The failed run recorded itself, with its reason, on a new connection to the server.
    assert runs == [("failed", failed.error), ("succeeded", None)]


def _namespace_init(proc: subprocess.Popen[str]) -> int:
    """The pid (as this host sees it) of the first process in `proc`'s PID namespace:
    killing it ends every process of that "host" at once."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    _until(lambda: children.read_text().split(), "unshare has forked the host's first process")
    return int(children.read_text().split()[0])


def _job_lock_released(store: Store) -> bool:
    row = store.conn.execute(
        "SELECT count(*) FROM pg_locks AS l WHERE l.locktype = 'advisory' AND l.granted "
        "AND l.objsubid = 1 AND (l.classid::bigint << 32) | l.objid::bigint "
        "= hashtextextended(current_schema() || '/job/welcome', 0)"
    ).fetchone()
    return bool(row and row[0] == 0)


def test_a_host_killed_mid_send_leaves_an_unknown_send_that_another_host_never_repeats(
    pg: Store, pg_schema: PgSchema, smtp: SmtpTestServer, tmp_path: Path
) -> None:
    """Host A is killed whole (its PID namespace) while the SMTP server holds its fourth
    message; host B, with another hostname and its own pids, runs the job next: A's run is
    interrupted, the send A had in flight is reported unknown and not repeated, the rest
    are mailed once."""
    due = _seed_due(pg, 8)
    config = _workspace(tmp_path, pg_schema, smtp, rate=1000)
    handler = smtp._handler
    real = type(handler).handle_DATA
    victim: list[int] = []

    async def kill_host_on_fourth(srv: Any, session: Any, envelope: Any) -> str:
        reply: str = await real(handler, srv, session, envelope)
        if len(smtp.messages) == 4:
            os.kill(victim[0], signal.SIGKILL)  # before the client has its reply
        return reply

    handler.handle_DATA = kill_host_on_fourth  # type: ignore[method-assign]
    host_a = _host("host-a", config, tmp_path / "go", "cli")
    victim.append(_namespace_init(host_a))
    (tmp_path / "go").touch()
    host_a.communicate(timeout=120)
    handler.handle_DATA = real.__get__(handler)  # type: ignore[method-assign]
    assert host_a.returncode != 0
    assert _received(smtp) == Counter(dict.fromkeys(due[:4], 1))
    _until(lambda: _job_lock_released(pg), "the server has ended host A's session")

    [(code, out, err)] = _on_hosts(config, "cli", ["host-b"])

    assert code == 0, err
    result = json.loads(out)
    assert (result["counts"]["unknown"], result["counts"]["sent"]) == (1, 4)
    assert any(due[3] in warning for warning in result["warnings"])
    assert _received(smtp) == Counter(dict.fromkeys(due, 1))
    runs = pg.conn.execute("SELECT host, status FROM runs ORDER BY id").fetchall()
    assert runs == [("host-a", "interrupted"), ("host-b", "succeeded")]
    [(state, run_host)] = pg.conn.execute(
        "SELECT s.state, r.host FROM sends s JOIN runs r ON r.id = s.run_id WHERE s.email = %s",
        (due[3],),
    ).fetchall()
    assert (state, run_host) == ("unknown", "host-a")
