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
