"""Progress of long work on a terminal: rows of an import and an export, messages of a
dispatch. The installed command runs with its stderr on a real pseudo-terminal and the test
reads what reached it; the same commands with stderr on a pipe, with --json or with -q must
show none of it. Assertions are on what was drawn last, never on timing.

On both stores: the bar is drawn by backend-neutral code (the CSV reader and writer, the
send loop), but each store's export feeds the writer its own way.
"""

from __future__ import annotations

import gzip
import os
import pty
import re
import select
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from smtp_server import SmtpTestServer

from campaign_sync.store.open import open_store

ROWS = 3000
SENDER = "welcome@example.com"
CONFIG = """\
{store}
work_dir: var
timezone: UTC
smtp: {{host: {host}, port: {port}, from: {sender}, timeout: 5}}
servers:
  outbox: {{type: local, path: outbox}}
jobs:
  rec: {{type: recipient-import, list: news}}
  doi: {{type: recipient-import, list: welcome}}
  out:
    type: recipient-export
    list: news
    target: {{server: outbox, path: /news.csv}}
  welcome: {{type: doi-dispatch, list: welcome, mailings: mailings}}
"""
MAILING = """\
From: Newsletter <welcome@example.com>
To: {{email}}
Subject: Welcome
Date: Mon, 02 Nov 2026 10:00:00 +0100
Message-ID: <welcome@templates.example.com>
Content-Type: text/plain; charset=utf-8

Hello!
"""
# Cursor moves, colours and line clearing: what rich writes around the text.
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


@pytest.fixture(params=["sqlite", "postgres"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A workspace with an SMTP server, the dispatch's cut-off already set."""
    location, schema = str(tmp_path / "store.db"), None
    if request.param == "postgres":
        pg = request.getfixturevalue("pg_schema")
        location, schema = pg.url, pg.name
    store_line = f"store: {location}" + (f"\nstore_schema: {schema}" if schema else "")
    (tmp_path / "outbox").mkdir()
    (tmp_path / "mailings").mkdir()
    (tmp_path / "mailings" / "welcome.eml").write_text(MAILING, encoding="utf-8")
    lines = [f"user{n}@example.com,Name {n}" for n in range(ROWS)]
    (tmp_path / "news.csv").write_text("email,first_name\n" + "\n".join(lines) + "\n")
    with SmtpTestServer() as smtp:
        config = CONFIG.format(store=store_line, host=smtp.host, port=smtp.port, sender=SENDER)
        (tmp_path / "campaign-sync.yaml").write_text(config, encoding="utf-8")
        assert run(tmp_path, "dispatch", "welcome")[0] == 0  # the first run sets the cut-off
        store = open_store(location, schema=schema)
        try:
            with store.transaction():
                store.conn.execute(
                    "UPDATE jobs SET first_seen = '2026-11-01T00:00:00.000000+00:00'"
                )
        finally:
            store.close()
        yield tmp_path


def new_confirmations(root: Path, tag: str, count: int = 3) -> None:
    """`count` list members confirmed after the cut-off, so the next dispatch sends to them."""
    path = root / f"doi-{tag}.csv"
    rows = [f"{tag}{n}@example.com,2026-11-20T10:00:00Z" for n in range(count)]
    path.write_text("email,doi_confirmed_at\n" + "\n".join(rows) + "\n")
    assert run(root, "import", "doi", "--file", str(path))[0] == 0


def run(root: Path, *args: str, terminal: bool = False) -> tuple[int, str]:
    """The installed command; returns its exit code and its stderr (ANSI escapes removed).
    With `terminal`, stderr is a pseudo-terminal (stdout stays a pipe, as under `| less`)."""
    command = ["campaign-sync", "--config", str(root / "campaign-sync.yaml"), *args]
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    if not terminal:
        done = subprocess.run(command, capture_output=True, env=env, timeout=300)
        return done.returncode, done.stderr.decode()
    master, slave = pty.openpty()
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=slave, env=env)
        os.close(slave)
        seen = b""
        while select.select([master], [], [], 300)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other end closed: the command ended
                break
            if not chunk:
                break
            seen += chunk
        process.communicate(timeout=300)
    finally:
        os.close(master)
    return process.returncode, ESCAPES.sub("", seen.decode(errors="replace"))


def test_import_export_and_dispatch_show_progress_on_a_terminal(root: Path) -> None:
    code, shown = run(root, "import", "rec", "--file", str(root / "news.csv"), terminal=True)
    assert code == 0, shown
    assert f"{ROWS} rows" in shown  # rows read; the bar follows the file's bytes
    size = (root / "news.csv").stat().st_size
    assert f"{size / 1000:.1f}/{size / 1000:.1f} kB" in shown
    # A gzipped file: the bar follows the compressed bytes, the file's own size.
    packed = root / "news.csv.gz"
    packed.write_bytes(gzip.compress((root / "news.csv").read_bytes()))
    code, shown = run(root, "import", "rec", "--file", str(packed), terminal=True)
    assert code == 0, shown
    kb = packed.stat().st_size / 1000
    assert f"{ROWS} rows" in shown and f"{kb:.1f}/{kb:.1f} kB" in shown, shown

    code, shown = run(root, "export", "out", terminal=True)
    assert code == 0, shown
    assert f"{ROWS} rows" in shown

    new_confirmations(root, "t")
    code, shown = run(root, "dispatch", "welcome", terminal=True)
    assert code == 0, shown
    assert "3/3 sent" in shown


@pytest.mark.parametrize(
    ("options", "terminal"),
    [((), False), (("--json",), True), (("-q",), True)],
    ids=["pipe", "json", "quiet"],
)
def test_no_progress_off_a_terminal_or_when_asked(
    root: Path, options: tuple[str, ...], terminal: bool
) -> None:
    code, shown = run(
        root, *options, "import", "rec", "--file", str(root / "news.csv"), terminal=terminal
    )
    assert code == 0, shown
    assert " rows" not in shown
    code, shown = run(root, *options, "export", "out", terminal=terminal)
    assert code == 0, shown
    assert " rows" not in shown
    new_confirmations(root, "x")
    code, shown = run(root, *options, "dispatch", "welcome", terminal=terminal)
    assert code == 0, shown
    assert " sent" not in shown
