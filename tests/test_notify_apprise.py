"""Notices through Apprise URLs (`notify.urls`), end to end: the installed command runs real
jobs, and Apprise's json:// scheme posts the notice to a real HTTP server started here.

Covered: what the service receives (the mail's subject and text, with job, status and
counts), a job's own URLs beside the global ones, failures that stay warnings (a closed
port, HTTP 500, a service that never answers, a URL Apprise does not know), tokens in URLs
kept out of every channel, `validate` naming a bad URL by its key, and a host without the
Apprise package (refused in one line, exit 2).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import SAMPLE, Workspace
from smtp_server import ClosedPort, SmtpTestServer
from webhook_server import WebhookTestServer

from campaign_sync.config.redact import Scrubber
from campaign_sync.config.redact import apprise_url_parts as secret_parts

pytestmark = pytest.mark.stores("sqlite", "postgres")

IMPORT = ("import", "newsletter-import", "--date", "2026-11-01")
INSTALL_LINE = "pip install 'campaign-sync[apprise]'"
# A second local server whose folder cannot be written: its export fails.
FAILING_EXPORT = ("inbox\n", "inbox\n  gone:\n    type: local\n    path: /proc/no-such-dir\n")


@pytest.fixture
def hook() -> Iterator[WebhookTestServer]:
    with WebhookTestServer() as server:
        yield server


def json_url(server: WebhookTestServer, path: str = "/hooks/campaign-sync") -> str:
    """Apprise's json:// URL that POSTs to `server` at `path`."""
    host_port = server.url.split("://", 1)[1].split("/", 1)[0]
    return f"json://{host_port}{path}"


def add_notify(ws: Workspace, block: str) -> None:
    ws.write_config(text=ws.config.read_text() + block)


def import_notice(ws: Workspace, *args: str) -> tuple[int, dict[str, object]]:
    ws.drop("/import/newsletter_20261101.csv", SAMPLE + "bad-address;X;Y;\n")
    done = ws.run("--json", *args, *IMPORT)
    return done.returncode, json.loads(done.stdout)


# --------------------------------------------------------------------------- delivery


def test_the_service_receives_the_mails_subject_and_text(
    ws: Workspace, hook: WebhookTestServer
) -> None:
    with SmtpTestServer() as smtp:
        add_notify(
            ws,
            f"smtp: {{host: {smtp.host}, port: {smtp.port}, from: sync@example.com}}\n"
            f"notify:\n  to: [ops@example.com]\n  urls: ['{json_url(hook)}']\n",
        )
        code, run = import_notice(ws)
    assert code == 0 and run["status"] == "succeeded" and run["warnings"] == []
    [request] = hook.requests
    assert request.path == "/hooks/campaign-sync"
    notice = request.json
    assert notice["title"] == "[campaign-sync] newsletter-import succeeded: 3 inserted, 1 rejected"
    assert notice["type"] == "success"
    text = notice["message"]
    assert "Job:       newsletter-import (recipient-import)" in text
    assert "Status:    succeeded" in text
    assert any(line.split() == ["inserted", "3"] for line in text.splitlines())
    assert any(line.split() == ["rejected", "1"] for line in text.splitlines())
    # The same subject and text as the mail (the Run line and all).
    [mail] = smtp.messages
    assert mail.message["Subject"] == notice["title"]
    assert mail.text.rstrip("\n") == text.rstrip("\n")


def test_a_failed_run_is_a_failure_notice_and_keeps_its_exit_code(
    ws: Workspace, hook: WebhookTestServer
) -> None:
    add_notify(ws, f"notify:\n  urls: ['{json_url(hook)}']\n")
    ws.write_config(
        text=ws.config.read_text()
        .replace(*FAILING_EXPORT, 1)
        .replace("target: {server: inbox", "target: {server: gone")
    )
    done = ws.run("export", "newsletter-export")
    assert done.returncode == 1
    [request] = hook.requests
    assert request.json["type"] == "failure"
    assert request.json["title"].startswith("[campaign-sync] newsletter-export FAILED")
    assert "Status:    failed" in request.json["message"]


