"""PostgreSQL restarted under a run (`pg_ctl restart -m immediate`, as if the server died).

The run is held at a known point inside its work first: another session holds a table lock the
run's next statement must wait for, and the test waits until the server shows the run waiting
on it. Then the server is crash-restarted. Each time: a failed run with one line and a notice,
nothing half-applied, the failure recorded once the server is back, and the next run succeeds.
(Dispatch has the same test in test_dispatch_hosts.py.)
"""

from __future__ import annotations

import json
import subprocess
from contextlib import suppress
from typing import Any

import psycopg
import pytest
from conftest import SAMPLE, Workspace
from pgserver import PgServer
from test_pg_hosts import wait_for
from webhook_server import WebhookTestServer

pytestmark = pytest.mark.stores("postgres")

NEW_ROWS = "E-Mail;Vorname;Nachname;DOI\ndora@example.com;Dora;D;\nemil@example.com;Emil;E;\n"


def _waiting_on(ws: Workspace, table: str) -> bool:
    assert ws.pg is not None
    rows = ws.query(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE NOT l.granted AND c.relname = ? AND n.nspname = ?",
        (table, ws.pg.name),
    )
    return bool(rows[0][0])


def _blocker(ws: Workspace, mode: str) -> Any:
    """A session holding `mode` on the recipients table until the server goes down."""
    assert ws.pg is not None
    conn = psycopg.connect(ws.pg.admin_url)
    conn.execute(f'LOCK TABLE "{ws.pg.name}".recipients IN {mode} MODE')
    return conn


def _start(ws: Workspace, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["campaign-sync", "--config", str(ws.config), "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _crash_restart_while_waiting(
    ws: Workspace, pg_server: PgServer, mode: str, *args: str
) -> tuple[dict[str, Any], str]:
    blocker = _blocker(ws, mode)
    run = _start(ws, *args)
    wait_for(lambda: _waiting_on(ws, "recipients"), "the run waiting for the recipients table")
    pg_server.restart_immediate()
    with suppress(psycopg.Error):
        blocker.close()
    out, err = run.communicate(timeout=120)
    assert run.returncode == 1, err
    return json.loads(out), err


def _failure_is_one_line(result: dict[str, Any], err: str, hook: WebhookTestServer) -> None:
    assert result["status"] == "failed"
    assert result["error"].startswith("cannot write to the store postgresql://")
    assert "the connection to the server was lost" in result["error"]
    assert "\n" not in result["error"] and "Traceback" not in err
    notices = [json.loads(request.body) for request in hook.requests]
    assert any(notice.get("error") == result["error"] for notice in notices), notices


def _configure(ws: Workspace, hook: WebhookTestServer) -> None:
    text = ws.config.read_text()
    ws.config.write_text(f"notify: {{webhook: '{hook.url}'}}\n" + text)


def test_a_restart_mid_import_applies_nothing_and_the_next_run_imports(
    ws: Workspace, pg_server: PgServer
) -> None:
    with WebhookTestServer() as hook:
        _configure(ws, hook)
        ws.drop("/import/newsletter_20261101.csv", SAMPLE)
        assert ws.run("import", "newsletter-import", "--date", "2026-11-01").returncode == 0
        before = [line for line in ws.dump() if '"runs"' not in line]
        ws.drop("/import/newsletter_20261102.csv", NEW_ROWS)

        result, err = _crash_restart_while_waiting(
            ws, pg_server, "SHARE ROW EXCLUSIVE", "import", "newsletter-import", "--date",
            "2026-11-02",
        )  # fmt: skip
        _failure_is_one_line(result, err, hook)
        assert [line for line in ws.dump() if '"runs"' not in line] == before
        assert ws.query("SELECT status, error FROM runs ORDER BY id") == [
            ("succeeded", None),
            ("failed", result["error"]),
        ]

        again = ws.run("import", "newsletter-import", "--date", "2026-11-02")
        assert again.returncode == 0, again.stderr
    assert {"dora@example.com", "emil@example.com"} <= set(ws.recipients())


def test_a_restart_mid_export_places_no_file_and_the_next_run_exports(
    ws: Workspace, pg_server: PgServer
) -> None:
    target = ws.inbox / "export" / "newsletter.csv"
    with WebhookTestServer() as hook:
        _configure(ws, hook)
        ws.drop("/import/newsletter_20261101.csv", SAMPLE)
        assert ws.run("import", "newsletter-import", "--date", "2026-11-01").returncode == 0
        target.parent.mkdir(parents=True, exist_ok=True)

        result, err = _crash_restart_while_waiting(
            ws, pg_server, "ACCESS EXCLUSIVE", "export", "newsletter-export"
        )
        _failure_is_one_line(result, err, hook)
        assert not target.exists()
        assert list(target.parent.iterdir()) == []  # no partial file beside it either
        assert [p for p in (ws.root / "var" / "staging").rglob("*") if p.is_file()] == []

        again = ws.run("export", "newsletter-export")
        assert again.returncode == 0, again.stderr
    assert target.read_text().splitlines()[1:] == [
        "anna@example.com,Anna,Schmidt",
        "ben@example.com,Ben,Müller",
        "carla@example.org,Carla,Rossi",
    ]
