"""A changes-only export sees status changes that come from other tables' imports."""

from __future__ import annotations

import pytest
from conftest import SAMPLE, Workspace

pytestmark = pytest.mark.stores("sqlite", "postgres")

EXTRA = """\
  bounces-import:
    type: bounce-import
    source: {server: inbox, path: /import/bounces.csv}
  changes-export:
    type: recipient-export
    list: newsletter
    target: {server: inbox, path: /export/changes.csv}
    fields: [email]
    changes_only: true
"""


def after_a_first_changes_export(ws: Workspace) -> None:
    """The sample imported and exported once (a first changes-only run exports everything)."""
    ws.write_config(text=ws.config.read_text() + EXTRA)
    ws.drop("/import/newsletter_20261101.csv", SAMPLE)
    assert ws.cli("import", "newsletter-import", "--date", "2026-11-01").exit_code == 0
    assert ws.cli("export", "changes-export").exit_code == 0


def changes(ws: Workspace) -> list[str]:
    return (ws.inbox / "export" / "changes.csv").read_text(encoding="utf-8").splitlines()


def test_old_dated_bounces_imported_late_still_reach_the_next_changes_export(
    ws: Workspace,
) -> None:
    after_a_first_changes_export(ws)
    # Three hard bounces dated years before the watermark outbounce anna now.
    ws.drop(
        "/import/bounces.csv",
        "email,type,date\n"
        + "".join(f"anna@example.com,hard,2020-01-0{day}T00:00:00Z\n" for day in (1, 2, 3)),
    )
    done = ws.cli("import", "bounces-import")
    assert done.exit_code == 0, done.output
    assert ws.cli("export", "changes-export").exit_code == 0
    assert changes(ws) == ["email,status", "anna@example.com,outbounced"]


def test_an_export_to_output_does_not_use_up_the_changes_the_partner_gets(
    ws: Workspace,
) -> None:
    after_a_first_changes_export(ws)
    ws.drop(
        "/import/newsletter_20261102.csv", "E-Mail;Vorname;Nachname;DOI\nzoe@example.com;Z;Z;\n"
    )
    assert ws.cli("import", "newsletter-import", "--date", "2026-11-02").exit_code == 0
    peek = ws.root / "peek.csv"
    assert ws.cli("export", "changes-export", "--output", str(peek)).exit_code == 0
    assert peek.read_text(encoding="utf-8").splitlines() == [
        "email,status",
        "zoe@example.com,active",
    ]
    assert ws.cli("export", "changes-export").exit_code == 0
    assert changes(ws) == ["email,status", "zoe@example.com,active"]


def test_a_pattern_removed_by_a_blocklist_replace_reaches_the_next_changes_export(
    ws: Workspace,
) -> None:
    extra = EXTRA + (
        "  blocklist-import:\n"
        "    type: blocklist-import\n"
        "    mode: replace\n"
        "    max_removals: 100%\n"
        "    source: {server: inbox, path: /import/blocklist.csv}\n"
    )
    ws.write_config(text=ws.config.read_text() + extra)
    ws.drop("/import/newsletter_20261101.csv", SAMPLE)
    assert ws.cli("import", "newsletter-import", "--date", "2026-11-01").exit_code == 0
    ws.drop("/import/blocklist.csv", "pattern\n*@example.com\nnobody@nowhere.example\n")
    assert ws.cli("import", "blocklist-import").exit_code == 0
    assert ws.cli("export", "changes-export").exit_code == 0  # first run: everything
    first = (ws.inbox / "export" / "changes.csv").read_text(encoding="utf-8").splitlines()
    assert first == ["email,status", "carla@example.org,active"]  # the active members
    # The partner's new blocklist drops the pattern: anna is active again.
    ws.drop("/import/blocklist.csv", "pattern\nnobody@nowhere.example\n")
    done = ws.cli("import", "blocklist-import")
    assert done.exit_code == 0, done.output
    assert ws.cli("export", "changes-export").exit_code == 0
    lines = (ws.inbox / "export" / "changes.csv").read_text(encoding="utf-8").splitlines()
    assert lines == ["email,status", "anna@example.com,active", "ben@example.com,active"]


