"""Concurrency: overlapping runs of one job, and different jobs writing one list at once.

Every run is a separate process of this tree's `campaign-sync`, as cron would start them.
Each test runs on both stores: a SQLite file (its file lock, WAL readers) and a PostgreSQL
schema (its advisory lock, row locks and MVCC readers).
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
from conftest import Workspace
from faults import (
    EXIT_LOCKED,
    EXIT_OK,
    assert_no_traceback,
    generate_recipients,
    json_out,
    start_cli,
)
from webhook_server import WebhookTestServer

pytestmark = pytest.mark.stores("sqlite", "postgres")

OVERLAPPING = 10


def _config(ws: Workspace, jobs: str, webhook: str | None = None) -> Path:
    notify = f"notify:\n  webhook: {webhook}\n  webhook_timeout: 60\n" if webhook else ""
    ws.config.write_text(
        f"{ws.store_setting}\nwork_dir: var\ntimezone: Europe/Berlin\n"
        "servers:\n  inbox: {type: local, path: inbox}\n" + notify + "jobs:\n" + jobs,
        encoding="utf-8",
    )
    return ws.config


def _wait_for(predicate, timeout: float, what: str) -> None:  # noqa: ANN001 - a callable
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_ten_overlapping_runs_of_one_job_exactly_one_runs(ws: Workspace) -> None:
    """10 invocations at once: one imports, nine exit 75 having changed nothing.

    The winner is held inside its lock deterministically: its webhook notice goes to a
    server that does not answer until every loser has exited, so the overlap does not
    depend on how fast ten Python processes start on a loaded CI machine.
    """
    (ws.inbox / "import").mkdir(parents=True)
    generate_recipients(ws.inbox / "import" / "list.csv", 2000)
    with WebhookTestServer(mode="hang") as hook:
        config = _config(
            ws,
            "  list-import:\n    type: recipient-import\n    list: newsletter\n"
            "    source: {server: inbox, path: /import/list.csv}\n",
            webhook=hook.url,
        )
        procs = [start_cli(config, "--json", "import", "list-import") for _ in range(OVERLAPPING)]
        losers: list[tuple[int, str, str]] = []
        pending = list(procs)
        deadline = time.monotonic() + 90
        while len(losers) < OVERLAPPING - 1 and time.monotonic() < deadline:
            for proc in list(pending):
                if proc.poll() is not None:
                    out, err = proc.communicate()
                    losers.append((proc.returncode, out, err))
                    pending.remove(proc)
            time.sleep(0.02)
        assert len(pending) == 1, f"{len(pending)} runs still going: expected exactly one"
        _wait_for(lambda: len(hook.requests) == 1, 60, "the winner's webhook notice")
        hook.stop()  # release the winner
        out, err = pending[0].communicate(timeout=60)
    assert pending[0].returncode == EXIT_OK, err
    assert json.loads(out)["counts"]["inserted"] == 2000
    for code, out, err in losers:
        assert code == EXIT_LOCKED, err
        assert json.loads(out) == {"error": json.loads(out)["error"], "exit_code": EXIT_LOCKED}
        assert "another run of 'list-import' is in progress" in err
        assert "Traceback" not in err
    # Exactly one run recorded; the nine refused invocations left no trace in the store.
    assert ws.query("SELECT status FROM runs") == [("succeeded",)]
    assert ws.query("SELECT count(*) FROM recipients") == [(2000,)]


def _column(path: Path, name: str) -> dict[str, str]:
    with open(path, encoding="utf-8", newline="") as handle:
        return {row["email"].strip().lower(): row[name].strip() for row in csv.DictReader(handle)}


def test_two_jobs_writing_one_list_at_once_lose_nothing(ws: Workspace) -> None:
    """Two import jobs merge different fields of the same 60,000 recipients at the same time.

    Both must succeed (the second waits for the first's write lock, never "database is
    locked"), and every recipient ends with both jobs' fields: no read-modify-write of a
    recipient's fields outside the writing transaction.
    """
    rows = 60_000
    source = generate_recipients(ws.inbox / "people.csv", rows, seed=3)
    job = (
        "  {name}:\n    type: recipient-import\n    list: newsletter\n"
        "    source: {{server: inbox, path: /people.csv}}\n"
        "    columns: {{email: email, {column}: {column}}}\n"
    )
    config = _config(
        ws,
        job.format(name="names-import", column="first_name")
        + job.format(name="cities-import", column="city"),
    )
    first = start_cli(config, "--json", "import", "names-import")
    second = start_cli(config, "--json", "import", "cities-import")
    results = []
    for proc in (first, second):
        out, err = proc.communicate(timeout=180)
        assert "database is locked" not in err + out
        assert proc.returncode == EXIT_OK, err
        results.append(json.loads(out))
    assert [r["counts"]["read"] for r in results] == [rows, rows]
    # The two runs really overlapped in time (else this test proves nothing).
    spans = sorted((r["started"], r["finished"]) for r in results)
    assert spans[1][0] < spans[0][1], spans

    names, cities = _column(source, "first_name"), _column(source, "city")
    fields = {  # each backend's JSON accessor
        "sqlite": "json_extract(fields, '$.first_name'), json_extract(fields, '$.city')",
        "postgres": "fields->>'first_name', fields->>'city'",
    }[ws.kind]
    stored = ws.query(f"SELECT email, {fields} FROM recipients")
    assert len(stored) == rows
    lost = [email for email, name, city in stored if (name, city) != (names[email], cities[email])]
    assert lost == [], f"{len(lost)} recipients lost an update, e.g. {lost[:3]}"


def test_readers_never_see_locked_store_while_an_import_writes(ws: Workspace) -> None:
    """Status commands during a large import answer at once (SQLite's WAL, PostgreSQL's
    MVCC), with the run as running."""
    generate_recipients(ws.inbox / "big.csv", 100_000, seed=4)
    config = _config(
        ws,
        "  big-import:\n    type: recipient-import\n    list: newsletter\n"
        "    source: {server: inbox, path: /big.csv}\n",
    )
    writer = start_cli(config, "--json", "import", "big-import")
    seen_running = False
    try:
        while writer.poll() is None:
            reader = start_cli(config, "--json", "list-jobs", "--running")
            out, err = reader.communicate(timeout=30)
            assert reader.returncode == EXIT_OK, err
            assert "database is locked" not in err
            seen_running |= bool(json.loads(out))
            status = start_cli(config, "--json", "lists")
            out, err = status.communicate(timeout=30)
            assert status.returncode == EXIT_OK, err
    finally:
        out, err = writer.communicate(timeout=120)
    assert writer.returncode == EXIT_OK, err
    assert json.loads(out)["counts"]["inserted"] == 100_000
    assert seen_running, "list-jobs --running never showed the import while it ran"


def test_no_traceback_helper_is_strict() -> None:
    """The suite's own guard: a traceback in either stream is caught."""
    import subprocess

    fake = subprocess.CompletedProcess([], 1, "", "Traceback (most recent call last):\n  x")
    try:
        assert_no_traceback(fake)
    except AssertionError:
        return
    raise AssertionError("assert_no_traceback let a traceback through")


def test_json_out_names_a_non_json_stdout() -> None:
    import subprocess

    fake = subprocess.CompletedProcess([], 0, "not json", "")
    try:
        json_out(fake)
    except AssertionError as exc:
        assert "not one JSON document" in str(exc)
        return
    raise AssertionError("json_out accepted a non-JSON stdout")
