"""`campaign-sync serve`: the live service, started through the installed CLI, on both stores.

Its answers are the CLI's own documents; it writes nothing (no dead run recorded, no
migration, no store created); the token guards everything but /healthz and the OpenAPI
document and never reaches the log; schemathesis finds nothing against the OpenAPI
document; slow and malformed clients and a store held by a writer do not stall it.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import Workspace
from prometheus_client.parser import text_string_to_metric_families
from test_status import DEAD_PID, prepared, record_run, utc
from test_store_runs import job_locked

pytestmark = pytest.mark.stores("sqlite", "postgres")

TOKEN = "serve-Test-token_7f3a9c0e5b21d4a8"
SERVE_CONFIG = "serve:\n  token: ${CAMPAIGN_SYNC_API_TOKEN}\n"
DEAD = "the process ended before the run finished"


@pytest.fixture(autouse=True)
def token_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The config reads the token from the environment, as an operator would set it."""
    monkeypatch.setenv("CAMPAIGN_SYNC_API_TOKEN", TOKEN)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """A running `campaign-sync serve` and a small client for it."""

    def __init__(self, ws: Workspace, process: subprocess.Popen[str], port: int, log: Path):
        self.ws = ws
        self.process = process
        self.port = port
        self.log = log

    def get(
        self, path: str, *, token: str | None = TOKEN, method: str = "GET", **headers: str
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        if token is not None:
            headers.setdefault("Authorization", f"Bearer {token}")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, headers=headers)
            answer = conn.getresponse()
            return answer.status, answer.headers, answer.read()
        finally:
            conn.close()

    def json(self, path: str) -> Any:
        status, headers, body = self.get(path)
        assert (status, headers["Content-Type"]) == (200, "application/json; charset=utf-8"), body
        return json.loads(body)

    def cli(self, *args: str) -> Any:
        done = self.ws.run("--json", *args)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@contextmanager
def serving(ws: Workspace, *, token: str | None = TOKEN) -> Iterator[Service]:
    """`campaign-sync serve` on a free loopback port until the block ends."""
    port = free_port()
    log = ws.root / "serve.log"
    env = {**os.environ, "CAMPAIGN_SYNC_API_TOKEN": token or ""}
    with open(log, "w", encoding="utf-8") as err:
        process = subprocess.Popen(
            ["campaign-sync", "--config", str(ws.config), "serve", "--bind", f"127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=err, env=env, text=True,
        )  # fmt: skip
    service = Service(ws, process, port, log)
    try:
        _wait_until_up(service)
        yield service
    finally:
        process.terminate()
        process.wait(timeout=60)


def _wait_until_up(service: Service) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert service.process.poll() is None, service.log.read_text()
        try:
            service.get("/healthz", token=None)
            return
        except OSError:
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.1)


def history_of_three_kinds(ws: Workspace) -> Workspace:
    """A succeeded import, a failed one, and a dead run that only reads `interrupted`."""
    ws.write_config(SERVE_CONFIG)
    prepared(ws)  # succeeded, 3 active members
    assert ws.cli("import", "newsletter-import", "--date", "2026-11-05").exit_code == 3
    record_run(
        ws, "newsletter-import", "running", utc(0.01), pid=DEAD_PID, host=os.uname().nodename
    )
    return ws


# --------------------------------------------------------------------------- the documents


def test_answers_are_the_cli_documents_and_nothing_is_written(ws: Workspace) -> None:
    history_of_three_kinds(ws)
    before = ws.dump()
    with serving(ws) as service:
        configured = service.json("/api/jobs/configured")
        assert configured == service.cli("list-jobs")
        assert service.json("/api/jobs/running") == service.cli("list-jobs", "--running") == []
        assert service.json("/api/runs?limit=50") == service.cli("history", "--limit", "50")
        assert service.json("/api/lists") == service.cli("lists")
        detail = service.json("/api/jobs/newsletter-import?limit=2")
        assert detail == {
            "job": configured[0],
            "runs": service.cli("history", "newsletter-import", "--limit", "2"),
        }
        status, headers, body = service.get("/metrics")
        assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert _samples(body.decode()) == _samples(service.cli("metrics")["metrics"])
    last = configured[0]["last_run"]
    assert (configured[0]["state"], last["status"], last["error"]) == (
        "failing",
        "interrupted",
        DEAD,
    )
    assert [run["status"] for run in detail["runs"]] == ["interrupted", "failed"]
    # Read, not recorded: the dead run's row still says `running`; the store is as it was.
    assert ws.query("SELECT status FROM runs WHERE pid = ?", (DEAD_PID,)) == [("running",)]
    assert ws.dump() == before


