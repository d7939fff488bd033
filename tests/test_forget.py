"""`campaign-sync forget`: erasure for good, on both stores, through the installed CLI.

The store is built as an installation builds it: real imports of all four kinds (an IDN
address in its A-label spelling among them, rejected rows that land in a rejects file), and
a real dispatch to a real SMTP server that refuses one recipient (a failed send, a bounce,
and a warning naming the address in the run history). Then two addresses are erased and
everything is checked: no row of any table holds them, no byte of the SQLite files, no
rejects row, no run text; the erasure is a run with counts only; later imports of every
kind keep them out (`suppressed_erased`).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from conftest import Workspace
from smtp_server import SmtpTestServer

if TYPE_CHECKING:
    from pgfixtures import PgSchema

pytestmark = pytest.mark.stores("sqlite", "postgres")

FIRST_RUN = "2026-11-01T00:00:00.000000+00:00"  # the dispatch's DOI cut-off
ANNA = "anna@example.com"
BEN = "ben@bücher.de"  # an IDN: its files spell it with the A-label xn--bcher-kva.de
BEN_ASCII = "ben@xn--bcher-kva.de"
# Every spelling that must be gone, as bytes would hold it (the store keeps lower case).
SPELLINGS = (ANNA, BEN, BEN_ASCII, "bu\u0308cher.de")

CONFIG = """\
{store}
work_dir: var
timezone: UTC
smtp: {{host: {host}, port: {port}, from: welcome@example.com, timeout: 5}}
bounces: {{hard_limit: 1, soft_limit: 3}}
jobs:
  news: {{type: recipient-import, list: news, max_rejects: 50%}}
  other: {{type: recipient-import, list: other}}
  unsub: {{type: unsubscriber-import}}
  bounce: {{type: bounce-import}}
  block: {{type: blocklist-import}}
  welcome: {{type: doi-dispatch, list: news, mailings: mailings}}
"""

NEWS = (
    "email,first_name,doi_confirmed_at\n"
    "anna@example.com,Anna,2026-11-20T10:00:00Z\n"
    "Ben@XN--BCHER-KVA.DE,Ben,2026-11-21T10:00:00Z\n"
    "carla@example.org,Carla,2026-11-22T10:00:00Z\n"
    "BEN@BÜCHER.DE,Benjamin,not-a-date\n"
    '"Anna@Example.com",Anna,"yesterday,\nor so"\n'
    "carla@example.org,Carla,someday\n"
)
FILES = {
    "news": NEWS,
    "other": "email,first_name\nanna@example.com,A\ndora@example.net,Dora\n",
    "unsub": "email,list,reason\nanna@example.com,,asked\nben@bücher.de,other,asked\n"
    "carla@example.org,other,moved\n",
    "bounce": "email,type,date\nben@xn--bcher-kva.de,soft,2026-11-26T08:00:00Z\n"
    "carla@example.org,soft,2026-11-26T08:00:00Z\n",
    "block": "pattern,reason\nanna@example.com,asked\n*@spam.example,spam\nben\\*@x.de,odd\n",
}
MAILING = """\
From: Newsletter <welcome@example.com>
Subject: Welcome {{first_name}}
Date: Mon, 02 Nov 2026 10:00:00 +0100
Message-ID: <welcome@templates.example.com>
Content-Type: text/plain; charset=utf-8

