"""A PostgreSQL store's password never leaves the process.

The password reaches campaign-sync in the store's URL (`postgresql://user:PASSWORD@…`) or in
libpq's PGPASSWORD. Runs that succeed, fail, and cannot even log in (a wrong password), and
every status command, run at the most verbose log level; every channel is scanned: stdout,
stderr, JSON, the log file, the notices (webhook bodies and paths), work_dir, and every row
of the store itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from conftest import BASE_CONFIG, Workspace
from pgfixtures import PgSchema
from psycopg import sql
from test_reliability_secrets import Scanner, _forms
from webhook_server import WebhookTestServer

pytestmark = pytest.mark.stores("postgres")

PASSWORD = "pgPw_7d41e!x%&<q>"
WRONG = "wrongPg_31f0c9"

JOBS = """\
  quiet-import:
    type: recipient-import
    list: newsletter
    source: {server: inbox, path: /nothing.csv, missing: skip}
  strict-import:
    type: recipient-import
    list: newsletter
    source: {server: inbox, path: /required.csv}
"""


def _role_with_password(pg: PgSchema) -> str:
    """A login role of its own with PASSWORD, free to use the test's schema."""
    import psycopg

    role = f"{pg.name}_r"[:63]
    with psycopg.connect(pg.admin_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(PASSWORD)
            )
        )
        admin.execute(
            sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(
                sql.Identifier(pg.name), sql.Identifier(role)
            )
        )
    return role


def _config(ws: Workspace, url: str, hook: WebhookTestServer) -> Path:
    assert ws.pg is not None
    top = (
        f"store: {url}\nstore_schema: {ws.pg.name}\nlog_file: var/campaign-sync.log\n"
        f"notify: {{webhook: '{hook.url}'}}\n"
    )
    text = BASE_CONFIG.format(extra=JOBS).replace("store: store.db\n", top)
    ws.config.write_text(text, encoding="utf-8")
    return ws.config


def _leaks(scanner: Scanner, secrets: list[str]) -> list[str]:
    return [
        f"{secret!r} in {label}"
        for label, data in scanner.channels.items()
        for secret in secrets
        for form in _forms(secret)
        if form.encode() in data
    ]


def _runs(ws: Workspace, scanner: Scanner, env: dict[str, str]) -> None:
    for args, code in (
        (("import", "quiet-import"), 0),
        (("import", "strict-import"), 3),
        (("list-jobs",), 0),
        (("history",), 0),
        (("check",), 1),
        (("validate",), 0),
    ):
        for json_flag in ((), ("--json",)):
            done = ws.run("-vv", *json_flag, *args, env=env)
            assert done.returncode == code, (args, done.stderr)
            scanner.add_proc(" ".join(args), done)


def test_no_password_of_the_store_in_any_channel(ws: Workspace) -> None:
    assert ws.pg is not None
    role = _role_with_password(ws.pg)
    server = urlsplit(ws.pg.url)
    in_url = f"postgresql://{role}:{quote(PASSWORD, safe='')}@{server.netloc.split('@')[1]}"
    no_password = f"postgresql://{role}@{server.netloc.split('@')[1]}"
    scanner = Scanner()
    # No password file: what is in the URL or PGPASSWORD is all libpq has.
    env = {"PGPASSFILE": os.devnull}
    with WebhookTestServer() as hook:
        _config(ws, in_url + server.path, hook)
        _runs(ws, scanner, env)
        _config(ws, no_password + server.path, hook)
        _runs(ws, scanner, {**env, "PGPASSWORD": PASSWORD})

        wrong = f"postgresql://{role}:{WRONG}@{server.netloc.split('@')[1]}{server.path}"
        _config(ws, wrong, hook)
        refused = ws.run("-vv", "--json", "import", "quiet-import", env=env)
        assert refused.returncode == 2
        assert refused.stderr.splitlines()[-1].startswith(
            f"campaign-sync: error: cannot connect to the store postgresql://{role}@"
        )
        scanner.add_proc("wrong password", refused)
        assert len(hook.requests) >= 4  # notices of the failures, the refusal included
        for request in hook.requests:
            scanner.add(f"webhook {request.path}", request.body)
            scanner.add("webhook headers", repr(request.headers))
    scanner.add_tree("work_dir", ws.root / "var")
    scanner.add("store", "\n".join(ws.dump()))
    assert _leaks(scanner, [PASSWORD, WRONG]) == []