def _samples(text: str) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    """The samples of a metrics text, less the one that says when it was made."""
    return {
        (sample.name, tuple(sorted(sample.labels.items())), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if family.name != "campaign_sync_metrics_generated_timestamp_seconds"
    }


def test_running_jobs_with_elapsed_time_host_and_pid_and_runs_by_status(ws: Workspace) -> None:
    history_of_three_kinds(ws)
    record_run(
        ws, "newsletter-export", "running", utc(0.001), pid=os.getpid(), host=os.uname().nodename
    )
    with job_locked(ws, "newsletter-export"), serving(ws) as service:
        running = service.json("/api/jobs/running")
        # Asked a moment apart, the two differ in the elapsed seconds only.
        assert _timeless(running) == _timeless(service.cli("list-jobs", "--running"))
        by_status = {
            status: service.json(f"/api/runs?status={status}")
            for status in ("running", "interrupted", "failed", "succeeded", "skipped")
        }
        one = service.json("/api/runs?job=newsletter-import&status=failed&limit=1")
    [job] = running
    assert (job["name"], job["state"]) == ("newsletter-export", "running")
    assert (job["running"]["host"], job["running"]["pid"]) == (os.uname().nodename, os.getpid())
    assert job["running"]["elapsed_seconds"] >= 60
    statuses = {
        status: [(r["job"], r["status"]) for r in runs] for status, runs in by_status.items()
    }
    assert statuses == {
        "running": [("newsletter-export", "running")],
        "interrupted": [("newsletter-import", "interrupted")],
        "failed": [("newsletter-import", "failed")],
        "succeeded": [("newsletter-import", "succeeded")],
        "skipped": [],
    }
    assert one == by_status["failed"]


def _timeless(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**job, "running": {**job["running"], "elapsed_seconds": None}} for job in jobs]


def test_bad_parameters_unknown_jobs_paths_and_methods(ws: Workspace) -> None:
    history_of_three_kinds(ws)
    with serving(ws) as service:
        answers = {
            path: service.get(path)[0]
            for path in (
                "/api/runs?limit=0",
                "/api/runs?limit=1001",
                "/api/runs?limit=ten",
                "/api/runs?limit=",
                "/api/runs?status=lost",
                "/api/runs?job=nobody",
                "/api/runs?limit=1&limit=2",
                "/api/runs?order=asc",
                "/api/jobs/configured?x=1",
                "/api/jobs/newsletter-import?limit=-1",
                "/api/jobs/nobody",
                "/api/jobs/",
                "/api/nothing",
            )
        }
        status, headers, body = service.get("/api/runs", method="POST")
        biggest = service.json("/api/runs?limit=1000")
    assert answers == {
        **{path: 400 for path in list(answers)[:10]},
        "/api/jobs/nobody": 404,
        "/api/jobs/": 404,
        "/api/nothing": 404,
    }
    assert (status, headers["Allow"]) == (405, "GET, HEAD")
    assert len(biggest) == 3


# --------------------------------------------------------------------------- the token


