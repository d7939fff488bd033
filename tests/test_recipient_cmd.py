"""`campaign-sync recipient ADDRESS` through the installed CLI, on both stores: after real
imports (recipients, blocklist, unsubscribers, bounces) and real dispatches against a real
SMTP server, it shows what the store holds about one address, and says whether exports and
the next dispatch take it, agreeing with a real export and a real dry run. Its per-address
queries use indexes (EXPLAIN), and it never writes."""

from __future__ import annotations

import csv
import datetime
import json
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from conftest import Workspace
from smtp_server import SmtpTestServer

pytestmark = pytest.mark.stores("sqlite", "postgres")

BERLIN = datetime.timezone(datetime.timedelta(hours=1))  # December: CET, no DST
SENDER = "welcome@example.com"

CONFIG = """\
store: store.db
work_dir: var
timezone: Europe/Berlin
servers:
  inbox: {{type: local, path: inbox}}
smtp: {{host: {host}, port: {port}, from: {sender}, timeout: 5}}
bounces: {{hard_limit: 1, soft_limit: 3}}
jobs:
  rec: {{type: recipient-import, list: newsletter}}
  block: {{type: blocklist-import}}
  unsub: {{type: unsubscriber-import}}
  bounce: {{type: bounce-import}}
  active-export:
    type: recipient-export
    list: newsletter
    target: {{server: inbox, path: /out/active.csv}}
    fields: [email]
  welcome: {{type: doi-dispatch, list: newsletter, mailings: mailings}}
"""


def stamp(moment: datetime.datetime) -> str:
    """A time as the store keeps it."""
    return moment.astimezone(datetime.timezone.utc).isoformat(timespec="microseconds")


def shown(stored: str | None) -> str:
    """A stored time as the tables show it (the config's zone, to the minute)."""
    if stored is None:
        return "-"
    return datetime.datetime.fromisoformat(stored).astimezone(BERLIN).strftime("%Y-%m-%d %H:%M")


def mailing(folder: Path) -> None:
    msg = EmailMessage()
    msg["From"] = f"Newsletter <{SENDER}>"
    msg["Subject"] = "Welcome {{first_name}}"
    msg["Date"] = "Mon, 02 Nov 2026 10:00:00 +0100"
    msg["Message-ID"] = "<welcome@templates.example.com>"
    msg.set_content("Hello {{first_name}}!\n")
    folder.mkdir(exist_ok=True)
    (folder / "welcome.eml").write_bytes(msg.as_bytes())


def cli(ws: Workspace, *args: str, code: int = 0) -> str:
    done = ws.run(*args)
    assert done.returncode == code, (args, done.stdout, done.stderr)
    return done.stdout


def jcli(ws: Workspace, *args: str, code: int = 0) -> Any:
    return json.loads(cli(ws, "--json", *args, code=code))


def imported(ws: Workspace, job: str, name: str, text: str) -> None:
    path = ws.root / name
    path.write_text(text, encoding="utf-8")
    assert jcli(ws, "import", job, "--file", str(path))["status"] == "succeeded"


@pytest.fixture
def smtp() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as server:
        yield server


