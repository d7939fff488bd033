"""A changes-only export sees status changes that come from other tables' imports."""

from __future__ import annotations

from conftest import SAMPLE, Workspace

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


def test_old_dated_bounces_imported_late_still_reach_the_next_changes_export(
    ws: Workspace,
) -> None:
    ws.write_config(text=ws.config.read_text() + EXTRA)
    ws.drop("/import/newsletter_20261101.csv", SAMPLE)
    assert ws.cli("import", "newsletter-import", "--date", "2026-11-01").exit_code == 0
    assert ws.cli("export", "changes-export").exit_code == 0  # first run: everything
    # Three hard bounces dated years before the watermark outbounce anna now.
    ws.drop(
        "/import/bounces.csv",
        "email,type,date\n"
        + "".join(f"anna@example.com,hard,2020-01-0{day}T00:00:00Z\n" for day in (1, 2, 3)),
    )
    done = ws.cli("import", "bounces-import")
    assert done.exit_code == 0, done.output
    assert ws.cli("export", "changes-export").exit_code == 0
    lines = (ws.inbox / "export" / "changes.csv").read_text(encoding="utf-8").splitlines()
    assert lines == ["email,status", "anna@example.com,outbounced"]


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
