"""Several cron hosts sharing one PostgreSQL store, simulated honestly.

Each "host" is a process tree in PID and UTS namespaces of its own (`unshare --pid --fork
--mount-proc --uts`, another hostname): its pids mean nothing to the others, exactly as on
separate machines, and only the store and its server are shared.

Nothing here waits on a clock: a host is held mid-run by a webhook that does not answer until
the test lets it (the run's notice is sent while it still holds its job lock), and the test
waits for conditions the server shows (the job's lock held, a session gone), never for a time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
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
