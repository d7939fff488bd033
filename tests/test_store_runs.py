"""Run records, job locks and status commands through the store boundary, on both stores.

What a run records (skipped, failed), what history/list-jobs/check show of it, the job lock
(exit 75, nothing recorded) and dead runs (shown, then recorded, as `interrupted`) must be the
same whichever backend holds the store. PostgreSQL adds runs of other hosts: a run is alive
while some session holds its job's lock, whatever its pid says.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from conftest import BASE_CONFIG, Workspace

pytestmark = pytest.mark.stores("sqlite", "postgres")

JOBS = """\
  quiet-import:
    type: recipient-import
    list: newsletter
    schedule: daily 02:30
    source: {server: inbox, path: /nothing.csv, missing: skip}
  strict-import:
    type: recipient-import
    list: newsletter
    source: {server: inbox, path: /required.csv}
"""


def _json(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(done.stdout)


@contextmanager
def job_locked(ws: Workspace, job: str) -> Iterator[None]:
    """Hold `job`'s lock the way a run on another process (or host) holds it."""
    if ws.pg is None:
        fd = os.open(ws.root / "var" / "locks" / f"{job}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
        return
    with ws._pg() as conn:
        key = f"{ws.pg.name}/job/{job}"
        conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
        yield


def _dead_pid() -> int:
    child = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, check=True)
    return int(child.stdout)


def test_skipped_and_failed_runs_are_recorded_and_shown_alike(ws: Workspace) -> None:
    ws.write_config(text=BASE_CONFIG.format(extra=JOBS))
    assert ws.run("import", "quiet-import").returncode == 0
    failed = ws.run("--json", "import", "strict-import")
    assert failed.returncode == 3
    assert _json(failed)["error"] == "no file /required.csv on server 'inbox'"

    runs = _json(ws.run("--json", "history"))
    assert [(r["job"], r["status"], r["run_id"]) for r in runs] == [
        ("strict-import", "failed", 2),
        ("quiet-import", "skipped", 1),
    ]
    assert runs[1]["message"] == "no file /nothing.csv on server 'inbox' (missing: skip)"
    assert runs[0]["duration_seconds"] is not None and runs[0]["finished"] > runs[0]["started"]
    states = {state["name"]: state for state in _json(ws.run("--json", "list-jobs"))}
    assert states["quiet-import"]["state"] == "idle"
    assert states["strict-import"]["state"] == "failing"
    assert states["strict-import"]["last_run"]["error"] == "no file /required.csv on server 'inbox'"
    check = ws.run("check")
    assert check.returncode == 1
    assert "strict-import: last run failed at" in check.stdout
    assert [r["run_id"] for r in _json(ws.run("--json", "history", "quiet-import"))] == [1]


def test_a_job_whose_lock_is_held_exits_75_and_records_nothing(ws: Workspace) -> None:
    ws.write_config(text=BASE_CONFIG.format(extra=JOBS))
    assert ws.run("import", "quiet-import").returncode == 0  # the store and folders exist
    before = ws.dump()
    with job_locked(ws, "quiet-import"):
        done = ws.run("import", "quiet-import")
    assert done.returncode == 75
    assert "another run of 'quiet-import' is in progress; this one changed nothing" in done.stderr
    assert ws.dump() == before
    assert ws.run("import", "quiet-import").returncode == 0  # free again once released


def test_a_dead_run_reads_interrupted_and_its_next_run_records_it(ws: Workspace) -> None:
    ws.write_config(text=BASE_CONFIG.format(extra=JOBS))
    assert ws.run("import", "quiet-import").returncode == 0
    # A run whose process died mid-way: on SQLite a pid that is gone on this host; on
    # PostgreSQL another host's run whose job lock no session holds.
    host = os.uname().nodename if ws.pg is None else "another-host"
    ws.query(
        "INSERT INTO runs (job, type, status, pid, host, started) "
        "VALUES ('strict-import', 'recipient-import', 'running', ?, ?, ?)",
        (_dead_pid(), host, "2026-12-01T02:30:00.000000+00:00"),
    )
    states = {state["name"]: state for state in _json(ws.run("--json", "list-jobs"))}
    assert states["strict-import"]["state"] == "failing"
    assert states["strict-import"]["last_run"]["status"] == "interrupted"
    assert ws.run("--json", "list-jobs", "--running").stdout.strip() == "[]"
    assert ws.query("SELECT status FROM runs WHERE id = 2") == [("running",)]  # only read

    assert ws.run("import", "strict-import").returncode == 3  # its next run records it
    [(status, error, finished)] = ws.query("SELECT status, error, finished FROM runs WHERE id = 2")
    assert (status, error) == ("interrupted", "the process ended before the run finished")
    assert finished is not None


def test_a_running_run_shows_while_its_lock_is_held(ws: Workspace) -> None:
    ws.write_config(text=BASE_CONFIG.format(extra=JOBS))
    assert ws.run("import", "quiet-import").returncode == 0
    pid = os.getpid()  # alive here; on PostgreSQL only the lock counts
    host = os.uname().nodename if ws.pg is None else "db-host-2"
    ws.query(
        "INSERT INTO runs (job, type, status, pid, host, started) "
        "VALUES ('strict-import', 'recipient-import', 'running', ?, ?, ?)",
        (pid, host, "2026-12-01T02:30:00.000000+00:00"),
    )
    with job_locked(ws, "strict-import"):
        running = _json(ws.run("--json", "list-jobs", "--running"))
        assert [
            (s["name"], s["state"], s["running"]["host"], s["running"]["pid"]) for s in running
        ] == [("strict-import", "running", host, pid)]
        table = ws.run("list-jobs", "--running").stdout.splitlines()
        assert table[1].split()[:4] == ["strict-import", "recipient-import", host, str(pid)]
        assert ws.run("import", "strict-import").returncode == 75
    assert ws.query("SELECT status FROM runs WHERE id = 2") == [("running",)]


@pytest.mark.stores("postgres")
def test_a_schema_that_does_not_exist_is_one_line(ws: Workspace) -> None:
    assert ws.pg is not None
    ws.write_config(text=BASE_CONFIG.format(extra=JOBS))
    ws.config.write_text(
        ws.config.read_text().replace(f"store_schema: {ws.pg.name}", "store_schema: nowhere")
    )
    done = ws.run("import", "quiet-import")
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].endswith(
        "the schema does not exist; create it for the store's role "
        '(CREATE SCHEMA "nowhere" AUTHORIZATION "campaign") or set `store_schema`'
    )
    # Status commands create nothing: no store there yet reads as "no runs".
    assert ws.run("--json", "history").returncode in (0, 2)


@pytest.mark.stores("sqlite")  # the key only makes sense beside a PostgreSQL URL
def test_store_schema_beside_an_sqlite_file_is_a_config_error(ws: Workspace) -> None:
    ws.write_config(text=BASE_CONFIG.format(extra=JOBS))
    ws.config.write_text("store_schema: campaign\n" + ws.config.read_text())
    done = ws.run("list-jobs")
    assert done.returncode == 2
    assert done.stderr == (
        f"campaign-sync: error: {ws.config}: At 'store_schema': only a PostgreSQL store has a "
        "schema; remove `store_schema`\n"
    )
