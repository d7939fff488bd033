"""One transaction per run on PostgreSQL: kill -9 of the importing process while its rows
stream in through COPY, while the import decides, and while it writes the list leaves the
store's data as it was; the next run marks the dead one interrupted and imports the file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Any

import pytest
from conftest import Workspace
from test_import_kill import CONFIG, write_file

# The server ends a dead client's session (and its locks) at the latest when the statement
# it was running ends; a few seconds here, bounded generously for a loaded machine.
WAIT = 120.0
ROWS = 150_000

pytestmark = pytest.mark.stores("postgres")  # the SQLite twin is tests/test_import_kill.py


def big_file(ws: Workspace, name: str, rows: int, *, tag: str) -> str:
    path = ws.root / name
    write_file(path, rows, tag=tag)
    return str(path)


def start(ws: Workspace, file: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["campaign-sync", "--config", str(ws.config), "--json", "import", "rec", "--file", file],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def snapshot(ws: Workspace) -> dict[str, list[tuple[Any, ...]]]:
    tables = ("lists", "recipients", "blocklist", "unsubscribers", "bounces")
    return {table: ws.query(f"SELECT * FROM {table} ORDER BY 1, 2") for table in tables}


def statement_running(ws: Workspace, start_of_statement: str) -> bool:
    """Whether a campaign-sync session of this store is running that statement now."""
    found = ws.query(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'campaign-sync' "
        "AND state = 'active' AND ltrim(query, E' \\n') LIKE ? AND pid <> pg_backend_pid()",
        (start_of_statement + "%",),
    )
    return bool(found[0][0])


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.002)


@pytest.mark.parametrize(
    "statement",
    [
        "COPY incoming_raw",  # the rows streaming in
        "INSERT INTO incoming",  # deciding each address's action
        "INSERT INTO recipients",  # writing the new members
    ],
)
def test_kill_9_mid_import_leaves_the_store_unchanged_and_the_next_run_imports(
    ws: Workspace, statement: str
) -> None:
    ws.write_config(text=CONFIG)
    first = start(ws, big_file(ws, "first.csv", 1000, tag="Old"))
    assert first.communicate(timeout=WAIT)[0], "the first import printed nothing"
    assert first.returncode == 0
    before = snapshot(ws)
    big = big_file(ws, "big.csv", ROWS, tag="New")

    child = start(ws, big)
    try:
        wait_for(
            lambda: statement_running(ws, statement) or child.poll() is not None,
            f"no {statement} seen",
        )
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=WAIT) == -signal.SIGKILL, "the import ended before the kill"
    assert snapshot(ws) == before
    assert ws.query("SELECT id, status FROM runs ORDER BY id") == [(1, "succeeded"), (2, "running")]

    # Its session goes when the server notices the client is gone; then the job is free.
    wait_for(lambda: not statement_running(ws, statement), "the dead session stays")
    rerun = start(ws, big)
    output, errors = rerun.communicate(timeout=WAIT)
    assert rerun.returncode == 0, errors
    assert json.loads(output)["counts"]["inserted"] == ROWS - 1000
    assert ws.query("SELECT id, status FROM runs ORDER BY id") == [
        (1, "succeeded"), (2, "interrupted"), (3, "succeeded")
    ]  # fmt: skip
    assert ws.query("SELECT status, count(*) FROM recipients GROUP BY 1") == [("active", ROWS)]
    assert ws.query("SELECT fields FROM recipients WHERE email = 'user999@example.com'") == [
        ({"first_name": "New999", "city": "City 29"},)
    ]