@pytest.fixture
def scene(ws: Workspace, smtp: SmtpTestServer) -> Workspace:
    """A store as weeks of real runs leave it:

    anna  confirmed, mailed, but the session broke after the data: send `unknown`
    ben   confirmed, mailed: send `sent`
    carla (an IDN domain, given as A-label) never confirmed
    dora  confirmed, then blocklisted by *@spam.example
    emil  confirmed, then unsubscribed from all lists
    fritz confirmed, then one hard bounce (hard_limit 1): outbounced
    """
    ws.write_config(text=CONFIG.format(host=smtp.host, port=smtp.port, sender=SENDER))
    mailing(ws.root / "mailings")
    cli(ws, "dispatch", "welcome")  # the first run: the cut-off
    now = datetime.datetime.now(datetime.timezone.utc)
    t1, t2 = stamp(now), stamp(now + datetime.timedelta(seconds=1))
    imported(
        ws,
        "rec",
        "rec.csv",
        "email,first_name,doi_confirmed_at\n"
        f"anna@example.com,Anna,{t1}\nBen@Example.com,Ben,{t2}\n"
        "carla@XN--BCHER-KVA.de,Carla,\n"
        f"dora@spam.example,Dora,{t1}\nemil@example.com,Emil,{t1}\nfritz@example.com,Fritz,{t1}\n",
    )
    imported(ws, "block", "block.csv", "pattern,reason\n*@spam.example,spam trap\n")
    imported(ws, "unsub", "unsub.csv", "email,reason\nEmil@example.com,link in mail\n")
    imported(ws, "bounce", "bounce.csv", "email,type\nfritz@example.com,hard\n")
    smtp.drop_after_data = True  # takes anna's message, hangs up: outcome unknown
    assert jcli(ws, "dispatch", "welcome", code=1)["counts"]["unknown"] == 1
    smtp.drop_after_data = False
    assert jcli(ws, "dispatch", "welcome")["counts"]["sent"] == 1  # ben
    return ws


def member(ws: Workspace, email: str) -> dict[str, Any]:
    [(fields, doi, created, updated)] = ws.query(
        "SELECT fields, doi_confirmed_at, created_at, updated_at FROM recipients WHERE email = ?",
        (email,),
    )
    return {
        "fields": fields if isinstance(fields, dict) else json.loads(fields),
        "doi_confirmed_at": doi,
        "created_at": created,
        "updated_at": updated,
    }


def send_row(ws: Workspace, email: str) -> dict[str, Any]:
    [row] = ws.query(
        "SELECT job, list, mailing, state, attempts, message_id, run_id, created_at, "
        "updated_at, detail FROM sends WHERE email = ?",
        (email,),
    )
    keys = "job list mailing state attempts message_id run_id created_at updated_at detail"
    return dict(zip(keys.split(), row, strict=True))


def cutoff(ws: Workspace) -> str:
    [(first,)] = ws.query("SELECT first_seen FROM jobs WHERE name = 'welcome'")
    return str(first)


def document(
    ws: Workspace,
    email: str,
    *,
    status: str,
    why: str | None,
    dispatch_why: str | None,
    **parts: Any,
) -> dict[str, Any]:
    """The recipient document expected for a member of newsletter."""
    return {
        "address": email,
        "lists": [
            {
                "list": "newsletter",
                "member_status": parts.get("member_status", "active"),
                "status": status,
                "active": status == "active",
                "why_not": why,
                **member(ws, email),
                "dispatch": [
                    {
                        "job": "welcome",
                        "next_run_sends": dispatch_why is None,
                        "why_not": dispatch_why,
                    }
                ],
            }
        ],
        "unsubscriptions": parts.get("unsubscriptions", []),
        "bounces": parts.get("bounces", []),
        "bounce_counts": parts.get("bounce_counts", {"hard": 0, "soft": 0}),
        "blocklist": parts.get("blocklist", []),
        "sends": parts.get("sends", []),
    }


