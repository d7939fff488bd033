"""Notices end to end: the installed command, a real SMTP server and a real webhook."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from conftest import SAMPLE, Workspace
from smtp_server import ClosedPort, SmtpTestServer
from webhook_server import WebhookTestServer

pytestmark = pytest.mark.stores("sqlite", "postgres")


@pytest.fixture
def smtp() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as server:
        yield server


def configure(ws: Workspace, host: str, port: int, webhook: str | None = None) -> None:
    extra = (
        f"smtp:\n  host: {host}\n  port: {port}\n  from: sync@example.com\n  timeout: 30\n"
        "  password: ${SMTP_PASSWORD:-}\n"
        "notify:\n  to: [ops@example.com]\n"
    )
    if webhook:
        extra += f"  webhook: {webhook}\n  webhook_timeout: 60\n"
    ws.write_config(text=ws.config.read_text() + extra)


def test_import_success_notice_is_mailed_and_posted(ws: Workspace, smtp: SmtpTestServer) -> None:
    with WebhookTestServer() as hook:
        configure(ws, smtp.host, smtp.port, hook.url)
        ws.drop("/import/newsletter_20261101.csv", SAMPLE + "bad-address;X;Y;\n")
        done = ws.run("import", "newsletter-import", "--date", "2026-11-01")
        assert done.returncode == 0, done.stderr
        assert len(smtp.messages) == 1
        notice = smtp.messages[0]
        assert notice.rcpt_tos == ["ops@example.com"]
        assert notice.message["Subject"] == (
            "[campaign-sync] newsletter-import succeeded: 3 inserted, 1 rejected"
        )
        assert "line 5: missing @" in notice.text
        assert [request.json["status"] for request in hook.requests] == ["succeeded"]


def test_failure_notice_for_an_export(ws: Workspace, smtp: SmtpTestServer) -> None:
    configure(ws, smtp.host, smtp.port)
    ws.write_config(
        text=ws.config.read_text()
        .replace("inbox\n", "inbox\n  nowhere:\n    type: local\n    path: /proc/no-such-dir\n", 1)
        .replace("target: {server: inbox", "target: {server: nowhere")
    )
    done = ws.run("export", "newsletter-export")
    assert done.returncode == 1
    assert len(smtp.messages) == 1
    assert (
        smtp.messages[0].message["Subject"].startswith("[campaign-sync] newsletter-export FAILED")
    )


def test_unreachable_smtp_is_a_warning_not_a_failure(ws: Workspace) -> None:
    with ClosedPort() as closed:
        configure(ws, closed.host, closed.port)
        ws.drop("/import/newsletter_20261101.csv", SAMPLE)
        done = ws.run("--json", "import", "newsletter-import", "--date", "2026-11-01")
    assert done.returncode == 0
    run = json.loads(done.stdout)
    assert run["status"] == "succeeded"
    assert run["warnings"] and "not sent" in run["warnings"][0]
    assert len(ws.recipients()) == 3  # nothing rolled back
    recorded = json.loads(ws.query("SELECT warnings FROM runs")[0][0])
    assert recorded == run["warnings"]


def test_no_secret_in_any_output(ws: Workspace, smtp: SmtpTestServer) -> None:
    configure(ws, smtp.host, smtp.port)
    secret = "pa55-w0rd-xyz"
    ws.drop("/import/newsletter_20261101.csv", SAMPLE)
    done = ws.run(
        "-v",
        "--json",
        "import",
        "newsletter-import",
        "--date",
        "2026-11-01",
        env={"SMTP_PASSWORD": secret},
    )
    assert secret not in done.stdout + done.stderr
    assert all(secret not in m.text for m in smtp.messages)
    assert all(secret not in line for line in ws.dump())


def test_a_store_that_cannot_be_opened_still_sends_the_failure_notice(
    ws: Workspace, smtp: SmtpTestServer
) -> None:
    configure(ws, smtp.host, smtp.port)
    if ws.pg is None:
        ws.store.write_bytes(b"not a database at all " * 100)
        error = (
            f"cannot open the store {ws.store}: the file is not a campaign-sync store (not an "
            "SQLite database); set `store` to the store's file"
        )
    else:  # a database the server does not have
        wrong = ws.pg.url.rsplit("/", 1)[0] + "/nosuchdb"
        ws.config.write_text(ws.config.read_text().replace(ws.pg.url, wrong, 1))
        error = (
            f"cannot connect to the store {wrong}: the database 'nosuchdb' does not exist on the "
            "server; create it or correct the database in `store`"
        )
    ws.drop("/import/newsletter_20261101.csv", SAMPLE)
    done = ws.run("import", "newsletter-import", "--date", "2026-11-01")
    assert (done.returncode, done.stderr) == (2, f"campaign-sync: error: {error}\n")
    assert len(smtp.messages) == 1
    notice = smtp.messages[0]
    assert notice.message["Subject"].startswith("[campaign-sync] newsletter-import FAILED")
    assert error in notice.text


def test_a_failing_webhook_is_one_warning_line_and_the_run_stands(
    ws: Workspace, smtp: SmtpTestServer
) -> None:
    # https to a plain-HTTP server: the TLS handshake fails after the import committed. The
    # URL's password `p` is too short to mask: it must not garble the line (`htt***s://`).
    with WebhookTestServer() as hook:
        configure(ws, smtp.host, smtp.port, hook.url.replace("http://", "https://ops:p@"))
        ws.drop("/import/newsletter_20261101.csv", SAMPLE)
        done = ws.run("--json", "import", "newsletter-import", "--date", "2026-11-01")
        assert hook.requests == []
    assert done.returncode == 0
    run = json.loads(done.stdout)
    assert (run["status"], run["error"]) == ("succeeded", None)
    [warning] = run["warnings"]
    assert re.fullmatch(
        r"webhook notification to https://127\.0\.0\.1:\d+ failed: TLS failed \([a-z ]+\)",
        warning,
    ), warning
    assert done.stderr == f"campaign-sync: WARNING: {warning}\n"
    assert ws.query("SELECT status, warnings FROM runs") == [("succeeded", json.dumps([warning]))]
    assert len(ws.recipients()) == 3
    assert len(smtp.messages) == 1  # the mail notice went out all the same


PLAINTEXT_AUTH = (
    "At 'smtp.starttls': required when smtp.user is set, or the password would be sent "
    "unencrypted: set starttls: true (or ssl: true for port 465); for a relay on this "
    "machine, allow_plaintext_auth: true"
)


def test_smtp_login_without_tls_needs_the_loopback_opt_in(ws: Workspace) -> None:
    auth = {"mailer": "mail-pass-0042"}
    env = {"SMTP_PASSWORD": "mail-pass-0042"}
    with SmtpTestServer(auth=auth, auth_require_tls=False) as server:
        configure(ws, server.host, server.port)
        ws.write_config(
            text=ws.config.read_text().replace("  password:", "  user: mailer\n  password:")
        )
        ws.drop("/import/newsletter_20261101.csv", SAMPLE)
        validated = ws.run("validate", env=env)
        refused = ws.run("import", "newsletter-import", "--date", "2026-11-01", env=env)
        assert server.auth_commands == []
        ws.write_config(
            text=ws.config.read_text().replace("  user:", "  allow_plaintext_auth: true\n  user:")
        )
        done = ws.run("import", "newsletter-import", "--date", "2026-11-01", env=env)
        assert server.auth_commands == [False]
        [notice] = server.messages
    assert (validated.returncode, validated.stdout) == (2, f"{ws.config}: {PLAINTEXT_AUTH}\n")
    assert refused.returncode == 2
    assert refused.stderr == f"campaign-sync: error: {ws.config}: {PLAINTEXT_AUTH}\n"
    assert done.returncode == 0, done.stderr
    assert notice.authenticated_as == "mailer"
