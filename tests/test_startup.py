"""Status commands must not load what they don't use: SSH, mail, progress-bar and Apprise code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import SAMPLE, Workspace

HEAVY = (
    "paramiko",
    "scp",
    "rich",
    "smtplib",
    "cryptography",
    "campaign_sync.transfer.ssh",
    "apprise",
)

PROBE = """
import sys
from campaign_sync_cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = {heavy!r}
print("LOADED=" + ",".join(sorted(m for m in sys.modules if m in heavy)), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "command", [["list-jobs", "--json"], ["check"], ["validate"], ["history"], ["lists"]]
)
def test_status_commands_import_nothing_heavy(ws: Workspace, command: list[str]) -> None:
    ws.drop("/import/newsletter_20261101.csv", SAMPLE)
    ws.cli("import", "newsletter-import", "--date", "2026-11-01")
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), "--config", str(ws.config), *command],
        capture_output=True,
        text=True,
        timeout=60,
    )
    loaded = [line for line in done.stderr.splitlines() if line.startswith("LOADED=")]
    assert loaded == ["LOADED="], done.stderr
    if command[0] == "list-jobs":
        assert json.loads(done.stdout)[0]["name"] == "newsletter-import"


def _loaded(ws: Workspace, command: list[str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), "--config", str(ws.config), *command],
        capture_output=True,
        text=True,
        timeout=60,
    )
    [line] = [line for line in done.stderr.splitlines() if line.startswith("LOADED=")]
    return [name for name in line.removeprefix("LOADED=").split(",") if name]


@pytest.mark.parametrize("command", [["list-jobs", "--json"], ["check"], ["history"], ["lists"]])
def test_configured_apprise_urls_load_apprise_only_to_validate(
    ws: Workspace, command: list[str]
) -> None:
    """Apprise is imported when a notice goes out to a URL, or by `validate` to check the
    URLs, never by a command that only reads the config."""
    ws.write_config(text=ws.config.read_text() + "notify:\n  urls: ['json://127.0.0.1:9/hook']\n")
    ws.drop("/import/newsletter_20261101.csv", SAMPLE)
    ws.cli("import", "newsletter-import", "--date", "2026-11-01")
    assert _loaded(ws, command) == []
    assert "apprise" in _loaded(ws, ["validate"])  # the probe does see it