def test_each_address_shows_its_records_and_why_it_is_or_is_not_mailed(scene: Workspace) -> None:
    ws = scene
    anna = {**send_row(ws, "anna@example.com")}
    ben = send_row(ws, "ben@example.com")
    settle = (
        f"the outcome of the send of {anna['updated_at']} is unknown; settle it with "
        "`campaign-sync sends settle welcome anna@example.com --delivered|--not-delivered`"
    )
    assert anna["state"] == "unknown" and ben["state"] == "sent"
    assert jcli(ws, "recipient", " ANNA@Example.com ") == document(
        ws, "anna@example.com", status="active", why=None, dispatch_why=settle, sends=[anna]
    )
    assert jcli(ws, "recipient", "ben@example.com") == document(
        ws,
        "ben@example.com",
        status="active",
        why=None,
        dispatch_why=f"already sent on {ben['updated_at']} (mailing welcome.eml)",
        sends=[ben],
    )
    # The A-label form finds the Unicode form the import stored.
    assert jcli(ws, "recipient", "Carla@xn--bcher-kva.DE") == document(
        ws,
        "carla@bücher.de",
        status="active",
        why=None,
        dispatch_why="no double opt-in confirmation",
    )
    assert jcli(ws, "recipient", "dora@spam.example") == document(
        ws,
        "dora@spam.example",
        status="blocklisted",
        why="blocklisted by '*@spam.example'",
        dispatch_why="blocklisted by '*@spam.example'",
        blocklist=[{"pattern": "*@spam.example", "reason": "spam trap"}],
    )
    [(unsubscribed_at,)] = ws.query("SELECT unsubscribed_at FROM unsubscribers")
    why_emil = (
        f"marked unsubscribed in the list; on the unsubscriber list (all lists, {unsubscribed_at})"
    )
    assert jcli(ws, "recipient", "emil@example.com") == document(
        ws,
        "emil@example.com",
        status="unsubscribed",
        member_status="unsubscribed",
        why=why_emil,
        dispatch_why=why_emil,
        unsubscriptions=[
            {"list": None, "unsubscribed_at": unsubscribed_at, "reason": "link in mail"}
        ],
    )
    [(bounced_at,)] = ws.query("SELECT bounced_at FROM bounces")
    why_fritz = "outbounced: 1 hard, 0 soft bounces (limits 1 hard, 3 soft)"
    assert jcli(ws, "recipient", "fritz@example.com") == document(
        ws,
        "fritz@example.com",
        status="outbounced",
        why=why_fritz,
        dispatch_why=why_fritz,
        bounces=[{"type": "hard", "bounced_at": bounced_at, "source": "bounce", "detail": ""}],
        bounce_counts={"hard": 1, "soft": 0},
    )
    # An address the store does not know: every part empty, exit 0.
    assert jcli(ws, "recipient", "nobody@example.com") == {
        "address": "nobody@example.com",
        "lists": [],
        "unsubscriptions": [],
        "bounces": [],
        "bounce_counts": {"hard": 0, "soft": 0},
        "blocklist": [],
        "sends": [],
    }


def test_the_table_for_people(scene: Workspace) -> None:
    ws = scene
    anna = send_row(ws, "anna@example.com")
    doi = member(ws, "anna@example.com")["doi_confirmed_at"]
    why = (
        f"the outcome of the send of {anna['updated_at']} is unknown; settle it with "
        "`campaign-sync sends settle welcome anna@example.com --delivered|--not-delivered`"
    )
    out = cli(ws, "recipient", "anna@example.com")
    assert out.splitlines() == [
        "anna@example.com",
        "Lists:",
        "LIST        STATUS  ACTIVE  DOI CONFIRMED     FIELDS           WHY NOT",
        f"newsletter  active  yes     {shown(doi)}  first_name=Anna  -",
        "Dispatch:",
        "JOB      LIST        NEXT RUN SENDS  WHY NOT",
        f"welcome  newsletter  no              {why}",
        "Unsubscriptions: none",
        "Bounces: none",
        "Blocklist patterns: none",
        "Sends:",
        "JOB      MAILING      STATE    ATTEMPTS  WHEN              MESSAGE-ID",
        f"welcome  welcome.eml  unknown  1         {shown(anna['updated_at'])}  "
        f"{anna['message_id']}",
    ]
    fritz = cli(ws, "recipient", "fritz@example.com").splitlines()
    [(bounced_at,)] = ws.query("SELECT bounced_at FROM bounces")
    assert fritz[fritz.index("Bounces:") :][:3] == [
        "Bounces:",
        "TYPE  WHEN              SOURCE  DETAIL",
        f"hard  {shown(bounced_at)}  bounce  -",
    ]


