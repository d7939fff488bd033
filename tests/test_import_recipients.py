"""recipient-import: the four modes, suppression, limits, dry runs, through the CLI."""

from __future__ import annotations

import datetime
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import Workspace
from hypothesis import example, given
from hypothesis import strategies as st

# Every test runs on both store backends (tests/conftest.py).
pytestmark = pytest.mark.stores("sqlite", "postgres")

CONFIG = """\
store: store.db
work_dir: var
timezone: UTC
jobs:
  rec: {type: recipient-import, list: news, max_rejects: 50%}
  rec-add: {type: recipient-import, list: news, mode: add-only, max_rejects: 50%}
  rec-update: {type: recipient-import, list: news, mode: update-only, max_rejects: 50%}
  rec-replace:
    {type: recipient-import, list: news, mode: replace, max_removals: 2, max_rejects: 50%}
  rec-other: {type: recipient-import, list: other}
  rec-lax: {type: recipient-import, list: news, max_rejects: 90%}
  rec-semi:
    type: recipient-import
    list: news
    format: {delimiter: ";", encoding: cp1252, date_format: "%d.%m.%Y"}
    columns: {" E-MAIL ": email, vorname: first_name, DOI: doi_confirmed_at}
    max_rejects: 50%
  block: {type: blocklist-import}
  unsub: {type: unsubscriber-import}
  rec-plain:
    type: recipient-import
    list: news
    format: {header: false, delimiter: ";"}
    columns: [email, first_name, ~, city]
    max_rejects: 1
  rec-source:
    type: recipient-import
    list: news
    defaults: {source: partner-x, city: unknown, doi_confirmed_at: 2024-05-01}
"""

BASE = "email,first_name,city\na@x.de,Anna,Berlin\nb@x.de,Ben,Köln\nc@x.de,Carla,Essen\n"


@pytest.fixture
def cs(ws: Workspace) -> Workspace:
    ws.write_config(text=CONFIG)
    return ws


def run(ws: Workspace, job: str, content: str | bytes, *flags: str) -> tuple[int, dict[str, Any]]:
    """Import `content` as a local file with `job`; the exit code and the JSON run document."""
    path = ws.root / f"in-{len(list(ws.root.glob('in-*')))}.csv"
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    done = ws.cli("--json", "import", job, "--file", str(path), *flags)
    return done.exit_code, json.loads(done.stdout)


def run_installed(ws: Workspace, job: str, content: bytes, *flags: str) -> tuple[int, Any]:
    """Like run(), through the installed command as cron runs it."""
    path = ws.root / f"in-{len(list(ws.root.glob('in-*')))}.csv"
    path.write_bytes(content)
    done = ws.run("--json", "import", job, "--file", str(path), *flags)
    assert "Traceback" not in done.stderr
    return done.returncode, json.loads(done.stdout)


def counts(doc: dict[str, Any], *names: str) -> dict[str, int]:
    return {name: doc["counts"][name] for name in names}


def members(ws: Workspace, list_name: str = "news") -> dict[str, tuple[str, dict[str, Any]]]:
    return ws.recipients(list_name)


CORE = ("read", "inserted", "updated", "unchanged", "rejected", "duplicates")


def test_upsert_inserts_then_updates_changed_rows_only(cs: Workspace) -> None:
    code, doc = run(cs, "rec", BASE)
    assert code == 0, doc
    assert counts(doc, *CORE) == dict(
        read=3, inserted=3, updated=0, unchanged=0, rejected=0, duplicates=0
    )
    code, doc = run(cs, "rec", "email,city\nA@X.DE , Berlin\nb@x.de,Bonn\nd@x.de,Ulm\n")
    assert code == 0
    assert counts(doc, *CORE) == dict(
        read=3, inserted=1, updated=1, unchanged=1, rejected=0, duplicates=0
    )
    assert members(cs) == {
        "a@x.de": ("active", {"first_name": "Anna", "city": "Berlin"}),
        "b@x.de": ("active", {"first_name": "Ben", "city": "Bonn"}),  # first_name kept
        "c@x.de": ("active", {"first_name": "Carla", "city": "Essen"}),
        "d@x.de": ("active", {"city": "Ulm"}),
    }