def test_a_dry_run_sends_nothing(ws: Workspace, hook: WebhookTestServer) -> None:
    add_notify(ws, f"notify:\n  urls: ['{json_url(hook)}']\n")
    ws.drop("/import/newsletter_20261101.csv", SAMPLE)
    done = ws.run(*IMPORT, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert hook.requests == []


def test_a_jobs_own_urls_are_added_to_the_global_ones(ws: Workspace) -> None:
    """As with `to`: a job's `notify.urls` come first, then `notify.urls`, each URL once."""
    with WebhookTestServer() as shared, WebhookTestServer() as own:
        config = (
            ws.config.read_text()
            .replace(
                "    max_rejects: 50%\n",
                "    max_rejects: 50%\n"
                f"    notify:\n      urls: ['{json_url(own)}', '{json_url(shared)}']\n",
            )
            .replace(*FAILING_EXPORT, 1)
            .replace("target: {server: inbox", "target: {server: gone")
        )
        ws.write_config(text=config + f"notify:\n  urls: ['{json_url(shared)}']\n")
        assert ws.run("validate").returncode == 0
        code, run = import_notice(ws)
        assert code == 0 and run["warnings"] == []
        assert len(own.requests) == 1 and len(shared.requests) == 1  # the shared URL once
        # A job without URLs of its own: the global ones only.
        assert ws.run("export", "newsletter-export").returncode == 1
        assert len(own.requests) == 1 and len(shared.requests) == 2
        assert "newsletter-export FAILED" in shared.requests[1].json["title"]


def test_a_jobs_notify_mapping_keeps_its_addresses(ws: Workspace, hook: WebhookTestServer) -> None:
    with SmtpTestServer() as smtp:
        config = ws.config.read_text().replace(
            "    max_rejects: 50%\n",
            "    max_rejects: 50%\n"
            f"    notify: {{to: [desk@example.com], urls: ['{json_url(hook)}']}}\n",
        )
        ws.write_config(
            text=config + f"smtp: {{host: {smtp.host}, port: {smtp.port}, from: s@example.com}}\n"
            "notify: {to: [ops@example.com]}\n"
        )
        code, _run = import_notice(ws)
    assert code == 0
    assert smtp.messages[0].rcpt_tos == ["desk@example.com", "ops@example.com"]
    assert len(hook.requests) == 1


# --------------------------------------------------------------------------- failures


def test_an_unreachable_url_is_a_warning_and_the_import_stands(ws: Workspace) -> None:
    with ClosedPort() as closed:
        add_notify(ws, f"notify:\n  urls: ['json://{closed.host}:{closed.port}/hooks/x']\n")
        code, run = import_notice(ws)
    assert code == 0 and run["status"] == "succeeded"
    assert run["warnings"] == [
        "notice to notify.urls[0] (json://) not sent: the service refused it or could not be "
        "reached"
    ]
    assert len(ws.recipients()) == 3
    assert json.loads(ws.query("SELECT warnings FROM runs")[0][0]) == run["warnings"]


def test_a_refusing_and_a_silent_service_are_warnings(ws: Workspace) -> None:
    """HTTP 500 is named; a service that never answers costs `urls_timeout`, and the process
    still ends (the server holds the request until after the run: waiting on it would hang
    the run until the subprocess's own timeout)."""
    with WebhookTestServer("500") as refusing, WebhookTestServer("hang") as silent:
        add_notify(
            ws,
            f"notify:\n  urls: ['{json_url(refusing)}', '{json_url(silent)}']\n  urls_timeout: 1\n",
        )
        code, run = import_notice(ws)
        assert len(refusing.requests) == 1 and len(silent.requests) == 1
    assert code == 0 and run["status"] == "succeeded"
    assert sorted(run["warnings"]) == [
        "notice to notify.urls[0] (json://) not sent: the service answered HTTP 500",
        "notice to notify.urls[1] (json://) not sent: no answer within 1 s",
    ]


def test_a_url_apprise_does_not_know_is_a_warning_when_running(
    ws: Workspace, hook: WebhookTestServer
) -> None:
    """Only `validate` asks Apprise about each URL; a run finds out when sending."""
    add_notify(ws, f"notify:\n  urls: ['nosuchservice://abc/def', '{json_url(hook)}']\n")
    code, run = import_notice(ws)
    assert code == 0
    assert run["warnings"] == [
        "notice to notify.urls[0] (nosuchservice://) not sent: Apprise has no service with the "
        "scheme nosuchservice://"
    ]
    assert len(hook.requests) == 1  # the other URL was not held up


# --------------------------------------------------------------------------- validate


BAD_URLS = [
    ("nosuchservice://T0KEN-aaaa1111/x", "Apprise has no service with the scheme nosuchservice://"),
    ("tgram://T0KEN-bbbb2222", "Apprise cannot use this tgram:// URL"),
    ("T0KEN-cccc3333", "expected an Apprise URL, SERVICE://"),
    ("json://x/T0KEN dddd4444", "it contains a space or a control character"),
]


def test_validate_names_each_bad_url_by_its_key_never_by_its_text(ws: Workspace) -> None:
    global_urls = ", ".join(f"'{url}'" for url, _why in BAD_URLS)
    config = ws.config.read_text().replace(
        "    max_rejects: 50%\n",
        "    max_rejects: 50%\n    notify: {urls: ['nosuchservice://T0KEN-eeee5555']}\n",
    )
    ws.write_config(text=config + f"notify:\n  urls: [{global_urls}]\n")
    done = ws.run("validate")
    as_json = ws.run("validate", "--json")
    assert done.returncode == 2 and as_json.returncode == 2
    problems = json.loads(as_json.stdout)["problems"]
    assert problems == done.stdout.splitlines()
    expected = [
        f"{ws.config}: At 'jobs.newsletter-import.notify.urls[0]': Apprise has no service with "
        "the scheme nosuchservice://",
        *(f"{ws.config}: At 'notify.urls[{i}]': {why}" for i, (_url, why) in enumerate(BAD_URLS)),
    ]
    assert len(problems) == len(expected)
    for problem, start in zip(problems, expected, strict=True):
        assert problem.startswith(start), problem
    for output in (done.stdout, done.stderr, as_json.stdout, as_json.stderr):
        assert "T0KEN" not in output


def test_validate_accepts_known_services(ws: Workspace) -> None:
    add_notify(
        ws,
        "notify:\n  urls:\n"
        "    - slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ\n"
        "    - ntfy://ntfy.example.com/campaign-alerts\n"
        "    - json://127.0.0.1:8080/hooks\n"
        "  urls_timeout: 5\n",
    )
    done = ws.run("validate")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""  # URL parts are no weak secrets


def test_urls_must_be_a_list_of_text(ws: Workspace) -> None:
    add_notify(ws, "notify:\n  urls: {a: b}\n")
    done = ws.run("validate")
    assert (done.returncode, done.stdout.splitlines()) == (
        2,
        [f"{ws.config}: At 'notify.urls': expected a list of Apprise URLs, got a mapping"],
    )


# --------------------------------------------------------------------------- without Apprise

# Loaded by Python at start-up from PYTHONPATH: makes `apprise` impossible to find or import,
# as on a host where the extra was not installed.
HIDE_APPRISE = """\
import sys


class HideApprise:
    def find_spec(self, name, path=None, target=None):
        if name == "apprise" or name.startswith("apprise."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, HideApprise())
"""


def test_without_apprise_a_config_with_urls_is_one_line_exit_2(
    ws: Workspace, hook: WebhookTestServer, tmp_path: Path
) -> None:
    hider = tmp_path / "hide-apprise"
    hider.mkdir()
    (hider / "sitecustomize.py").write_text(HIDE_APPRISE)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(hider), os.environ.get("PYTHONPATH")]))}
    add_notify(ws, f"notify:\n  urls: ['{json_url(hook)}']\n")
    ws.drop("/import/newsletter_20261101.csv", SAMPLE)
    line = (
        f"{ws.config}: At 'notify.urls': Apprise URLs need the Apprise package; install the "
        f"Apprise extra: {INSTALL_LINE}"
    )
    validate = ws.run("validate", env=env)
    assert (validate.returncode, validate.stdout.splitlines()) == (2, [line])
    run = ws.run(*IMPORT, env=env)
    assert run.returncode == 2
    assert run.stderr.splitlines() == [f"campaign-sync: error: {line}"]
    assert hook.requests == [] and not ws.store.exists()
    # Without URLs the same host runs as before.
    ws.write_config()
    assert ws.run(*IMPORT, env=env).returncode == 0