def test_active_and_next_run_agree_with_a_real_export_and_a_real_dry_run(
    scene: Workspace,
) -> None:
    ws = scene
    cli(ws, "sends", "settle", "welcome", "anna@example.com", "--not-delivered")
    addresses = [
        "anna@example.com",
        "ben@example.com",
        "carla@bücher.de",
        "dora@spam.example",
        "emil@example.com",
        "fritz@example.com",
    ]
    docs = {a: jcli(ws, "recipient", a)["lists"][0] for a in addresses}
    out = ws.root / "active.csv"
    cli(ws, "export", "active-export", "--output", str(out))
    with out.open(encoding="utf-8") as handle:
        exported = {row["email"] for row in csv.DictReader(handle)}
    assert exported == {a for a, doc in docs.items() if doc["active"]}
    assert exported == {"anna@example.com", "ben@example.com", "carla@bücher.de"}

    message = jcli(ws, "dispatch", "welcome", "--dry-run")["message"]
    would = {line.split(":")[0].strip() for line in message.splitlines()[1:]}
    assert would == {a for a, doc in docs.items() if doc["dispatch"][0]["next_run_sends"]}
    assert would == {"anna@example.com"}  # not delivered: the next run sends it again


def test_bad_input_is_one_line_and_exit_2(ws: Workspace) -> None:
    ws.write_config(text=CONFIG.format(host="localhost", port=25, sender=SENDER))
    done = ws.run("recipient", "not-an-address")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "campaign-sync: error: 'not-an-address' is not an address: missing @; give one like "
        "anna@example.com\n"
    )
    assert jcli(ws, "recipient", "a@b", code=2) == {
        "error": "'a@b' is not an address: invalid domain (needs at least two labels, e.g. "
        "example.com); give one like anna@example.com",
        "exit_code": 2,
    }


def test_it_only_reads(scene: Workspace) -> None:
    ws = scene
    before = ws.dump()
    for address in ("anna@example.com", "emil@example.com", "nobody@example.com"):
        cli(ws, "recipient", address)
        cli(ws, "--json", "recipient", address)
    assert ws.dump() == before


def test_a_store_no_run_has_created_yet_holds_nothing(ws: Workspace) -> None:
    ws.write_config(text=CONFIG.format(host="localhost", port=25, sender=SENDER))
    assert jcli(ws, "recipient", "anna@example.com")["lists"] == []
    if ws.kind == "sqlite":
        assert not ws.store.exists()  # and it created none


# --------------------------------------------------------------------------- query plans

# Tables that grow with the lists; the others (lists, jobs, blocklist) are a few rows.
BIG = {"recipients", "unsubscribers", "bounces", "sends"}
ROWS = 20_000


def fill(ws: Workspace) -> None:
    """ROWS members, unsubscribers, bounces and sends beside the scene's, so that the
    PostgreSQL planner has a reason to choose; then fresh statistics."""
    if ws.kind == "sqlite":
        series = f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})"
        each = "'x' || i || '@fill.example'"
        rows = f"{series} SELECT {{}} FROM n"
    else:
        each = "'x' || i || '@fill.example'"
        rows = f"SELECT {{}} FROM generate_series(1, {ROWS}) AS i"
    when = "'2026-11-01T00:00:00.000000+00:00'"
    for table, columns, values in (
        (
            "recipients",
            "list_id, email, created_at, updated_at",
            f"(SELECT id FROM lists WHERE name = 'newsletter'), {each}, {when}, {when}",
        ),
        ("unsubscribers", "email, unsubscribed_at", f"{each}, {when}"),
        ("bounces", "email, type, bounced_at", f"{each}, 'soft', {when}"),
        (
            "sends",
            "job, email, list, mailing, mailing_id, message_id, state, created_at, updated_at",
            f"'welcome', {each}, 'newsletter', 'm', 'm', 'm', 'sent', {when}, {when}",
        ),
    ):
        ws.query(f"INSERT INTO {table} ({columns}) {rows.format(values)}")
    ws.query("ANALYZE")