Hello {{first_name}}!
"""
REFUSAL = "5.1.1 <ben@xn--bcher-kva.de>: no such user"
UNKNOWN = (
    "outcome unknown: {address} (Message-ID <dead@example.com>): run 2 ended during its SMTP "
    "transaction; not sent again — the mail server's log can tell"
)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def imported(ws: Workspace, job: str, *extra: str) -> dict[str, Any]:
    path = ws.root / f"{job}.csv"
    path.write_text(FILES[job], encoding="utf-8")
    done = ws.run("--json", "import", job, "--file", str(path), *extra)
    assert "Traceback" not in done.stderr
    return json.loads(done.stdout)


def rejects(ws: Workspace) -> dict[str, str]:
    folder = ws.root / "var" / "rejects"
    return {p.name: p.read_bytes().decode("utf-8") for p in sorted(folder.iterdir())}


def build(ws: Workspace) -> None:
    """Every kind of import, and a dispatch that mails Carla, is refused Ben and finds an
    earlier send to Anna of unknown outcome."""
    (ws.root / "mailings").mkdir()
    (ws.root / "mailings" / "welcome.eml").write_text(MAILING, encoding="utf-8")
    assert imported(ws, "news")["status"] == "succeeded"
    assert imported(ws, "other")["status"] == "succeeded"
    ws.query("INSERT INTO jobs (name, first_seen) VALUES ('welcome', ?)", (FIRST_RUN,))
    # A send to Anna claimed by a run that is over: the dispatch reports its outcome unknown.
    ws.query(
        "INSERT INTO sends (job, email, list, mailing, mailing_id, message_id, state, run_id, "
        "created_at, updated_at) VALUES ('welcome', ?, 'news', 'welcome.eml', "
        "'<welcome@templates.example.com>', '<dead@example.com>', 'sending', "
        "(SELECT max(id) FROM runs), ?, ?)",
        (ANNA, FIRST_RUN, FIRST_RUN),
    )
    with SmtpTestServer() as smtp:
        for spelling in (BEN, BEN_ASCII):  # (the server offers SMTPUTF8: the U-label goes)
            smtp.reject(spelling, 550, REFUSAL)
        ws.write_config(text=CONFIG.format(store="store: store.db", host=smtp.host, port=smtp.port))
        run = json.loads(ws.run("--json", "dispatch", "welcome").stdout)
        assert run["warnings"] == [UNKNOWN.format(address=ANNA)]
        assert [m.rcpt_tos for m in smtp.messages] == [["carla@example.org"]]
    for job in ("unsub", "bounce", "block"):
        assert imported(ws, job)["status"] == "succeeded"


@pytest.fixture
def built(ws: Workspace) -> Workspace:
    ws.write_config(text=CONFIG.format(store="store: store.db", host="127.0.0.1", port=1))
    build(ws)
    return ws


def holding(text: str) -> list[str]:
    """The spellings of the erased addresses that `text` holds (case-insensitively)."""
    lowered = text.lower()
    return [spelling for spelling in SPELLINGS if spelling in lowered]


def forget(ws: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    return ws.run("forget", *args)


ERASED_COUNTS = {
    "addresses": 2,
    "recipients": 3,  # Anna in news and other, Ben in news
    "unsubscribers": 2,  # Anna from every list, Ben from other
    "bounces": 2,  # Ben's hard one (the dispatch) and his soft one (the import)
    "sends": 2,  # Anna's unknown send, Ben's failed one
    "blocklist": 1,  # the pattern that is exactly Anna's address
    "run_texts": 1,  # the dispatch's warning about Anna
    "rejects_files": 1,
    "rejects_lines": 2,  # Ben's and Anna's rejected rows (Anna's spans two lines)
    "suppressed": 2,
}


def test_forget_erases_every_trace_and_keeps_a_keyed_hash(built: Workspace) -> None:
    ws = built
    before, files_before = ws.dump(), rejects(ws)
    [rejects_name] = files_before
    rejects_path = ws.root / "var" / "rejects" / rejects_name
    assert holding(files_before[rejects_name]) == [ANNA, BEN]
    if ws.kind == "sqlite":  # what the byte check below would find without the erasure
        raw = b"".join(p.read_bytes() for p in ws.root.glob("store.db*")).decode("utf-8", "replace")
        assert holding(raw) == [ANNA, BEN, BEN_ASCII]

    dry = forget(ws, "--json", "--dry-run", "ANNA@example.com", "Ben@XN--BCHER-KVA.de")
    assert json.loads(ok(dry)) == {
        "dry_run": True,
        "run_id": None,
        "counts": ERASED_COUNTS,
        "rejects_files": [{"path": str(rejects_path), "lines": 2}],
        "warnings": [],
    }
    assert (ws.dump(), rejects(ws)) == (before, files_before)  # nothing changed

    done = forget(ws, "ANNA@example.com", "Ben@XN--BCHER-KVA.de", "anna@example.com")
    [(run_id,)] = ws.query("SELECT max(id) FROM runs")
    assert ok(done).splitlines() == [
        f"erased 2 addresses (run {run_id})",
        "  list memberships             3",
        "  unsubscriptions              2",
        "  bounces                      2",
        "  dispatch sends               2",
        "  blocklist entries            1",
        "  run records redacted         1",
        "  rejects rows                 2",
        f"    {rejects_path}: 2",
        "  kept out of imports          2 now (keyed hash)",
    ]
    assert done.stderr == ""

    # No row of any table holds either address; everyone else's rows are all still there.
    after = ws.dump()
    assert [row for row in after if holding(row)] == []
    # 10 rows erased; the secret, two hashes and the erasure's run added.
    assert len(before) - len(after) == 10 - 4
    assert ws.recipients("news") == {"carla@example.org": ("active", {"first_name": "Carla"})}
    assert ws.query("SELECT pattern FROM blocklist ORDER BY pattern") == [
        ("*@spam.example",),
        ("ben\\*@x.de",),
    ]
    # The rejects file lost exactly the two rows, atomically replaced, still owner-only.
    assert rejects(ws) == {
        rejects_name: "line,reason,email,first_name,doi_confirmed_at\r\n"
        "8,doi_confirmed_at: 'someday' is not an ISO 8601 date,carla@example.org,Carla,someday\r\n"
    }
    assert rejects_path.stat().st_mode & 0o777 == 0o600
    # The dispatch's run keeps its warning, without the address.
    welcome = json.loads(ok(ws.run("--json", "history", "welcome")))
    assert welcome[0]["warnings"] == [UNKNOWN.format(address="[erased]")]
    # The erasure is a run with counts only.
    [record] = json.loads(ok(ws.run("--json", "history", "@forget")))
    assert (record["job"], record["type"], record["status"], record["run_id"]) == (
        "@forget",
        "forget",
        "succeeded",
        run_id,
    )
    assert (record["counts"], record["message"], record["error"]) == (
        ERASED_COUNTS,
        "erased 2 addresses",
        None,
    )
    assert holding(json.dumps(record, ensure_ascii=False)) == []
    # What stays: the store's secret and one keyed hash per address.
    [(secret,)] = ws.query("SELECT secret FROM erasure_secret")
    assert len(secret) == 64 and secret not in ok(ws.run("--json", "history"))
    assert len(ws.query("SELECT hash FROM erased")) == 2
    if ws.kind == "sqlite":
        assert_no_bytes_left(ws.store)
    else:  # the tables it changed were vacuumed (what that does: docs/privacy.md)
        vacuumed = ws.query(
            "SELECT relname FROM pg_stat_user_tables WHERE schemaname = current_schema() "
            "AND last_vacuum IS NOT NULL ORDER BY relname"
        )
        assert [name for (name,) in vacuumed] == [
            "blocklist",
            "bounces",
            "recipients",
            "runs",
            "sends",
            "unsubscribers",
        ]

    # Erasing again finds nothing and adds nothing: forget is idempotent.
    again = json.loads(ok(forget(ws, "--json", ANNA, BEN)))
    assert again["counts"] == {
        **{key: 0 for key in ERASED_COUNTS},
        "addresses": 2,
    }


def assert_no_bytes_left(store: Path) -> None:
    """No spelling of the erased addresses in the store file, its WAL or its shared memory,
    in UTF-8 or in any case."""
    for path in (store, Path(f"{store}-wal"), Path(f"{store}-shm")):
        data = path.read_bytes().lower() if path.exists() else b""
        found = [s for s in SPELLINGS if s.encode("utf-8") in data]
        assert found == [], f"{path.name} still holds {found}"
    assert Path(f"{store}-wal").stat().st_size == 0  # checkpointed and truncated


def test_later_imports_of_every_kind_keep_erased_addresses_out(built: Workspace) -> None:
    ws = built
    ok(forget(ws, ANNA, BEN_ASCII))
    before = ws.dump()
    # Each file again, forced past the already-imported check: the erased addresses come
    # back in every kind of file, valid and invalid rows alike.
    news = imported(ws, "news", "--force")["counts"]
    assert news == {
        "read": 6,
        "inserted": 0,
        "updated": 0,
        "unchanged": 1,
        "rejected": 1,  # Carla's bad row only: the erased addresses' rows are no rejects
        "duplicates": 0,
        "suppressed_unsubscribed": 0,
        "suppressed_blocklisted": 0,
        "suppressed_erased": 2,
    }
    expected = {
        "other": {"read": 2, "inserted": 0, "unchanged": 1, "suppressed_erased": 1},
        "unsub": {"read": 3, "inserted": 0, "unchanged": 1, "suppressed_erased": 2},
        "bounce": {"read": 2, "inserted": 0, "unchanged": 1, "suppressed_erased": 1},
        "block": {"read": 3, "inserted": 0, "unchanged": 2, "suppressed_erased": 1},
    }
    for job, counts in expected.items():
        found = imported(ws, job, "--force")["counts"]
        assert {key: found[key] for key in counts} == counts, job
        assert (found["rejected"], found["duplicates"]) == (0, 0), job
    after = ws.dump()
    assert [row for row in after if holding(row)] == []
    # Only run records changed (and which run last imported each file, a forced import's).
    bookkeeping = ('INSERT INTO "runs"', 'INSERT INTO "imported_files"')
    assert [r for r in after if r not in before and not r.startswith(bookkeeping)] == []
    # The new rejects file holds Carla's bad row and nothing of theirs.
    assert [name for name, text in rejects(ws).items() if holding(text)] == []


def test_a_string_that_is_not_an_address_erases_nothing(built: Workspace) -> None:
    ws = built
    before, files_before = ws.dump(), rejects(ws)

    done = forget(ws, ANNA, "anna(at)example.com", BEN)

    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "campaign-sync: error: 'anna(at)example.com' is not an address: missing @; "
        "nothing was erased\n"
    )
    assert (ws.dump(), rejects(ws)) == (before, files_before)
    as_json = forget(ws, "--json", "x@localhost")
    assert as_json.returncode == 2
    assert json.loads(as_json.stdout) == {
        "error": "'x@localhost' is not an address: invalid domain (needs at least two labels, "
        "e.g. example.com); nothing was erased",
        "exit_code": 2,
    }
    nothing = forget(ws)
    assert (nothing.returncode, nothing.stderr) == (
        2,
        "campaign-sync: error: give the addresses to erase (ADDRESS... or --file PATH)\n",
    )


def test_addresses_come_from_a_file_plain_or_csv(built: Workspace, tmp_path: Path) -> None:
    ws = built
    plain = tmp_path / "plain.txt"
    plain.write_text("# erasure requests of December\n\nANNA@EXAMPLE.COM\n", encoding="utf-8")
    table = tmp_path / "table.csv"
    table.write_text("\ufeffname;E-Mail ;email\nBen;x;ben@bücher.de\n;;\n", encoding="utf-8")
    broken = tmp_path / "broken.csv"
    broken.write_text("email,name\ncarla@example.org,C\nnot-one,N\n", encoding="utf-8")

    bad = forget(ws, "--file", str(broken))
    assert (bad.returncode, bad.stderr) == (
        2,
        f"campaign-sync: error: {broken}: line 3: 'not-one' is not an address: missing @; "
        "nothing was erased\n",
    )
    done = json.loads(ok(forget(ws, "--json", "--dry-run", "--file", str(plain))))
    assert done["counts"]["addresses"] == 1 and done["counts"]["recipients"] == 2
    done = json.loads(ok(forget(ws, "--json", ANNA, "--file", str(table))))
    assert (done["counts"]["addresses"], done["counts"]["recipients"]) == (2, 3)
    assert [row for row in ws.dump() if holding(row)] == []


def test_a_forget_before_any_run_creates_the_store_and_keeps_the_address_out(
    ws: Workspace,
) -> None:
    ws.write_config(text=CONFIG.format(store="store: store.db", host="127.0.0.1", port=1))
    dry = json.loads(ok(forget(ws, "--json", "--dry-run", ANNA)))
    assert dry["counts"] == {
        **{key: 0 for key in ERASED_COUNTS},
        "addresses": 1,
        "suppressed": 1,
    }
    if ws.kind == "sqlite":
        assert not ws.store.exists()  # a dry run creates nothing

    ok(forget(ws, ANNA))

    assert imported(ws, "other")["counts"]["suppressed_erased"] == 1
    assert ws.recipients("other") == {"dora@example.net": ("active", {"first_name": "Dora"})}


def test_rejects_files_are_never_read_or_written_through_a_planted_name(
    built: Workspace, tmp_path: Path
) -> None:
    ws = built
    folder = ws.root / "var" / "rejects"
    outside = tmp_path / "outside.csv"
    outside.write_text("line,reason,email\n2,x,anna@example.com\n", encoding="utf-8")
    (folder / "planted.csv").symlink_to(outside)

    done = json.loads(ok(forget(ws, "--json", ANNA)))

    assert [Path(f["path"]).name for f in done["rejects_files"]] == sorted(rejects(ws))[:1]
    assert outside.read_text(encoding="utf-8") == "line,reason,email\n2,x,anna@example.com\n"
    assert (folder / "planted.csv").is_symlink()


def test_a_rejects_folder_that_is_a_link_stops_the_erasure_before_any_change(
    built: Workspace, tmp_path: Path
) -> None:
    ws = built
    folder = ws.root / "var" / "rejects"
    folder.rename(tmp_path / "elsewhere")
    folder.symlink_to(tmp_path / "elsewhere")
    before = ws.dump()

    done = forget(ws, ANNA)

    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"campaign-sync: error: work_dir: {folder} is a symbolic link; campaign-sync keeps "
        "private files only in folders of its own: remove it (it is recreated) or set "
        "`work_dir` to another folder\n"
    )
    assert ws.dump() == before


def test_a_vacuum_postgresql_refuses_is_a_warning_and_the_erasure_stands(
    tmp_path: Path, pg_schema: PgSchema
) -> None:
    ws = Workspace(tmp_path, "postgres", pg_schema)
    ws.inbox.mkdir()
    ws.write_config(text=CONFIG.format(store="store: store.db", host="127.0.0.1", port=1))
    assert imported(ws, "other")["status"] == "succeeded"
    # The members' table belongs to another role, which let the store's role write it.
    ws.query("ALTER TABLE recipients OWNER TO cs_admin")
    ws.query("GRANT ALL ON recipients TO campaign")

    done = forget(ws, ANNA)

    assert done.returncode == 0, done.stderr
    assert done.stderr == (
        "campaign-sync: warning: the store's role could not VACUUM all of recipients: the "
        "erased rows are gone from every query, but their bytes may stay in the tables' pages "
        "until a VACUUM; run VACUUM (INDEX_CLEANUP ON) recipients as the tables' owner\n"
    )
    assert ws.recipients("other") == {"dora@example.net": ("active", {"first_name": "Dora"})}