# --------------------------------------------------------------------------- secrets

PATH_TOKEN = "pathTok-3f9a7c21e8"
USER_TOKEN = "userTok-77a1b2c3"
PASSWORD = "pw-Tok_4e5d6c7b!"
HOST_TOKEN = "hostTok5a6b7c8d9e"
QUERY_TOKEN = "qTok-0b1c2d3e4f"
TOKENS = [PATH_TOKEN, USER_TOKEN, PASSWORD, HOST_TOKEN, QUERY_TOKEN]


@pytest.mark.parametrize(
    ("url", "hidden", "shown"),
    [
        (
            "tgram://123456789:ABCdefGHIjklMNOpqrSTUvwxYZ/-100123456789",
            ["123456789", "ABCdefGHIjklMNOpqrSTUvwxYZ", "-100123456789"],
            ["tgram"],
        ),
        (
            "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#alerts-channel",
            ["T1JJ3T3L2", "A1BRTD4JD", "TIiajkdnlazkcOXrIdevi7FQ", "alerts-channel"],
            ["slack"],
        ),
        (
            "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
            ["T00000000", "B00000000", "XXXXXXXXXXXXXXXXXXXXXXXX"],
            ["hooks.slack.com", "services"],
        ),
        (
            "ntfy://ntfy.example.com/campaign-alerts-7f3",
            ["campaign-alerts-7f3"],
            ["ntfy.example.com"],
        ),
        ("ntfy://private-topic-name", ["private-topic-name"], []),
        (
            "json://user-token-1:pass%21word@127.0.0.1:8080/hooks/campaign-sync?token=query-secret",
            ["user-token-1", "pass%21word", "pass!word", "query-secret"],
            ["127.0.0.1", "8080", "campaign-sync", "token"],
        ),
    ],
)
def test_which_parts_of_a_url_count_as_secret(
    url: str, hidden: list[str], shown: list[str]
) -> None:
    """Everything but the scheme, a port, a host that is plainly an address, a route word and
    the query's names (see redact.apprise_url_parts)."""
    scrub = Scrubber(secret_parts(url))
    assert scrub(f"<{url}>") == "<***>"
    for part in hidden:
        assert scrub(f"<{part}>") == "<***>", part
    for part in shown:
        assert scrub(f"<{part}>") == f"<{part}>", part


