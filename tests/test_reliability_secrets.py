"""Secrets never leave the process: every output channel of runs configured with secrets is
scanned for them.

Configured secrets: an SMTP password (AUTH against the real test server), an SSH key
passphrase (an encrypted key used against the real sshd), an SSH password (for a server that
refuses it), and credentials in the webhook URL. The runs cover success, rejects, failures
whose errors come from the libraries (wrong passphrase, refused password, refused SMTP login),
an export, a dispatch and every status command, at the most verbose log level.

Channels scanned: stdout, stderr, JSON documents, the log file, the notices as the SMTP server
received them, webhook bodies and paths, rejects files, staging files, the exported file and
the store (database, WAL).

Secrets too short to be masked safely (`e`, `2026`, `1`) are left alone: a second test runs
with such secrets and checks that no channel shows `***` and that paths, dates and counts
come out whole.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import sshd as sshd_helper
from faults import run_cli, start_cli
from smtp_server import SmtpTestServer
from sshd import Sshd, keygen
from webhook_server import WebhookTestServer

pytestmark = pytest.mark.skipif(not sshd_helper.available(), reason="OpenSSH sshd not installed")

# Distinct, unguessable values, with characters that quoting or encoding would change.
SMTP_PASSWORD = "smtp-Pw_7f3a9c!&<x>"
KEY_PASSPHRASE = "key pass-51d2e8 'q' \"dq\""
SSH_PASSWORD = "ssh-Pw_4b19e0%$"
HOOK_TOKEN = "hookTok9c0ffee42"
WRONG_SMTP = "wrong-smtp-6e6e71"
API_TOKEN = "apiTok-3e8d1c55b0a94f27"  # serve.token
SECRETS = [SMTP_PASSWORD, KEY_PASSPHRASE, SSH_PASSWORD, HOOK_TOKEN, WRONG_SMTP, API_TOKEN]

CSV = (
    "email;first_name\n"
    "anna@example.com;Anna\n"
    "not-an-address;Broken\n"  # a reject, so a rejects file is written
    "ben@example.com;Ben\n"
)


def _forms(secret: str) -> list[str]:
    """The secret as it would appear if printed, URL-encoded, JSON- or HTML-escaped."""
    forms = {
        secret,
        quote(secret, safe=""),
        secret.replace('"', '\\"'),
        secret.replace("&", "&amp;").replace("<", "&lt;"),
    }
    return sorted(forms)


class Scanner:
    """Collects every channel's text under a label; `leaks()` says where a secret appeared."""

    def __init__(self) -> None:
        self.channels: dict[str, bytes] = {}

    def add(self, label: str, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        self.channels[f"{label} #{len(self.channels)}"] = data

    def add_proc(self, label: str, proc: subprocess.CompletedProcess[str]) -> None:
        self.add(f"{label} stdout", proc.stdout)
        self.add(f"{label} stderr", proc.stderr)

    def add_tree(self, label: str, folder: Path) -> None:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                self.add(f"{label} {path.relative_to(folder)}", path.read_bytes())

    def leaks(self) -> list[str]:
        found = []
        for label, data in self.channels.items():
            for secret in SECRETS:
                for form in _forms(secret):
                    if form.encode() in data:
                        found.append(f"{secret!r} in {label}")
        return found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with Sshd(tmp_path_factory.mktemp("sshd")) as running:
        yield running


STORE_AND_LOG = "store: store.db\nwork_dir: var\nlog_file: var/campaign-sync.log\n"


def _notices(smtp: SmtpTestServer, hook: str) -> str:
    """The smtp and notify blocks: AUTH with ${SMTP_PASS} in the clear (loopback), a webhook."""
    return f"""\
smtp:
  host: {smtp.host}
  port: {smtp.port}
  allow_plaintext_auth: true   # the test server is on loopback
  user: mailer
  password: ${{SMTP_PASS}}
  from: sync@example.com
  timeout: 30
notify:
  to: [ops@example.com]
  webhook: {hook}
  webhook_timeout: 60
"""


def _config(root: Path, server: Sshd, key: Path, smtp: SmtpTestServer, hook: str) -> Path:
    remote = root / "remote"
    path = root / "campaign-sync.yaml"
    path.write_text(
        f"""\
{STORE_AND_LOG}timezone: Europe/Berlin
servers:
  partner:
    type: ssh
    host: {server.host}
    port: {server.port}
    user: {server.user}
    key_file: {key}
    key_passphrase: ${{KEY_PASS}}
    known_hosts: {server.known_hosts}
    protocol: sftp
    timeout: 30
    retries: 0
  pw-only:
    type: ssh
    host: {server.host}
    port: {server.port}
    user: {server.user}
    password: ${{SSH_PASS}}
    known_hosts: {server.known_hosts}
    timeout: 30
    retries: 0
{_notices(smtp, hook)}serve:
  token: ${{API_TOKEN}}
jobs:
  partner-import:
    type: recipient-import
    list: newsletter
    source: {{server: partner, path: "{remote}/in/list.csv"}}
    format: {{delimiter: ";"}}
    max_rejects: 50%
  pw-import:
    type: recipient-import
    list: newsletter
    source: {{server: pw-only, path: "{remote}/in/list.csv"}}
    format: {{delimiter: ";"}}
  partner-export:
    type: recipient-export
    list: newsletter
    target: {{server: partner, path: "{remote}/out/list.csv"}}
    fields: [email, first_name]
  welcome:
    type: doi-dispatch
    list: newsletter
    mailings: mailings
""",
        encoding="utf-8",
    )
    (remote / "in").mkdir(parents=True)
    (remote / "out").mkdir()
    (remote / "in" / "list.csv").write_text(CSV, encoding="utf-8")
    (root / "mailings").mkdir()
    (root / "mailings" / "welcome.eml").write_text(
        "From: sync@example.com\nSubject: Hi {{first_name}}\n"
        "Date: Mon, 02 Nov 2026 10:00:00 +0100\n\nHello {{first_name}}\n",
        encoding="utf-8",
    )
    return path


def test_no_secret_in_any_output_channel(server: Sshd, tmp_path: Path) -> None:
    key = keygen(tmp_path / "user_key", "ed25519", passphrase=KEY_PASSPHRASE)
    server.authorize(key)
    env = {"KEY_PASS": KEY_PASSPHRASE, "SSH_PASS": SSH_PASSWORD, "SMTP_PASS": SMTP_PASSWORD}
    env["API_TOKEN"] = API_TOKEN
    scan = Scanner()
    smtp = SmtpTestServer(auth={"mailer": SMTP_PASSWORD}, auth_require_tls=False)
    with smtp, WebhookTestServer() as hook:
        url = f"{hook.url}?token={HOOK_TOKEN}"
        config = _config(tmp_path, server, key, smtp, url)

        def run(label: str, *args: str, code: int, extra: dict[str, str] | None = None) -> None:
            done = run_cli(config, "-vv", *args, env={**env, **(extra or {})})
            scan.add_proc(label, done)
            assert done.returncode == code, f"{label}: {done.stderr[-2000:]}"

        run("import", "--json", "import", "partner-import", code=0)
        run("import again (skipped)", "import", "partner-import", code=0)
        run("export", "--json", "export", "partner-export", code=0)
        run("dispatch", "--json", "dispatch", "welcome", code=0)
        run("password refused", "--json", "import", "pw-import", code=1)
        run(
            "wrong passphrase",
            "--json",
            "import",
            "partner-import",
            "--force",
            code=1,
            extra={"KEY_PASS": "not-" + KEY_PASSPHRASE},
        )
        run(
            "smtp login refused",
            "--json",
            "import",
            "partner-import",
            "--force",
            code=0,
            extra={"SMTP_PASS": WRONG_SMTP},
        )
        for args in (
            ("--json", "list-jobs"),
            ("list-jobs",),
            ("--json", "history"),
            ("history",),
            ("--json", "lists"),
            ("--json", "validate"),
            ("validate",),
            ("crontab",),
            ("--json", "check"),
        ):
            done = run_cli(config, "-vv", *args, env=env)
            scan.add_proc(" ".join(args), done)
            assert done.returncode in (0, 1), done.stderr

        _scan_serve(scan, config, env)
        for message in smtp.messages:
            scan.add("notice/mail as received", message.data)
        for request in hook.requests:
            scan.add("webhook body", request.body)
        notices = [m for m in smtp.messages if "ops@example.com" in m.rcpt_tos]
        assert len(notices) >= 4, "the notices this test scans were not sent"
        assert len(hook.requests) >= 4, "the webhook bodies this test scans were not posted"
    scan.add_tree("work_dir", tmp_path / "var")  # log file, rejects, staging, locks
    scan.add_tree("remote", tmp_path / "remote")
    for name in ("store.db", "store.db-wal"):
        if (tmp_path / name).exists():
            scan.add(name, (tmp_path / name).read_bytes())
    assert list((tmp_path / "var" / "rejects").iterdir()), "no rejects file was scanned"
    assert (tmp_path / "var" / "campaign-sync.log").stat().st_size > 0
    print(f"secrets: {len(SECRETS)} secrets x {len(scan.channels)} channels scanned, no leak")
    assert scan.leaks() == []


def _scan_serve(scan: Scanner, config: Path, env: dict[str, str]) -> None:
    """`serve`: its answers (with the token, without, with a wrong one, with the token in the
    query where it does not belong) and its access log."""
    import http.client
    import socket
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    service = start_cli(config, "-vv", "serve", "--bind", f"127.0.0.1:{port}", env=env)
    requests = [
        (path, headers)
        for path in ("/api/jobs/configured", "/api/runs", "/api/lists", "/metrics", "/")
        for headers in ({"Authorization": f"Bearer {API_TOKEN}"}, {}, {"Authorization": "x"})
    ] + [(f"/api/runs?token={API_TOKEN}", {}), ("/healthz", {}), ("/api/openapi.json", {})]
    try:
        deadline = time.monotonic() + 60
        for path, headers in requests:
            while True:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                try:
                    conn.request("GET", path, headers=headers)
                    answer = conn.getresponse()
                    scan.add(f"serve {path} {sorted(headers)}", answer.read())
                    break
                except ConnectionRefusedError:
                    assert time.monotonic() < deadline and service.poll() is None
                    time.sleep(0.1)
                finally:
                    conn.close()
    finally:
        service.terminate()
        out, err = service.communicate(timeout=60)
    scan.add("serve stdout", out)
    scan.add("serve stderr", err)
    assert '"GET /api/runs" 401' in err and '"GET /api/runs" 200' in err


def test_webhook_with_credentials_in_the_url_is_posted_with_basic_auth(tmp_path: Path) -> None:
    import base64

    with WebhookTestServer() as hook:
        url = hook.url.replace("http://", f"http://ops:{HOOK_TOKEN}@")
        (tmp_path / "inbox").mkdir()
        (tmp_path / "inbox" / "list.csv").write_text(CSV, encoding="utf-8")
        config = tmp_path / "campaign-sync.yaml"
        config.write_text(
            "store: store.db\nwork_dir: var\nservers:\n  inbox: {type: local, path: inbox}\n"
            f"notify:\n  webhook: {url}\n  webhook_timeout: 60\njobs:\n"
            "  list-import:\n    type: recipient-import\n    list: newsletter\n"
            "    source: {server: inbox, path: /list.csv}\n    format: {delimiter: ';'}\n"
            "    max_rejects: 50%\n",
            encoding="utf-8",
        )
        done = run_cli(config, "--json", "import", "list-import")
        assert done.returncode == 0, done.stderr
        assert HOOK_TOKEN not in done.stdout + done.stderr
        [request] = hook.requests
        expected = base64.b64encode(f"ops:{HOOK_TOKEN}".encode()).decode()
        assert request.headers["authorization"] == f"Basic {expected}"


SHORT_CSV = "email;first_name\neve@example.com;Eve\nnot-an-address;Broken\nben@example.com;Ben\n"
# Each shorter than redact.MIN_SECRET_LENGTH and found everywhere in ordinary output: a
# letter of most words, the year in every date, a digit of the counts.
SHORT_SMTP, SHORT_SSH, SHORT_HOOK = "e", "2026", "1"


def _short_secret_config(root: Path, smtp: SmtpTestServer, hook: str) -> Path:
    (root / "inbox" / "in-2026").mkdir(parents=True)
    (root / "inbox" / "in-2026" / "list_20261127.csv").write_text(SHORT_CSV, encoding="utf-8")
    (root / "inbox" / "bad.csv").write_text("email\nnot-an-address\n", encoding="utf-8")
    path = root / "campaign-sync.yaml"
    path.write_text(
        f"""\
{STORE_AND_LOG}servers:
  inbox: {{type: local, path: inbox}}
  spare: {{type: ssh, host: 127.0.0.1, user: nobody, password: "${{SSH_PASS}}"}}
{_notices(smtp, hook)}jobs:
  short-import:
    type: recipient-import
    list: newsletter
    source: {{server: inbox, path: /in-2026/list_20261127.csv}}
    format: {{delimiter: ";"}}
    max_rejects: 50%
  bad-import:
    type: recipient-import
    list: newsletter
    source: {{server: inbox, path: /bad.csv}}
""",
        encoding="utf-8",
    )
    return path


def test_short_secrets_leave_paths_dates_and_counts_intact(tmp_path: Path) -> None:
    env = {"SMTP_PASS": SHORT_SMTP, "SSH_PASS": SHORT_SSH}
    scan = Scanner()
    smtp = SmtpTestServer(auth={"mailer": SHORT_SMTP}, auth_require_tls=False)
    with smtp, WebhookTestServer() as hook:
        url = hook.url.replace("http://", f"http://ops:{SHORT_HOOK}@")
        config = _short_secret_config(tmp_path, smtp, url)
        validated = run_cli(config, "validate", env=env)
        ok = run_cli(config, "-vv", "--json", "import", "short-import", env=env)
        failed = run_cli(config, "-vv", "--json", "import", "bad-import", env=env)
        for label, done in (("validate", validated), ("ok", ok), ("failed", failed)):
            scan.add_proc(label, done)
        notices = {m.message["Subject"]: m.text for m in smtp.messages}
        bodies = [request.json for request in hook.requests]
        for message in smtp.messages:
            scan.add("notice", message.data)
        for request in hook.requests:
            scan.add("webhook body", request.body)
    scan.add_tree("work_dir", tmp_path / "var")
    scan.add("store.db", (tmp_path / "store.db").read_bytes())

    # validate: weak, not wrong
    weak = "weak secret (fewer than 8 characters): too short to be masked in output"
    assert (validated.returncode, validated.stdout) == (0, f"{config}: OK\n")
    assert [line.split("'")[1] for line in validated.stderr.splitlines() if weak in line] == [
        "smtp.password",
        "servers.spare.password",
        "notify.webhook",
    ]
    # the import: its path, counts and dates whole in the JSON, the notice and the webhook
    assert ok.returncode == 0, ok.stderr
    run = json.loads(ok.stdout)
    assert run["file"]["path"] == "/in-2026/list_20261127.csv"
    counts = run["counts"]
    assert (counts["read"], counts["inserted"], counts["rejected"]) == (3, 2, 1)
    assert run["warnings"] == [] and smtp.auth_commands == [False, False]
    text = notices["[campaign-sync] short-import succeeded: 2 inserted, 1 rejected"]
    assert "File:      /in-2026/list_20261127.csv\n" in text
    assert f"Started:   {run['started']}\n" in text
    assert "  rejected                          1\n" in text
    assert "  line 3: missing @ — row=['not-an-address', 'Broken']\n" in text
    assert bodies[0] == run
    # the failed run: its error the same in JSON, notice, webhook and the store
    assert failed.returncode == 1
    error = json.loads(failed.stdout)["error"]
    rejects = next((tmp_path / "var" / "rejects").glob("bad-import-*.csv"))
    assert error == (
        "1 of 1 rows were rejected, more than the limit 10%; nothing was applied (max_rejects; "
        f"the reasons are in {rejects})"
    )
    assert f"campaign-sync: error: {error}\n" in failed.stderr
    [failure] = [t for subj, t in notices.items() if subj.startswith("[campaign-sync] bad-import")]
    assert f"\nError:\n  {error}\n" in failure
    assert bodies[1]["error"] == error
    with sqlite3.connect(tmp_path / "store.db") as conn:
        stored = conn.execute("SELECT error FROM runs WHERE job = 'bad-import'").fetchone()[0]
    assert stored == error
    masked = [label for label, data in scan.channels.items() if b"***" in data]
    print(f"short secrets: {len(scan.channels)} channels scanned, none masked")
    assert masked == []