LIST_EXPORTS = """\
  unsubscribers-import:
    type: unsubscriber-import
    source: {server: inbox, path: /import/unsubscribers.csv}
  unsubscribers-export:
    type: unsubscriber-export
    target: {server: inbox, path: /export/unsubscribers.csv}
    changes_only: true
  outbounced-export:
    type: bounce-export
    target: {server: inbox, path: /export/outbounced.csv}
    changes_only: true
"""


def test_old_dated_unsubscriptions_and_bounces_reach_the_next_list_exports(ws: Workspace) -> None:
    ws.write_config(text=ws.config.read_text() + EXTRA + LIST_EXPORTS)
    ws.drop("/import/newsletter_20261101.csv", SAMPLE)
    assert ws.cli("import", "newsletter-import", "--date", "2026-11-01").exit_code == 0
    for job in ("unsubscribers-export", "outbounced-export"):  # first runs: the watermarks
        assert ws.cli("export", job).exit_code == 0
    # The partner's dates lie before the watermarks; the records are new to the store.
    ws.drop("/import/unsubscribers.csv", "email,list,date\nben@example.com,,2024-01-01T00:00:00Z\n")
    ws.drop(
        "/import/bounces.csv",
        "email,type,date\n"
        + "".join(f"carla@example.org,hard,2024-01-0{day}T00:00:00Z\n" for day in (1, 2, 3)),
    )
    for job in ("unsubscribers-import", "bounces-import"):
        done = ws.cli("import", job)
        assert done.exit_code == 0, done.output

    def exported(name: str) -> list[str]:
        return (ws.inbox / "export" / name).read_text(encoding="utf-8").splitlines()

    for job in ("unsubscribers-export", "outbounced-export"):
        assert ws.cli("export", job).exit_code == 0
    assert exported("unsubscribers.csv") == [
        "email,list,date,reason",
        "ben@example.com,,2024-01-01T00:00:00.000000+00:00,",
    ]
    assert exported("outbounced.csv") == [
        "email,hard_bounces,soft_bounces,last_bounce",
        "carla@example.org,3,0,2024-01-03T00:00:00.000000+00:00",
    ]
    # Exported once: the runs after that have nothing new.
    for job in ("unsubscribers-export", "outbounced-export"):
        assert ws.cli("export", job).exit_code == 0
    assert exported("unsubscribers.csv") == ["email,list,date,reason"]
    assert exported("outbounced.csv") == ["email,hard_bounces,soft_bounces,last_bounce"]


def test_future_dated_unsubscriptions_and_bounces_are_one_change_not_one_per_run(
    ws: Workspace,
) -> None:
    ws.write_config(text=ws.config.read_text() + EXTRA + LIST_EXPORTS)
    ws.drop("/import/newsletter_20261101.csv", SAMPLE)
    assert ws.cli("import", "newsletter-import", "--date", "2026-11-01").exit_code == 0
    assert ws.cli("export", "changes-export").exit_code == 0  # first run: everything
    # Imports refuse dates ahead of the run now; a store that an older version wrote may
    # still hold them (recorded now: changed_at takes its default).
    ws.query(
        "INSERT INTO unsubscribers (email, unsubscribed_at) VALUES (?, ?)",
        ("anna@example.com", "2030-01-01T00:00:00.000000+00:00"),
    )
    ws.query(
        "INSERT INTO bounces (email, type, bounced_at) VALUES (?, 'soft', ?)",
        ("carla@example.org", "2030-01-01T00:00:00.000000+00:00"),
    )
    path = ws.inbox / "export" / "changes.csv"
    assert ws.cli("export", "changes-export").exit_code == 0
    assert path.read_text(encoding="utf-8").splitlines() == [
        "email,status",
        "anna@example.com,unsubscribed",
        "carla@example.org,active",
    ]
    # Nothing changed since: the partner's dates in 2030 do not make them new again.
    assert ws.cli("export", "changes-export").exit_code == 0
    assert path.read_text(encoding="utf-8").splitlines() == ["email,status"]