def test_add_only_leaves_existing_rows_alone(cs: Workspace) -> None:
    run(cs, "rec", BASE)
    code, doc = run(cs, "rec-add", "email,city\na@x.de,Paris\nd@x.de,Rom\n")
    assert code == 0
    assert counts(doc, "inserted", "updated", "unchanged", "ignored") == dict(
        inserted=1, updated=0, unchanged=0, ignored=1
    )
    assert members(cs)["a@x.de"] == ("active", {"first_name": "Anna", "city": "Berlin"})
    assert members(cs)["d@x.de"] == ("active", {"city": "Rom"})


def test_update_only_ignores_new_addresses(cs: Workspace) -> None:
    run(cs, "rec", BASE)
    code, doc = run(cs, "rec-update", "email,city\na@x.de,Paris\nd@x.de,Rom\nb@x.de,Köln\n")
    assert code == 0
    assert counts(doc, "inserted", "updated", "unchanged", "ignored") == dict(
        inserted=0, updated=1, unchanged=1, ignored=1
    )
    assert set(members(cs)) == {"a@x.de", "b@x.de", "c@x.de"}
    assert members(cs)["a@x.de"][1]["city"] == "Paris"


def test_replace_removes_members_not_in_the_file(cs: Workspace) -> None:
    run(cs, "rec", BASE)
    code, doc = run(cs, "rec-replace", "email,city\nb@x.de,Köln\nd@x.de,Ulm\n")
    assert code == 0, doc
    assert counts(doc, "inserted", "unchanged", "removed") == dict(
        inserted=1, unchanged=1, removed=2
    )
    statuses = {email: status for email, (status, _) in members(cs).items()}
    assert statuses == {"a@x.de": "removed", "b@x.de": "active", "c@x.de": "removed",
                        "d@x.de": "active"}  # fmt: skip
    # A removed member in a later file is a new member again.
    code, doc = run(cs, "rec", "email\na@x.de\n")
    assert counts(doc, "inserted", "updated") == dict(inserted=1, updated=0)
    assert members(cs)["a@x.de"][0] == "active"


def test_replace_guard_max_removals_and_force(cs: Workspace) -> None:
    run(cs, "rec", BASE)
    before = data(cs)
    code, doc = run(cs, "rec-replace", "email\nz@x.de\n")
    assert code == 1
    assert doc["status"] == "failed"
    assert doc["error"] == (
        "3 of 3 entries of list 'news' would be removed, more than the limit 2; "
        "nothing was applied (max_removals; use --force if that is intended)"
    )
    assert data(cs) == before
    code, doc = run(cs, "rec-replace", "email\nz@x.de\n", "--force")
    assert code == 0
    assert doc["counts"]["removed"] == 3