def _leaks(label: str, data: bytes | str, found: list[str]) -> None:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    for token in TOKENS:
        for form in {token, quote(token, safe="")}:
            if form.encode() in data:
                found.append(f"{token!r} in {label}")


def test_no_url_token_in_any_output(ws: Workspace, hook: WebhookTestServer) -> None:
    """Tokens in the path, user info, host and query of Apprise URLs, global and per job, in
    runs that succeed, warn and fail, and every status command at -vv."""
    with ClosedPort() as closed, SmtpTestServer() as smtp:
        own = f"json://{closed.host}:{closed.port}/{PATH_TOKEN}/x?token={QUERY_TOKEN}"
        config = ws.config.read_text().replace(
            "    max_rejects: 50%\n", f"    max_rejects: 50%\n    notify: {{urls: ['{own}']}}\n"
        )
        ws.write_config(
            text=config
            + "log_file: var/cs.log\n"
            + f"smtp: {{host: {smtp.host}, port: {smtp.port}, from: s@example.com}}\n"
            "notify:\n  to: [ops@example.com]\n  urls:\n"
            f"    - json://{USER_TOKEN}:{quote(PASSWORD, safe='')}@"
            f"{json_url(hook, '/hooks/' + PATH_TOKEN).split('://', 1)[1]}\n"
            f"    - nosuchservice://{HOST_TOKEN}/{PATH_TOKEN}\n"
        )
        outputs = []
        ws.drop("/import/newsletter_20261101.csv", SAMPLE + "bad-address;X;Y;\n")
        outputs.append(ws.run("-vv", "--json", *IMPORT))
        outputs.append(ws.run("-vv", *IMPORT))  # the same file again: skipped
        ws.write_config(
            text=ws.config.read_text()
            .replace(*FAILING_EXPORT, 1)
            .replace("target: {server: inbox", "target: {server: gone")
        )
        outputs.append(ws.run("-vv", "--json", "export", "newsletter-export"))
        for command in (["list-jobs"], ["check"], ["history"], ["lists"], ["validate"]):
            outputs += [ws.run("-vv", *command), ws.run("-vv", "--json", *command)]
        received = [mail.message.as_bytes() for mail in smtp.messages]
    assert outputs[0].returncode == 0 and json.loads(outputs[0].stdout)["warnings"]
    assert outputs[2].returncode == 1
    assert len(hook.requests) == 3 and len(received) == 3  # import, skipped import, export
    found: list[str] = []
    for i, done in enumerate(outputs):
        _leaks(f"run {i} {done.args[3:]} stdout", done.stdout, found)
        _leaks(f"run {i} {done.args[3:]} stderr", done.stderr, found)
    for i, request in enumerate(hook.requests):
        _leaks(f"notice {i} body", request.body, found)
    for i, mail in enumerate(received):
        _leaks(f"mail {i}", mail, found)
    _leaks("log file", (ws.root / "var" / "cs.log").read_bytes(), found)
    for path in sorted(ws.root.glob("store.db*")):
        _leaks(path.name, path.read_bytes(), found)
    _leaks("store dump", "\n".join(ws.dump()), found)
    assert found == []
    # The run said which URLs failed, by key and scheme.
    assert sorted(json.loads(outputs[0].stdout)["warnings"]) == [
        "notice to jobs.newsletter-import.notify.urls[0] (json://) not sent: the service "
        "refused it or could not be reached",
        "notice to notify.urls[1] (nosuchservice://) not sent: Apprise has no service with the "
        "scheme nosuchservice://",
    ]