def plan_lines(ws: Workspace, sql: str, params: dict[str, Any]) -> list[tuple[str, str]]:
    """(access, table) for each table the plan reads: SEARCH/SCAN on SQLite, the node type
    on PostgreSQL."""
    if ws.kind == "sqlite":
        import sqlite3

        with sqlite3.connect(ws.store) as conn:
            rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
        found = []
        for *_, detail in rows:
            words = str(detail).split()
            if words[0] in ("SEARCH", "SCAN"):
                found.append((words[0], words[1]))
        return found
    with ws._pg() as conn:
        [(doc,)] = conn.execute(f"EXPLAIN (FORMAT JSON) {sql}", params).fetchall()
    found = []

    def walk(node: dict[str, Any]) -> None:
        if "Relation Name" in node:
            found.append((node["Node Type"], node["Relation Name"]))
        for child in node.get("Plans", []):
            walk(child)

    walk(doc[0]["Plan"])
    return found


ALIASES = {"l": "lists", "r": "recipients", "u": "unsubscribers", "j": "jobs", "s": "sends"}


def test_every_per_address_query_finds_its_rows_through_an_index(scene: Workspace) -> None:
    from campaign_sync.config.model import BounceLimits

    ws = scene
    fill(ws)
    backend = __import__(f"campaign_sync.store.{ws.kind}.recipient", fromlist=["x"])
    queries, fixed = backend.per_address_queries(BounceLimits(1, 3))
    assert set(queries) == {"memberships", "unsubscriptions", "bounces", "sends"}
    params = {
        **fixed,
        "email": "anna@example.com",
        "latest": "2026-12-31T00:00:00.000000+00:00",
        "blocklisted": False,
    }
    for name, sql in queries.items():
        reads = [
            (access, ALIASES.get(table, table)) for access, table in plan_lines(ws, sql, params)
        ]
        big = [(access, table) for access, table in reads if table in BIG]
        assert big, (name, reads)
        if ws.kind == "sqlite":
            assert all(access == "SEARCH" for access, _ in big), (name, reads)
        else:
            assert all("Index" in access for access, _ in big), (name, reads)


def test_it_answers_while_a_run_holds_the_job_and_the_store(scene: Workspace) -> None:
    from campaign_sync import config as config_module
    from campaign_sync.store.open import open_store

    ws = scene
    config = config_module.load(str(ws.config))
    holder = open_store(config.store, schema=config.store_schema)
    try:
        with (
            type(holder).job_lock_before_opening(config.work_dir, "welcome"),
            holder.job_lock(config.work_dir, "welcome"),
        ):
            holder.begin_write()  # and the store's writer lock, as an import mid-merge
            assert jcli(ws, "dispatch", "welcome", code=75)["exit_code"] == 75  # it is held
            assert jcli(ws, "recipient", "ben@example.com")["sends"][0]["state"] == "sent"
            assert [s["email"] for s in jcli(ws, "sends", "welcome")] == [
                "anna@example.com",
                "ben@example.com",
            ]
            holder.rollback()
    finally:
        holder.close()


@pytest.mark.parametrize(
    "command", [["--json", "recipient", "anna@example.com"], ["sends", "welcome"]]
)
def test_they_load_no_ssh_mail_or_rich_code(ws: Workspace, command: list[str]) -> None:
    import subprocess
    import sys

    from test_startup import HEAVY, PROBE

    ws.write_config(text=CONFIG.format(host="localhost", port=25, sender=SENDER))
    imported(ws, "rec", "rec.csv", "email\nanna@example.com\n")
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), "--config", str(ws.config), *command],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert [line for line in done.stderr.splitlines() if line.startswith("LOADED=")] == [
        "LOADED="
    ], done.stderr
