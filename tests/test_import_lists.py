"""blocklist-import, unsubscriber-import and bounce-import through the CLI."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import Workspace
from test_import_recipients import counts, data, members, run, run_installed

# Every test runs on both store backends (tests/conftest.py).
pytestmark = pytest.mark.stores("sqlite", "postgres")

CONFIG = """\
store: store.db
work_dir: var
timezone: UTC
jobs:
  rec: {type: recipient-import, list: news}
  rec-other: {type: recipient-import, list: other}
  block: {type: blocklist-import, max_rejects: 50%}
  block-replace: {type: blocklist-import, mode: replace, max_removals: 1}
  unsub: {type: unsubscriber-import, max_rejects: 50%}
  bounce: {type: bounce-import, max_rejects: 50%}
  bounce-mapped:
    type: bounce-import
    columns: {Adresse: email, Art: type, Datum: date}
    format: {delimiter: ";", date_format: "%d.%m.%Y %H:%M"}
  bounce-hard: {type: bounce-import, defaults: {type: hard}, max_rejects: 50%}
  bounce-plain:
    type: bounce-import
    format: {header: false}
    columns: [email, ~, date]
    defaults: {type: soft}
  unsub-news: {type: unsubscriber-import, defaults: {list: news}}
  unsub-nowhere: {type: unsubscriber-import, defaults: {list: nowhere}}
  block-plain:
    type: blocklist-import
    format: {header: false}
    columns: [pattern]
    defaults: {reason: from the partner}