def test_the_token_guards_the_data_and_never_reaches_the_log(ws: Workspace) -> None:
    history_of_three_kinds(ws)
    with serving(ws) as service:
        refused = [
            service.get("/api/jobs/configured", token=None),
            service.get("/api/jobs/configured", token=TOKEN[:-1]),
            service.get("/api/jobs/configured", token=TOKEN + "x"),
            service.get("/api/runs", token=None, Authorization=f"Basic {TOKEN}"),
            service.get(f"/api/lists?access_token={TOKEN}", token=None),
            service.get("/metrics", token=None),
            service.get("/", token=None),
        ]
        open_paths = [
            service.get(path, token=None)[0] for path in ("/healthz", "/api/openapi.json")
        ]
        assert service.get("/api/lists")[0] == 200
    for status, headers, body in refused:
        assert (status, headers["WWW-Authenticate"]) == (401, 'Bearer realm="campaign-sync"')
        assert json.loads(body) == {"error": "a valid bearer token is required"}
    assert open_paths == [200, 200]
    log = service.log.read_text(encoding="utf-8")
    assert '"GET /api/jobs/configured" 401' in log and '"GET /api/lists" 200' in log
    assert TOKEN not in log and TOKEN[:-1] not in log
    assert "access_token=***" in log


@pytest.mark.stores("sqlite")
def test_without_a_token_only_loopback_and_the_document_declares_no_security(
    ws: Workspace,
) -> None:
    ws.write_config()
    public = ws.run("serve", "--bind", f"0.0.0.0:{free_port()}")
    assert (public.returncode, public.stdout) == (2, "")
    assert public.stderr.splitlines() == [
        f"campaign-sync: error: --bind 0.0.0.0:{public.args[-1].split(':')[1]} is not a "
        "loopback address and serve.token is not set: set serve.token (clients then send it "
        "as a bearer token) or bind to 127.0.0.1"
    ]
    with serving(ws, token=None) as service:
        assert service.json("/api/jobs/configured")[0]["state"] == "never-run"
        document = service.json("/api/openapi.json")
    assert "security" not in document and "securitySchemes" not in document["components"]
    assert not ws.store.exists()  # no run created it, and reading made nothing


@pytest.mark.stores("sqlite")
@pytest.mark.parametrize("bind", ["8080", "::1:80", "127.0.0.1:70000", "host:port"])
def test_a_bad_bind_is_one_line_and_exit_2(ws: Workspace, bind: str) -> None:
    ws.write_config()
    done = ws.run("serve", "--bind", bind)
    message = f"--bind '{bind}' is not HOST:PORT; give e.g. 127.0.0.1:8080 or [::1]:8080"
    assert (done.returncode, done.stderr) == (2, f"campaign-sync: error: {message}\n")


@pytest.mark.stores("sqlite")
def test_without_waitress_one_line_names_the_extra(ws: Workspace) -> None:
    ws.write_config()
    probe = (
        "import sys; sys.modules['waitress'] = None\n"
        "from campaign_sync_cli.main import main\n"
        "main(sys.argv[1:])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, "--config", str(ws.config), "serve"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (
        2,
        "campaign-sync: error: serve needs the waitress package, which is not installed; "
        "install it with: pip install 'campaign-sync[serve]'\n",
    )


@pytest.mark.stores("sqlite")
@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("''", "must not be empty; set it (e.g. ${CAMPAIGN_SYNC_API_TOKEN}) or remove the key"),
        ("short-token", "use at least 16 characters of letters, digits and - . _ ~ + / (e.g. "
         "the output of `openssl rand -hex 32`)"),
        ("'has spaces in the token'", "use at least 16 characters of letters, digits and - . _ "
         "~ + / (e.g. the output of `openssl rand -hex 32`)"),
    ],
)  # fmt: skip
def test_a_bad_token_is_a_config_error(ws: Workspace, value: str, problem: str) -> None:
    ws.write_config(f"serve: {{token: {value}}}\n")
    done = ws.run("validate")
    assert (done.returncode, done.stdout) == (2, f"{ws.config}: At 'serve.token': {problem}\n")


# --------------------------------------------------------------------------- robustness


def test_schemathesis_finds_nothing(ws: Workspace) -> None:
    history_of_three_kinds(ws)
    with serving(ws) as service:
        done = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"), "run",
                f"http://127.0.0.1:{service.port}/api/openapi.json",
                "--checks", "all", "--max-examples", "10", "--generation-deterministic",
                "--header", f"Authorization: Bearer {TOKEN}", "--no-color",
                "--request-timeout", "60",
            ],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:]
    assert "No issues found" in done.stdout
    assert TOKEN not in service.log.read_text(encoding="utf-8")


