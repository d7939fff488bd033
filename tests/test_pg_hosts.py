"""Several cron hosts sharing one PostgreSQL store, simulated honestly.

Each "host" is a process tree in PID and UTS namespaces of its own (`unshare --pid --fork
--mount-proc --uts`, another hostname): its pids mean nothing to the others, exactly as on
separate machines, and only the store and its server are shared.

Nothing here waits on a clock: a host is held mid-run by a webhook that does not answer until
the test lets it (the run's notice is sent while it still holds its job lock), and the test
waits for conditions the server shows (the job's lock held, a session gone), never for a time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import BASE_CONFIG, Workspace
from webhook_server import WebhookTestServer

pytestmark = pytest.mark.stores("postgres")

JOBS = """\
  quiet-import:
    type: recipient-import
    list: newsletter
    source: {server: inbox, path: /nothing.csv, missing: skip}
"""


def _require_namespaces() -> None:
    # Root is needed to make PID and UTS namespaces; CI runs as root, and a developer's run
    # without it must not pass as if the hosts had been tested.
    assert shutil.which("unshare"), "unshare (util-linux) is needed for the several-hosts tests"
    assert os.geteuid() == 0, "the several-hosts tests make namespaces: run them as root"


def on_host(host: str, ws: Workspace, *args: str) -> subprocess.Popen[str]:
    """`campaign-sync ARGS` on a host of its own: another hostname, its own pid numbers."""
    _require_namespaces()
    command = [
        "unshare", "--pid", "--fork", "--mount-proc", "--uts",
        "sh", "-c", 'hostname "$0" && exec "$@"', host,
        "campaign-sync", "--config", str(ws.config), *args,
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


def wait_for(condition: Callable[[], Any], what: str) -> Any:
    """Poll the server until `condition` holds (a generous cap only turns a hang into a
    failure that says what never happened)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


def lock_holders(ws: Workspace, job: str) -> list[int]:
    """Server pids of the sessions holding `job`'s lock."""
    assert ws.pg is not None
    rows = ws.query(
        "SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted "
        "AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(?, 0)",
        (f"{ws.pg.name}/job/{job}",),
    )
    return [row[0] for row in rows]


def configure(ws: Workspace, hook: WebhookTestServer) -> None:
    extra = f"notify: {{webhook: '{hook.url}', webhook_timeout: 300}}\n"
    ws.write_config(text=extra + BASE_CONFIG.format(extra=JOBS))


def test_a_job_runs_once_across_hosts(ws: Workspace) -> None:
    with WebhookTestServer(mode="hang") as hook:
        configure(ws, hook)
        host_a = on_host("host-a", ws, "import", "quiet-import")
        wait_for(lambda: lock_holders(ws, "quiet-import"), "host-a holding the job's lock")
        wait_for(lambda: hook.requests, "host-a sending its notice")  # its run is recorded

        others = [on_host(name, ws, "import", "quiet-import") for name in ("host-b", "host-c")]
        for other in others:
            code, _, err = finished(other)
            assert code == 75
            assert "another run of 'quiet-import' is in progress; this one changed nothing" in err

    code, _, err = finished(host_a)  # the webhook is gone: host-a finishes
    assert code == 0, err
    assert ws.query("SELECT job, status, host FROM runs ORDER BY id") == [
        ("quiet-import", "skipped", "host-a")
    ]


def _namespace_init(process: subprocess.Popen[str]) -> int:
    """The pid, as this host sees it, of the first process of `process`'s PID namespace:
    SIGKILL to it ends every process of that "host" at once."""
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    return int(wait_for(lambda: children.read_text().split(), "the host's first process")[0])


def test_a_host_killed_mid_import_leaves_nothing_and_another_host_carries_on(
    ws: Workspace,
) -> None:
    import psycopg
    from conftest import SAMPLE
    from test_pg_faults import NEW_ROWS, _waiting_on

    assert ws.pg is not None
    ws.drop("/import/newsletter_20261101.csv", SAMPLE)
    assert ws.run("import", "newsletter-import", "--date", "2026-11-01").returncode == 0
    before = [line for line in ws.dump() if '"runs"' not in line]
    ws.drop("/import/newsletter_20261102.csv", NEW_ROWS)
    # Host A is held inside its import's transaction: its write waits for this table lock.
    blocker = psycopg.connect(ws.pg.admin_url)
    blocker.execute(f'LOCK TABLE "{ws.pg.name}".recipients IN SHARE ROW EXCLUSIVE MODE')
    host_a = on_host("host-a", ws, "import", "newsletter-import", "--date", "2026-11-02")
    init = _namespace_init(host_a)
    wait_for(
        lambda: _waiting_on(ws, "recipients"), "host-a's import waiting inside its transaction"
    )
    os.kill(init, signal.SIGKILL)  # the whole host, mid-import
    host_a.communicate(timeout=60)
    wait_for(lambda: not lock_holders(ws, "newsletter-import"), "host-a's session ended")
    blocker.close()

    assert [line for line in ws.dump() if '"runs"' not in line] == before
    seen = on_host("host-b", ws, "--json", "history", "newsletter-import")
    code, out, _ = finished(seen)
    assert code == 0
    assert [(run["host"], run["status"]) for run in json.loads(out)][0] == ("host-a", "interrupted")

    code, _, err = finished(
        on_host("host-b", ws, "import", "newsletter-import", "--date", "2026-11-02")
    )
    assert code == 0, err
    assert {"dora@example.com", "emil@example.com"} <= set(ws.recipients())
    assert ws.query("SELECT host, status FROM runs ORDER BY id") == [
        (os.uname().nodename, "succeeded"),
        ("host-a", "interrupted"),
        ("host-b", "succeeded"),
    ]