"""


@pytest.fixture
def cs(ws: Workspace) -> Workspace:
    ws.write_config(text=CONFIG)
    return ws


# --------------------------------------------------------------------------- blocklist


def test_blocklist_adds_lower_cased_patterns_and_updates_reasons(cs: Workspace) -> None:
    code, doc = run(cs, "block", "Pattern , Reason\n*@SPAM.example,spam\nx\\*y@x.de,literal\n")
    assert code == 0, doc
    assert doc["counts"] == {
        "read": 2, "inserted": 2, "updated": 0, "unchanged": 0, "rejected": 0, "duplicates": 0
    }  # fmt: skip
    code, doc = run(
        cs, "block", "pattern,reason,extra\n*@spam.example,spam,1\nx\\*y@x.de,changed,2\n"
    )
    assert (doc["counts"]["updated"], doc["counts"]["unchanged"]) == (1, 1)
    rows = cs.query("SELECT pattern, reason, created_at < modified_at FROM blocklist ORDER BY 1")
    assert rows == [("*@spam.example", "spam", 0), ("x\\*y@x.de", "changed", 1)]


def test_blocklist_without_reason_column_keeps_reasons(cs: Workspace) -> None:
    run(cs, "block", "pattern,reason\na@x.de,asked\n")
    code, doc = run(cs, "block", "pattern\nA@X.DE\nb@x.de\nb@x.de\n")
    assert (doc["counts"]["unchanged"], doc["counts"]["inserted"]) == (1, 1)
    assert doc["counts"]["duplicates"] == 1
    assert cs.query("SELECT pattern, reason FROM blocklist ORDER BY 1") == [
        ("a@x.de", "asked"),
        ("b@x.de", ""),
    ]


def test_blocklist_rejects_unusable_patterns(cs: Workspace) -> None:
    code, doc = run(cs, "block", 'pattern\n*@x.de\n" "\nok@y.de\nab\\\n')
    assert code == 0, doc
    assert doc["counts"]["rejected"] == 2
    assert [r["reason"] for r in doc["first_rejects"]] == [
        "empty pattern",
        "invalid pattern: pattern ends with a lone backslash; write \\\\ for a literal backslash",
    ]


def test_blocklist_replace_is_guarded(cs: Workspace) -> None:
    run(cs, "block", "pattern\na@x.de\nb@x.de\nc@x.de\n")
    before = data(cs)
    code, doc = run(cs, "block-replace", "pattern\na@x.de\n")
    assert code == 1
    assert doc["error"] == (
        "2 of 3 entries of the blocklist would be removed, more than the limit 1; "
        "nothing was applied (max_removals; use --force if that is intended)"
    )
    assert data(cs) == before
    code, doc = run(cs, "block-replace", "pattern\n")
    assert code == 1 and doc["error"].startswith("the file has no valid data rows")
    code, doc = run(cs, "block-replace", "pattern\na@x.de\nd@x.de\nb@x.de\n")
    assert code == 0
    assert (doc["counts"]["removed"], doc["counts"]["inserted"]) == (1, 1)
    assert [p for (p,) in cs.query("SELECT pattern FROM blocklist ORDER BY 1")] == [
        "a@x.de",
        "b@x.de",
        "d@x.de",
    ]
    code, doc = run(cs, "block-replace", "pattern\n", "--force")
    assert code == 0 and doc["counts"]["removed"] == 3
    assert cs.query("SELECT count(*) FROM blocklist") == [(0,)]


# --------------------------------------------------------------------------- unsubscribers


def test_unsubscribers_per_list_and_for_all_lists(cs: Workspace) -> None:
    run(cs, "rec", "email\na@x.de\nb@x.de\nc@x.de\n")
    run(cs, "rec-other", "email\na@x.de\nb@x.de\nc@x.de\n")
    code, doc = run(
        cs,
        "unsub",
        "email,list,date,reason\nA@x.de,news,2025-01-01,asked\nb@x.de,,,complaint\n"
        "b@x.de,,,complaint\nbad,,,\nz@x.de,news,,\n",
    )
    assert code == 0, doc
    assert doc["counts"] == {
        "read": 5, "inserted": 3, "updated": 0, "unchanged": 0, "rejected": 1,
        "duplicates": 1, "unsubscribed": 3,
    }  # fmt: skip
    status = {
        (lst, email): st
        for lst, email, st in cs.query(
            "SELECT l.name, r.email, r.status FROM recipients r JOIN lists l ON l.id = r.list_id"
        )
    }
    assert status == {
        ("news", "a@x.de"): "unsubscribed", ("news", "b@x.de"): "unsubscribed",
        ("news", "c@x.de"): "active", ("other", "a@x.de"): "active",
        ("other", "b@x.de"): "unsubscribed", ("other", "c@x.de"): "active",
    }  # fmt: skip
    rows = cs.query("SELECT email, list, unsubscribed_at, reason FROM unsubscribers ORDER BY 1")
    assert rows[0] == ("a@x.de", "news", "2025-01-01T00:00:00.000000+00:00", "asked")
    assert [r[:2] for r in rows] == [("a@x.de", "news"), ("b@x.de", ""), ("z@x.de", "news")]


def test_unsubscriber_dates_only_move_forward(cs: Workspace) -> None:
    run(cs, "unsub", "email,list,date\na@x.de,news,2025-06-01\n")
    (stored,) = cs.query("SELECT changed_at FROM unsubscribers")
    code, doc = run(cs, "unsub", "email,list,date\na@x.de,news,2025-01-01\n")
    assert doc["counts"]["unchanged"] == 1
    code, doc = run(cs, "unsub", "email,list\na@x.de,news\n")
    assert doc["counts"]["unchanged"] == 1
    assert cs.query("SELECT changed_at FROM unsubscribers") == [stored]  # not a change
    code, doc = run(cs, "unsub", "email,list,date\na@x.de,news,2025-07-01\n")
    assert doc["counts"]["updated"] == 1
    assert cs.query("SELECT changed_at > ? FROM unsubscribers", stored) == [(1,)]
    assert cs.query("SELECT unsubscribed_at FROM unsubscribers") == [
        ("2025-07-01T00:00:00.000000+00:00",)
    ]


def test_unsubscription_older_than_a_double_opt_in_leaves_the_recipient(cs: Workspace) -> None:
    run(cs, "rec", "email,doi_confirmed_at\na@x.de,2025-03-01\nb@x.de,2024-01-01\n")
    code, doc = run(cs, "unsub", "email,date\na@x.de,2025-02-01\nb@x.de,2025-02-01\n")
    assert doc["counts"]["unsubscribed"] == 1
    assert cs.query("SELECT email, status FROM recipients ORDER BY 1") == [
        ("a@x.de", "active"),
        ("b@x.de", "unsubscribed"),
    ]


@pytest.mark.parametrize(
    ("job", "header", "cells"),
    [("unsub", "email,date", ""), ("bounce", "email,type,date", "hard,")],
)
def test_dates_in_the_future_are_rejected(cs: Workspace, job: str, header: str, cells: str) -> None:
    """An unsubscription or a bounce dated ahead of the run is a reject, not a record."""
    future = "2099-01-01T00:00:00Z"
    code, doc = run(cs, job, f"{header}\na@x.de,{cells}{future}\nb@x.de,{cells}2025-01-01\n")
    assert code == 0, doc
    assert counts_of(doc, "inserted", "rejected") == (1, 1)
    assert [(r["line"], r["reason"]) for r in doc["first_rejects"]] == [
        (2, f"date: '{future}' is in the future (more than 5 minutes after this run)")
    ]
    table = "unsubscribers" if job == "unsub" else "bounces"
    assert cs.query(f"SELECT email FROM {table}") == [("b@x.de",)]


def test_unsubscription_from_an_unknown_list_is_rejected_naming_the_lists(
    cs: Workspace,
) -> None:
    run(cs, "rec", "email\na@x.de\n")
    code, doc = run(
        cs,
        "unsub",
        "email,list\na@x.de,News\na@x.de,other\nb@x.de,\nc@x.de,nowhere\n",
    )
    assert code == 0, doc
    assert counts(doc, "read", "inserted", "rejected") == {"read": 4, "inserted": 2, "rejected": 2}
    # 'other' is not in the store yet, but a job imports it: its suppression is kept.
    assert [r["reason"] for r in doc["first_rejects"]] == [
        "list: no list 'News' (lists: news, other)",
        "list: no list 'nowhere' (lists: news, other)",
    ]
    assert cs.query("SELECT email, list FROM unsubscribers ORDER BY 1, 2") == [
        ("a@x.de", "other"),
        ("b@x.de", ""),
    ]
    assert members(cs)["a@x.de"][0] == "active"


# --------------------------------------------------------------------------- bounces


def test_bounces_are_appended_and_dated_ones_not_twice(cs: Workspace) -> None:
    content = (
        "email,type,date\na@x.de,HARD,2025-01-01T10:00:00Z\na@x.de,soft,\n"
        "b@x.de,medium,\nc@x.de,hard,yesterday\n"
    )
    code, doc = run(cs, "bounce", content)
    assert code == 0, doc
    assert doc["counts"] == {
        "read": 4, "inserted": 2, "updated": 0, "unchanged": 0, "rejected": 2, "duplicates": 0
    }  # fmt: skip
    assert [r["reason"] for r in doc["first_rejects"]] == [
        "type: expected hard or soft, got 'medium'",
        "date: 'yesterday' is not an ISO 8601 date",
    ]
    code, doc = run(cs, "bounce", content, "--force")
    assert (doc["counts"]["inserted"], doc["counts"]["unchanged"]) == (1, 1)
    rows = cs.query("SELECT email, type, source FROM bounces ORDER BY id")
    assert rows == [("a@x.de", "hard", "bounce"), ("a@x.de", "soft", "bounce")] + [
        ("a@x.de", "soft", "bounce")
    ]


def test_bounces_with_mapped_columns_and_date_format(cs: Workspace) -> None:
    code, doc = run(cs, "bounce-mapped", "ADRESSE;art;datum;x\nq@x.de;soft;02.01.2025 13:30;\n")
    assert code == 0, doc
    assert cs.query("SELECT email, type, bounced_at FROM bounces") == [
        ("q@x.de", "soft", "2025-01-02T13:30:00.000000+00:00")
    ]


def test_bounce_file_without_type_column_fails_naming_it(cs: Workspace) -> None:
    code, doc = run(cs, "bounce", "email,kind\na@x.de,hard\n")
    assert code == 1
    assert "line 1: no 'type' column (header: email, kind)" in doc["error"]
    assert cs.query("SELECT count(*) FROM bounces") == [(0,)]


# --------------------------------------------------------------------------- IDN spellings


def test_idn_a_labels_are_stored_in_unicode_by_every_import(cs: Workspace) -> None:
    code, doc = run(cs, "block", "pattern\n*@XN--BCHER-KVA.de\n*@bücher.de\n*@xn--zz.de\n")
    assert code == 0, doc
    assert counts_of(doc, "inserted", "duplicates", "rejected") == (1, 1, 1)
    assert doc["first_rejects"][0]["reason"] == (
        "invalid pattern: domain label 'xn--zz' is not valid IDNA"
    )
    run(cs, "unsub", "email,list\nbob@xn--bcher-kva.de,news\n")
    run(cs, "bounce", "email,type\ncarl@xn--bcher-kva.de,hard\n")
    assert cs.query("SELECT pattern FROM blocklist") == [("*@bücher.de",)]
    assert cs.query("SELECT email FROM unsubscribers") == [("bob@bücher.de",)]
    assert cs.query("SELECT email FROM bounces") == [("carl@bücher.de",)]


def test_lists_counts_an_a_label_pattern_from_an_older_store(cs: Workspace) -> None:
    # Patterns stored before A-labels were decoded must still match the Unicode addresses.
    run(cs, "rec", "email\nanna@bücher.de\nspam1@mail.münchen.de\nok@x.de\n")
    cs.query(
        "INSERT INTO blocklist (pattern, reason, created_at, modified_at) VALUES "
        "('*@xn--bcher-kva.de', '', '2025-01-01', '2025-01-01'), "
        "('spam*@*.xn--mnchen-3ya.de', '', '2025-01-01', '2025-01-01')"
    )
    done = cs.cli("--json", "lists")
    assert done.exit_code == 0, done.output
    news = [doc for doc in json.loads(done.stdout) if doc["list"] == "news"]
    assert news == [
        {"list": "news", "active": 1, "unsubscribed": 0, "blocklisted": 2, "outbounced": 0}
    ]


def counts_of(doc: dict[str, Any], *names: str) -> tuple[int, ...]:
    return tuple(doc["counts"][name] for name in names)


def test_undated_bounces_of_one_address_are_separate_events(cs: Workspace) -> None:
    cs.write_config(text=CONFIG + "bounces: {hard_limit: 3, soft_limit: 10}\n")
    run(cs, "rec", "email\nx@x.de\n")
    code, doc = run(cs, "bounce", "email,type,date\nx@x.de,hard,\nx@x.de,hard,\nx@x.de,hard,\n")
    assert code == 0, doc
    assert counts(doc, "read", "inserted", "unchanged", "duplicates") == {
        "read": 3, "inserted": 3, "unchanged": 0, "duplicates": 0
    }  # fmt: skip
    assert cs.query("SELECT count(*) FROM bounces WHERE email = 'x@x.de'") == [(3,)]
    done = cs.cli("--json", "lists")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)[0]["outbounced"] == 1
    # Dated rows stay keyed by their date: the same one twice is one bounce.
    code, doc = run(cs, "bounce", "email,type\ny@x.de,soft\ny@x.de,soft\n")
    assert counts(doc, "inserted", "duplicates") == {"inserted": 2, "duplicates": 0}
    content = "email,type,date\nz@x.de,hard,2025-01-01\nz@x.de,hard,2025-01-01\nz@x.de,hard,\n"
    code, doc = run(cs, "bounce", content)
    assert counts(doc, "inserted", "duplicates") == {"inserted": 2, "duplicates": 1}
    code, doc = run(cs, "bounce", content, "--force")
    assert counts(doc, "inserted", "unchanged", "duplicates") == {
        "inserted": 1, "unchanged": 1, "duplicates": 1
    }  # fmt: skip


# --------------------------------------------------------------------------- defaults


def test_a_bounce_file_without_type_column_takes_the_jobs_default(cs: Workspace) -> None:
    # A partner's list of cleaned addresses: every row a hard bounce; an empty type cell takes
    # the default too, a given one stays.
    code, doc = run_installed(cs, "bounce-hard", b"email\r\na@x.de\r\nb@x.de\r\n")
    assert code == 0, doc
    assert counts(doc, "read", "inserted", "rejected") == {"read": 2, "inserted": 2, "rejected": 0}
    code, doc = run_installed(cs, "bounce-hard", b"email,type\nc@x.de,\nd@x.de,soft\ne@x.de,x\n")
    assert counts(doc, "read", "inserted", "rejected") == {"read": 3, "inserted": 2, "rejected": 1}
    assert cs.query("SELECT email, type, source FROM bounces ORDER BY 1") == [
        ("a@x.de", "hard", "bounce-hard"),
        ("b@x.de", "hard", "bounce-hard"),
        ("c@x.de", "hard", "bounce-hard"),
        ("d@x.de", "soft", "bounce-hard"),
    ]


def test_a_bounce_file_without_header_line(cs: Workspace) -> None:
    code, doc = run_installed(cs, "bounce-plain", b"a@x.de,x,2025-01-02\rb@x.de,x,\r")
    assert code == 0, doc
    assert cs.query("SELECT email, type, bounced_at < '2025-01-03' FROM bounces ORDER BY 1") == [
        ("a@x.de", "soft", 1),
        ("b@x.de", "soft", 0),
    ]


def test_an_unsubscriber_file_for_one_list(cs: Workspace) -> None:
    run(cs, "rec", "email\na@x.de\nb@x.de\n")
    run(cs, "rec-other", "email\na@x.de\n")
    code, doc = run_installed(cs, "unsub-news", b"email,list\na@x.de,\nb@x.de,other\n")
    assert code == 0, doc
    assert cs.query("SELECT email, list FROM unsubscribers ORDER BY 1") == [
        ("a@x.de", "news"),
        ("b@x.de", "other"),
    ]
    assert (members(cs)["a@x.de"][0], members(cs, "other")["a@x.de"][0]) == (
        "unsubscribed",
        "active",
    )


def test_a_default_list_that_names_no_list_fails_the_run_naming_the_key(cs: Workspace) -> None:
    run(cs, "rec", "email\na@x.de\n")
    before = data(cs)
    code, doc = run_installed(cs, "unsub-nowhere", b"email\na@x.de\n")
    assert (code, doc["error"]) == (
        1,
        "jobs.unsub-nowhere.defaults.list: no list 'nowhere' (lists: news, other); name a list "
        "that a job of the configuration imports or the store holds",
    )
    assert data(cs) == before


def test_a_blocklist_file_without_header_line(cs: Workspace) -> None:
    code, doc = run_installed(cs, "block-plain", b"*@spam.example\n\nx@y.de\n")
    assert code == 0, doc
    assert cs.query("SELECT pattern, reason FROM blocklist ORDER BY 1") == [
        ("*@spam.example", "from the partner"),
        ("x@y.de", "from the partner"),
    ]