def data(ws: Workspace) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the data tables (not the run records, which a failed run adds to)."""
    tables = ("lists", "recipients", "blocklist", "unsubscribers", "bounces")
    return {table: ws.query(f"SELECT * FROM {table} ORDER BY 1, 2") for table in tables}


def test_replace_from_an_empty_file_needs_force(cs: Workspace) -> None:
    run(cs, "rec", "email\na@x.de\n")
    before = data(cs)
    code, doc = run(cs, "rec-replace", "email\n")
    assert code == 1
    assert doc["error"] == (
        "the file has no valid data rows: replace would empty list 'news' (1 entries); "
        "nothing was applied (use --force if that is intended)"
    )
    assert data(cs) == before
    code, doc = run(cs, "rec-replace", "email\n", "--force")
    assert code == 0 and doc["counts"]["removed"] == 1


def test_duplicates_last_wins_and_are_counted(cs: Workspace) -> None:
    code, doc = run(cs, "rec", "email,city\na@x.de,One\nA@x.de,Two\nb@x.de,B\na@x.de ,Three\n")
    assert code == 0
    assert counts(doc, "read", "inserted", "duplicates") == dict(read=4, inserted=2, duplicates=2)
    assert members(cs)["a@x.de"][1] == {"city": "Three"}


def test_rejects_with_reasons_and_file(cs: Workspace) -> None:
    content = (
        "email,first_name,doi_confirmed_at\n"
        "ok@x.de,Ok,\n"
        "no-at-sign,X,\n"
        ",Empty,\n"
        "bad@x.de,Bad,not a date\n"
        "short@x.de\n"
        "good@x.de,Good,2025-01-02T03:04:05Z\n"
    )
    code, doc = run(cs, "rec-lax", content)
    assert code == 0, doc
    assert counts(doc, "read", "inserted", "rejected") == dict(read=6, inserted=2, rejected=4)
    reasons = [(r["line"], r["reason"]) for r in doc["first_rejects"]]
    assert reasons == [
        (3, "missing @"),
        (4, "empty email address"),
        (5, "doi_confirmed_at: 'not a date' is not an ISO 8601 date"),
        (6, "has 1 fields, the header has 3"),
    ]
    rejects = Path(doc["rejects_file"])
    assert rejects.stat().st_mode & 0o777 == 0o600
    assert rejects.read_text(encoding="utf-8").splitlines() == [
        "line,reason,email,first_name,doi_confirmed_at",
        "3,missing @,no-at-sign,X,",
        "4,empty email address,,Empty,",
        "5,doi_confirmed_at: 'not a date' is not an ISO 8601 date,bad@x.de,Bad,not a date",
        '6,"has 1 fields, the header has 3",short@x.de',
    ]
    assert members(cs)["good@x.de"][0] == "active"


FUTURE = "is in the future (more than 5 minutes after this run)"


def test_a_confirmation_dated_in_the_future_is_rejected(cs: Workspace) -> None:
    """Ahead of the run by more than the clock skew: a reject like a date that does not
    parse, in an ISO column and in a date_format one; a minute ahead is a skew and kept."""
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=1)
    content = (
        "email,doi_confirmed_at\n"
        "a@x.de,2099-01-01\n"
        f"b@x.de,{soon.isoformat()}\n"
        "c@x.de,2025-01-01T10:00:00Z\n"
    )
    code, doc = run(cs, "rec", content)
    assert code == 0, doc
    assert counts(doc, "read", "inserted", "rejected") == dict(read=3, inserted=2, rejected=1)
    assert doc["first_rejects"] == [
        {
            "line": 2,
            "reason": f"doi_confirmed_at: '2099-01-01' {FUTURE}",
            "row": ["a@x.de", "2099-01-01"],
        }
    ]
    code, doc = run(cs, "rec-semi", "E-Mail;DOI\nd@x.de;01.01.2099\ne@x.de;01.01.2025\n")
    assert code == 0, doc
    assert [(r["line"], r["reason"]) for r in doc["first_rejects"]] == [
        (2, f"doi_confirmed_at: '01.01.2099' {FUTURE}")
    ]
    assert sorted(members(cs)) == ["b@x.de", "c@x.de", "e@x.de"]


def test_max_rejects_fails_with_nothing_applied(cs: Workspace) -> None:
    run(cs, "rec", BASE)
    before = data(cs)
    code, doc = run(cs, "rec", "email\nnew@x.de\nbad1\nbad2\n")
    assert code == 1
    assert doc["error"].startswith(
        "2 of 3 rows were rejected, more than the limit 50%; nothing was applied (max_rejects"
    )
    assert doc["counts"] == {} or doc["counts"].get("inserted", 0) == 0
    assert data(cs) == before


def test_never_add_blocklisted_and_never_resubscribe(cs: Workspace) -> None:
    run(cs, "block", "pattern,reason\n*@spam.example,spam domain\nexact@x.de,asked\n")
    run(cs, "rec", "email\nold@x.de\nkeep@x.de\n")
    run(
        cs,
        "unsub",
        "email,list,date\nold@x.de,news,2025-06-01T00:00:00Z\nall@x.de,,2025-06-01T00:00:00Z\n"
        "otherlist@x.de,other,2025-06-01T00:00:00Z\n",
    )
    assert members(cs)["old@x.de"][0] == "unsubscribed"
    content = (
        "email,doi_confirmed_at\n"
        "someone@spam.example,\n"  # blocklisted: never added
        "EXACT@x.de,\n"  # blocklisted
        "old@x.de,2025-05-01T00:00:00Z\n"  # DOI older than the unsubscription
        "all@x.de,\n"  # unsubscribed from all lists
        "otherlist@x.de,\n"  # unsubscribed from another list only: added
        "keep@x.de,\n"
    )
    code, doc = run(cs, "rec", content)
    assert code == 0
    assert counts(
        doc, "inserted", "unchanged", "suppressed_blocklisted", "suppressed_unsubscribed"
    ) == dict(inserted=1, unchanged=1, suppressed_blocklisted=2, suppressed_unsubscribed=2)
    assert {e: s for e, (s, _) in members(cs).items()} == {
        "keep@x.de": "active",
        "old@x.de": "unsubscribed",
        "otherlist@x.de": "active",
    }


def test_newer_double_opt_in_resubscribes(cs: Workspace) -> None:
    run(cs, "rec", "email\nold@x.de\n")
    run(cs, "unsub", "email,list,date\nold@x.de,,2025-06-01T12:00:00+02:00\nnew@x.de,,2025-06-01\n")
    code, doc = run(
        cs, "rec", "email,doi_confirmed_at\nold@x.de,2025-06-01T11:00:00Z\nnew@x.de,2025-06-02\n"
    )
    assert code == 0
    assert counts(doc, "inserted", "updated", "suppressed_unsubscribed") == dict(
        inserted=1, updated=1, suppressed_unsubscribed=0
    )
    rows = cs.query("SELECT email, status, doi_confirmed_at FROM recipients ORDER BY email")
    assert rows == [
        ("new@x.de", "active", "2025-06-02T00:00:00.000000+00:00"),
        ("old@x.de", "active", "2025-06-01T11:00:00.000000+00:00"),
    ]


def test_dry_run_counts_equal_a_real_run_and_change_nothing(cs: Workspace) -> None:
    run(cs, "rec", BASE)
    run(cs, "block", "pattern\n*@spam.example\n")
    content = (
        "email,city\na@x.de,Berlin\nb@x.de,Bonn\nx@spam.example,Q\nbad\nd@x.de,Ulm\nd@x.de,U\n"
    )
    before = cs.dump()
    code, dry = run(cs, "rec-replace", content, "--dry-run", "--force")
    assert code == 0 and dry["dry_run"] is True and dry["message"] == "dry run: nothing was changed"
    assert cs.dump() == before
    code, real = run(cs, "rec-replace", content, "--force")
    assert code == 0
    assert dry["counts"] == real["counts"]
    assert real["counts"] == {
        "read": 6, "inserted": 1, "updated": 1, "unchanged": 1, "rejected": 1,
        "duplicates": 1, "suppressed_unsubscribed": 0, "suppressed_blocklisted": 1, "removed": 1,
    }  # fmt: skip


def test_dialect_columns_encoding_and_date_format(cs: Workspace) -> None:
    content = (
        "\ufeff E-Mail ;VORNAME;Ignored;doi\r\n"
        'jörg@x.de;"Jörg ""J"";\r\nJo";x;24.12.2024\r\n'
        "zoe@x.de;Zoë;;\r\n"
    ).replace("\ufeff", "")
    code, doc = run(cs, "rec-semi", content.encode("cp1252"))
    assert code == 0, doc
    assert doc["counts"]["rejected"] == 1  # jörg: non-ASCII local parts are not supported
    assert doc["first_rejects"][0]["line"] == 2
    assert members(cs) == {"zoe@x.de": ("active", {"first_name": "Zoë"})}
    code, doc = run(cs, "rec-semi", content.replace("jörg", "joerg").encode("cp1252"))
    assert members(cs)["joerg@x.de"] == ("active", {"first_name": 'Jörg "J";\r\nJo'})
    assert cs.query("SELECT doi_confirmed_at FROM recipients WHERE email = 'joerg@x.de'") == [
        ("2024-12-24T00:00:00.000000+00:00",)
    ]


def test_reserved_field_names_fail_the_file(cs: Workspace) -> None:
    code, doc = run(cs, "rec", "\nemail,status\na@x.de,active\n")
    assert code == 1
    assert doc["error"].endswith(
        "in-0.csv: line 2: 'status' is managed by campaign-sync, not by a file; list the headers "
        "to import in the job's columns to leave it out"
    )


def test_lists_are_separate(cs: Workspace) -> None:
    run(cs, "rec", "email\na@x.de\n")
    code, doc = run(cs, "rec-other", "email\na@x.de\n")
    assert doc["counts"]["inserted"] == 1
    assert set(members(cs, "other")) == {"a@x.de"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"email,city\nz@x.de,bad\nq@x.de,K\xf6ln\n",
            "line 3: cannot decode as utf-8 (byte 0xf6); set the job's format.encoding "
            "(e.g. latin-1, cp1252)",
        ),
        (
            b"mail,city\nz@x.de,Ulm\n",
            "line 1: no 'email' column (header: mail, city); map yours in the job's columns, "
            "e.g. columns: {E-Mail: email}",
        ),
        (
            b'email,city\nbad,x\nz@x.de,"Ulm\nq@x.de,Bonn\n',
            "line 3: a quote opened in this row is never closed; check the quoting (a quote "
            "inside a quoted field is written twice), or whether the file was cut off",
        ),
        (
            b"email,city,zip\nbad,x,1\nz@x.de,Ulm,1\nq@x.de,Bo",
            "line 4: the last row is incomplete (2 of 3 fields, no line end); the file looks "
            "truncated",
        ),
        (
            b"\xef\xbb\xbf",
            "in-1.csv: the file is empty (not even a header line); check the partner's export",
        ),
    ],
    ids=["undecodable", "no-key-column", "unterminated-quote", "truncated", "only-a-bom"],
)
def test_broken_files_fail_whole_naming_the_line(
    cs: Workspace, content: bytes, message: str
) -> None:
    run(cs, "rec", BASE)
    before = data(cs)
    code, doc = run(cs, "rec-lax", content)
    assert code == 1
    assert doc["status"] == "failed"
    assert doc["error"].endswith(message)
    assert doc["rejects_file"] is None
    assert data(cs) == before
    # A rejects file started before the break is not left behind.
    assert list((cs.root / "var" / "rejects").glob("rec-lax-*")) == []


def test_max_rejects_as_a_count(cs: Workspace) -> None:
    cs.write_config(
        text=CONFIG + "  rec-two: {type: recipient-import, list: news, max_rejects: 2}\n"
    )
    code, doc = run(cs, "rec-two", "email\nx\ny\na@x.de\n")
    assert code == 0 and doc["counts"]["rejected"] == 2
    code, doc = run(cs, "rec-two", "email\nx\ny\nz\na@x.de\n")
    assert code == 1
    assert doc["error"].startswith("3 of 4 rows were rejected, more than the limit 2;")


def test_cells_are_trimmed_like_str_strip(cs: Workspace) -> None:
    code, doc = run(cs, "rec", "email,city,note\na@x.de,\u00a0Köln\t, \u3000x y\u2029 \n")
    assert code == 0, doc
    assert members(cs)["a@x.de"] == ("active", {"city": "Köln", "note": "x y"})


# --------------------------------------------------------------------------- staged fields

CELL = st.one_of(
    st.sampled_from(["", " ", "Anna", " Köln ", 'a "b"', "back\\slash", "tab\there", "\xa0x"]),
    st.text(max_size=6),
)


@given(st.lists(st.lists(CELL, min_size=3, max_size=3), max_size=5))
@example([["Anna", "Köln", "x"], ["Jörg", "", "%s"]])  # the template path
@example([["Anna", "Köln", " x"]])  # trimmed: the careful path for the whole batch
def test_staged_fields_are_json_object_of_the_trimmed_cells(rows: list[list[str]]) -> None:
    from campaign_sync.imports.recipients import _RecipientStager

    stager = _RecipientStager.__new__(_RecipientStager)
    stager.names = ["first_name", "city", "note"]
    stager.pick = lambda row: tuple(row)
    stager.template = '{"first_name":"%s","city":"%s","note":"%s"}'
    conn = sqlite3.connect(":memory:")
    expected = [
        conn.execute(
            "SELECT json_object('first_name', ?, 'city', ?, 'note', ?)",
            [cell.strip() for cell in row],
        ).fetchone()[0]
        for row in rows
    ]
    assert stager.fields(rows) == expected


def test_json_object_spelling_is_sqlites() -> None:
    from campaign_sync.imports.recipients import _json_object

    conn = sqlite3.connect(":memory:")
    for text in ['"', "\\", "\x00\x01\x08\t\n\x0b\x0c\r\x1f", "\x7f", "\u2028\u2029", "é€😀", "/"]:
        assert (
            _json_object([("k", text)])
            == conn.execute("SELECT json_object('k', ?)", (text,)).fetchone()[0]
        )


@pytest.mark.parametrize("job", ["rec", "rec-add", "rec-replace"])
def test_first_import_straight_into_the_store_matches_the_general_path(
    cs: Workspace, job: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An empty list takes a shortcut (sorted straight into the store); it must count and
    # store exactly what deciding row by row against the store does.
    import importlib

    rec = importlib.import_module(f"campaign_sync.store.{cs.kind}.recipients")

    run(cs, "block", "pattern\n*@spam.de\n")
    content = (
        "email,first_name,doi_confirmed_at\n"
        "a@x.de,One,2025-01-01\nb@spam.de,Spam,\nA@X.DE,Two,\nc@x.de,C,\nb@spam.de,Again,\n"
        "bad,Bad,\n"
    )
    taken = []
    real = rec.can_insert_directly
    monkeypatch.setattr(rec, "can_insert_directly", lambda *a: taken.append(real(*a)) or False)
    _, general = run(cs, job, content, "--dry-run")
    monkeypatch.setattr(rec, "can_insert_directly", lambda *a: taken.append(real(*a)) or True)
    _, direct = run(cs, job, content)
    assert taken == [True, True]
    assert direct["counts"] == general["counts"]
    assert general["counts"]["duplicates"] == 2
    assert general["counts"]["suppressed_blocklisted"] == 1
    assert {email: fields for email, (_, fields) in members(cs).items()} == {
        "a@x.de": {"first_name": "Two"},
        "c@x.de": {"first_name": "C"},
    }
    assert cs.query("SELECT doi_confirmed_at FROM recipients WHERE email = 'a@x.de'") == [(None,)]


def test_an_unsubscribed_address_in_a_first_import_takes_the_general_path(
    cs: Workspace,
) -> None:
    run(cs, "unsub", "email,date\nu@x.de,2025-03-01\n")
    content = "email,doi_confirmed_at\nu@x.de,2025-04-01\nu@x.de,\nv@x.de,\n"
    code, doc = run(cs, "rec", content)
    assert code == 0, doc
    # The last row of u@x.de has no newer double opt-in: suppressed, not its first row.
    assert counts(doc, "inserted", "duplicates", "suppressed_unsubscribed") == dict(
        inserted=1, duplicates=1, suppressed_unsubscribed=1
    )
    # (Straight into the store, u@x.de's first row would have gone in.)
    assert set(members(cs)) == {"v@x.de"}


def test_an_idn_in_unicode_and_a_label_spelling_is_one_address(cs: Workspace) -> None:
    # Written as xn--bcher-kva.de, bücher.de must neither slip past the blocklist nor
    # re-subscribe someone who unsubscribed, nor become a second recipient.
    run(cs, "block", "pattern\n*@bücher.de\n")
    code, doc = run(cs, "rec", "email\nanna@bücher.de\nanna@xn--bcher-kva.de\nok@x.de\n")
    assert code == 0, doc
    assert counts(doc, "inserted", "duplicates", "suppressed_blocklisted") == dict(
        inserted=1, duplicates=1, suppressed_blocklisted=1
    )
    run(cs, "unsub", "email\nbob@münchen.de\n")
    code, doc = run(cs, "rec", "email\nbob@xn--mnchen-3ya.de\n")
    assert code == 0, doc
    assert counts(doc, "inserted", "suppressed_unsubscribed") == dict(
        inserted=0, suppressed_unsubscribed=1
    )
    code, doc = run(cs, "rec", "email\ncarl@XN--CAF-DMA.de\ncarl@Café.de\n")
    assert counts(doc, "inserted", "duplicates") == dict(inserted=1, duplicates=1)
    assert set(members(cs)) == {"ok@x.de", "carl@café.de"}


def test_an_a_label_blocklist_pattern_blocks_the_unicode_spelling(cs: Workspace) -> None:
    run(cs, "block", "pattern\n*@xn--bcher-kva.de\nspam*@*.xn--mnchen-3ya.de\n")
    code, doc = run(cs, "rec", "email\nanna@bücher.de\nspam1@mail.münchen.de\nok@x.de\n")
    assert code == 0, doc
    assert counts(doc, "inserted", "suppressed_blocklisted") == dict(
        inserted=1, suppressed_blocklisted=2
    )


def test_an_invalid_a_label_is_rejected_with_a_reason(cs: Workspace) -> None:
    code, doc = run(cs, "rec-lax", "email\nx@xn--zz.de\nok@x.de\n")
    assert code == 0, doc
    assert counts(doc, "inserted", "rejected") == dict(inserted=1, rejected=1)
    assert [r["reason"] for r in doc["first_rejects"]] == [
        "invalid domain (label 'xn--zz' is not valid IDNA)"
    ]


# --------------------------------------------------------------------------- partner files


def test_a_file_without_header_line(cs: Workspace) -> None:
    # Line 1 is data; the list names each column's field, ~ skips one; rejects, their line
    # numbers and max_rejects work as with a header.
    content = "a@x.de;Anna;skip;Berlin\r\n\r\nbad;B;x;Köln\r\nc@x.de;C\r\nd@x.de;D;x;Ulm"
    code, doc = run_installed(cs, "rec-plain", content.encode())
    assert code == 1
    assert doc["error"].startswith("2 of 4 rows were rejected, more than the limit 1;")
    assert [(r["line"], r["reason"]) for r in doc["first_rejects"]] == [
        (3, "missing @"),
        (4, "has 2 fields, the job's columns list 4"),
    ]
    assert Path(doc["rejects_file"]).read_text(encoding="utf-8").splitlines() == [
        "line;reason;email;first_name;column 3;city",
        "3;missing @;bad;B;x;Köln",
        "4;has 2 fields, the job's columns list 4;c@x.de;C",
    ]
    code, doc = run_installed(cs, "rec-plain", content.replace("c@x.de;C", "").encode())
    assert code == 0, doc
    assert counts(doc, *CORE) == dict(
        read=3, inserted=2, updated=0, unchanged=0, rejected=1, duplicates=0
    )
    assert members(cs) == {
        "a@x.de": ("active", {"first_name": "Anna", "city": "Berlin"}),
        "d@x.de": ("active", {"first_name": "D", "city": "Ulm"}),
    }
    # A headerless file that ends mid-row is truncated like any other.
    code, doc = run_installed(cs, "rec-plain", b"a@x.de;Anna;x;Berlin\nb@x.de;Ben")
    assert (code, doc["error"]) == (
        1,
        f"{cs.root}/in-2.csv: line 2: the last row is incomplete (2 of 4 fields, no line end); "
        "the file looks truncated",
    )


def test_defaults_give_missing_columns_and_fill_empty_cells(cs: Workspace) -> None:
    content = b"email,city,doi_confirmed_at\na@x.de,Berlin,\nb@x.de, ,2025-01-02\n"
    code, doc = run_installed(cs, "rec-source", content)
    assert code == 0, doc
    assert members(cs) == {
        "a@x.de": ("active", {"city": "Berlin", "source": "partner-x"}),
        "b@x.de": ("active", {"city": "unknown", "source": "partner-x"}),
    }
    assert cs.query("SELECT email, doi_confirmed_at FROM recipients ORDER BY 1") == [
        ("a@x.de", "2024-05-01T00:00:00.000000+00:00"),
        ("b@x.de", "2025-01-02T00:00:00.000000+00:00"),
    ]
    # Equal rows stay unchanged on the next import: defaults are applied the same way.
    code, doc = run_installed(cs, "rec-source", content, "--force")
    assert counts(doc, "unchanged", "updated") == {"unchanged": 2, "updated": 0}


@pytest.mark.parametrize("end", ["\r", "\r\n", "mixed"])
def test_classic_mac_and_mixed_line_ends(cs: Workspace, end: str) -> None:
    lines = ["email,first_name,city", 'a@x.de,"Anna\rMaria",Berlin', "nope,X,Y", "b@x.de,Ben,"]
    ends = ["\r", "\n", "\r\n", "\r"] if end == "mixed" else [end] * 4
    content = "".join(line + e for line, e in zip(lines, ends, strict=True))
    code, doc = run_installed(cs, "rec-lax", content.encode())
    assert code == 0, doc
    assert counts(doc, "read", "inserted", "rejected") == {"read": 3, "inserted": 2, "rejected": 1}
    assert [(r["line"], r["reason"]) for r in doc["first_rejects"]] == [(4, "missing @")]
    assert members(cs)["a@x.de"] == ("active", {"first_name": "Anna\rMaria", "city": "Berlin"})