@pytest.mark.stores("sqlite")
def test_slow_and_malformed_clients_do_not_stall_it(ws: Workspace) -> None:
    history_of_three_kinds(ws)
    with serving(ws) as service:
        # More half-sent requests than the server has threads: they hold sockets only.
        stalled = [_half_request(service.port) for _ in range(20)]
        try:
            answered = [service.get("/api/jobs/configured")[0] for _ in range(10)]
            garbage = _raw(service.port, b"\x00\x01\x02 nonsense\r\n\r\n")
            huge = _raw(service.port, b"GET / HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n")
            trickled = _trickle(service.port, f"GET /api/lists HTTP/1.1\r\nHost: t\r\n"
                                f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())  # fmt: skip
            answered.append(service.get("/api/runs")[0])
        finally:
            for sock in stalled:
                sock.close()
    assert answered == [200] * 11
    assert garbage.split(b"\r\n")[0].endswith(b" 400 Bad Request")
    # Refused (431), or cut off while it was still sending: either way not read on.
    assert huge == b"" or huge.startswith(b"HTTP/1.1 431 ")
    assert trickled.startswith(b"HTTP/1.1 200 ")


def _half_request(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(b"GET /api/jobs/configured HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
    return sock


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        try:
            sock.sendall(request)
            return _read_all(sock)
        except ConnectionResetError:
            return b""


def _trickle(port: int, request: bytes) -> bytes:
    """A client that sends its request a few bytes at a time, as a slow link would."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        for at in range(0, len(request), 8):
            sock.sendall(request[at : at + 8])
            time.sleep(0.01)
        return _read_all(sock, until=b"\r\n\r\n")


def _read_all(sock: socket.socket, until: bytes | None = None) -> bytes:
    data = b""
    while until is None or until not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_store_held_by_a_writer_does_not_block_a_request(ws: Workspace) -> None:
    """An import's write transaction is open (the writer lock held, a run row written but
    not committed): every request is answered, from the committed data, not after a wait
    (SQLite's read-only busy timeout would turn a wait into a 503)."""
    history_of_three_kinds(ws)
    with serving(ws) as service:
        service.json("/api/jobs/configured")  # the thread's store handle is open already
        with _writer_holding(ws):
            answers = {
                path: service.get(path)
                for path in ("/api/jobs/configured", "/api/runs", "/api/lists", "/metrics", "/")
            }
            health = service.get("/healthz", token=None)[0]
    assert {path: answer[0] for path, answer in answers.items()} == dict.fromkeys(answers, 200)
    assert health == 200
    assert b"uncommitted" not in answers["/api/runs"][2]


@contextmanager
def _writer_holding(ws: Workspace) -> Iterator[None]:
    insert = (
        "INSERT INTO runs (job, type, status, started, error) "
        "VALUES ('newsletter-import', 'recipient-import', 'failed', '2026-12-01', 'uncommitted')"
    )
    if ws.pg is None:
        conn = sqlite3.connect(ws.store, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")  # what store.transaction() opens an import with
            conn.execute(insert)
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    with ws._pg() as conn:
        conn.execute("BEGIN")
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || '/write', 0))"
        )
        conn.execute("LOCK TABLE runs, recipients IN EXCLUSIVE MODE")  # only readers pass
        conn.execute(insert)
        try:
            yield
        finally:
            conn.execute("ROLLBACK")


@pytest.mark.stores("sqlite")
def test_a_store_at_an_older_schema_version_is_not_migrated(ws: Workspace) -> None:
    history_of_three_kinds(ws)
    ws.query("PRAGMA user_version = 4")
    with serving(ws) as service:
        status, _, body = service.get("/api/jobs/configured")
        health = service.get("/healthz", token=None)
    assert (status, json.loads(body)) == (
        503,
        {"error": "the store cannot be read now; the service's log says why"},
    )
    assert (health[0], json.loads(health[2])) == (503, {"status": "unavailable"})
    assert ws.query("PRAGMA user_version") == [(4,)]
    assert "older than this campaign-sync's" in service.log.read_text(encoding="utf-8")
