"""Run notices by mail and webhook, against a real SMTP server and a real HTTP server."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smtp_server import ClosedPort, SilentServer, SmtpTestServer, TlsFiles, make_tls_files
from webhook_server import WebhookTestServer

from campaign_sync.config.model import (
    BounceLimits,
    Config,
    JobConfig,
    NotifyConfig,
    ServerConfig,
    SmtpConfig,
)
from campaign_sync.config.redact import MIN_SECRET_LENGTH, Scrubber
from campaign_sync.ops.notify import body, notify, recipients, should_notify, subject
from campaign_sync.result import FileInfo, RunResult

SENDER = "campaign-sync@example.com"
SMTP_PASSWORD = "smtp-Pw!9f2kQ"
KEY_PASSPHRASE = "passphrase-7Hx0"
SERVER_PASSWORD = "sftp-pass-3Lm8"
SECRETS = (SMTP_PASSWORD, KEY_PASSPHRASE, SERVER_PASSWORD)
TIMEOUT_MARGIN = 2.0  # slack for a busy 2-core CI machine


# --------------------------------------------------------------------------- builders


def make_job(name: str = "newsletter-import", type: str = "recipient-import", **kw) -> JobConfig:
    kw.setdefault("list", "newsletter")
    kw.setdefault("notify", ("newsletter-team@example.com",))
    return JobConfig(name=name, type=type, **kw)


def make_config(
    tmp_path: Path,
    *,
    smtp: SmtpConfig | None = None,
    to: tuple[str, ...] = ("crm-ops@example.com",),
    webhook: str | None = None,
    webhook_timeout: float = 5.0,
    jobs: tuple[JobConfig, ...] = (),
) -> Config:
    servers = {
        "campaign": ServerConfig(
            name="campaign",
            type="ssh",
            host="upload.example.net",
            key_passphrase=KEY_PASSPHRASE,
            password=SERVER_PASSWORD,
        )
    }
    return Config(
        path=tmp_path / "campaign-sync.yaml",
        store=str(tmp_path / "campaign-sync.db"),
        work_dir=tmp_path / "var",
        timezone=None,
        log_file=None,
        servers=servers,
        smtp=smtp,
        notify=NotifyConfig(to=to, webhook=webhook, webhook_timeout=webhook_timeout),
        bounces=BounceLimits(),
        jobs={job.name: job for job in jobs},
    )


def smtp_for(server: SmtpTestServer | ClosedPort | SilentServer, **kw) -> SmtpConfig:
    kw.setdefault("timeout", 5.0)
    return SmtpConfig(host=server.host, port=server.port, sender=SENDER, **kw)


def import_result(**kw) -> RunResult:
    values = dict(
        job="newsletter-import",
        job_type="recipient-import",
        run_id=42,
        status="succeeded",
        started="2026-11-27T02:30:00+01:00",
        finished="2026-11-27T02:30:12+01:00",
        duration_seconds=12.34,
        file=FileInfo("/import/newsletter_20261127.csv", 123456, "ab" * 32),
        counts={
            "read": 125,
            "inserted": 120,
            "updated": 0,
            "unchanged": 0,
            "rejected": 3,
            "duplicates": 2,
            "suppressed_unsubscribed": 0,
            "suppressed_blocklisted": 0,
        },
        rejects_file="/var/campaign/rejects/newsletter-import-42.csv",
        first_rejects=[
            {"line": 7, "reason": "invalid address", "email": "foo@"},
            {"line": 19, "reason": "invalid address", "email": "bar@@example.com"},
            {"line": 88, "reason": "bad date in doi_confirmed_at", "email": "x@example.com"},
        ],
        warnings=["the file had a BOM"],
    )
    values.update(kw)
    return RunResult(**values)


def failed_result(error: str = "cannot fetch /import/x.csv: connection refused", **kw) -> RunResult:
    values = dict(
        job="newsletter-export",
        job_type="recipient-export",
        status="failed",
        duration_seconds=0.5,
        error=error,
        exit_code=1,
    )
    values.update(kw)
    return RunResult(**values)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def smtp_server() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as server:
        yield server


@pytest.fixture
def webhook() -> Iterator[WebhookTestServer]:
    with WebhookTestServer() as server:
        yield server


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def logger() -> logging.Logger:
    return logging.getLogger("test.notify")


# --------------------------------------------------------------------------- policy


@pytest.mark.parametrize(
    ("job_type", "status", "dry_run", "expected"),
    [
        ("recipient-import", "succeeded", False, True),
        ("blocklist-import", "skipped", False, True),
        ("bounce-import", "failed", False, True),
        ("recipient-export", "succeeded", False, False),
        ("recipient-export", "failed", False, True),
        ("doi-dispatch", "succeeded", False, False),
        ("doi-dispatch", "failed", False, True),
        ("doi-dispatch", "interrupted", False, True),
        ("recipient-import", "succeeded", True, False),
        ("recipient-import", "failed", True, False),
        ("recipient-import", "running", False, False),
    ],
)
def test_should_notify(job_type: str, status: str, dry_run: bool, expected: bool) -> None:
    job = make_job(type=job_type)
    result = RunResult(job=job.name, job_type=job_type, status=status, dry_run=dry_run)
    assert should_notify(job, result) is expected


def test_dispatch_with_sends_of_unknown_outcome_is_reported() -> None:
    job = make_job(type="doi-dispatch")
    result = RunResult(job=job.name, job_type=job.type, status="succeeded")
    result.counts = {"sent": 3, "unknown": 1}
    assert should_notify(job, result) is True
    result.counts = {"sent": 3, "unknown": 0}
    assert should_notify(job, result) is False
    result.warnings = ["not sent to a@example.com: cannot personalise: …"]
    assert should_notify(job, result) is True


def test_recipients_merge_job_and_global_once_each(tmp_path: Path) -> None:
    job = make_job(notify=("Team@Example.com", "ops@example.com"))
    to = ("crm-ops@example.com", "team@example.com", "OPS@example.com")
    config = make_config(tmp_path, to=to)
    assert recipients(config, job) == ["Team@Example.com", "ops@example.com", "crm-ops@example.com"]


# --------------------------------------------------------------------------- content


def test_subject_of_a_successful_import() -> None:
    assert subject(import_result()) == (
        "[campaign-sync] newsletter-import succeeded: 120 inserted, 3 rejected, 2 duplicates"
    )


def test_subject_of_a_failure_and_of_a_skip() -> None:
    failed = failed_result(error="cannot fetch\nsecond line")
    assert subject(failed) == "[campaign-sync] newsletter-export FAILED: cannot fetch"
    skipped = import_result(status="skipped", message="already imported (run 41)", counts={})
    assert subject(skipped) == (
        "[campaign-sync] newsletter-import skipped: already imported (run 41)"
    )
    quiet = import_result(counts={"read": 10, "unchanged": 10})
    assert subject(quiet) == "[campaign-sync] newsletter-import succeeded: 10 unchanged"


def test_subject_is_one_bounded_line() -> None:
    text = subject(failed_result(error="x" * 500))
    assert "\n" not in text
    assert len(text) <= 150


def test_body_of_an_import_holds_everything() -> None:
    job = make_job()
    text = body(job, import_result())
    for expected in (
        "newsletter-import (recipient-import)",
        "Status:    succeeded",
        "List:      newsletter",
        "Run:       42",
        "Duration:  12.3 s",
        "/import/newsletter_20261127.csv",
        "123,456 bytes",
        "sha256 " + "ab" * 32,
        "Rejects file: /var/campaign/rejects/newsletter-import-42.csv",
        "line 7: invalid address — email=foo@",
        "line 88: bad date in doi_confirmed_at — email=x@example.com",
        "  - the file had a BOM",
    ):
        assert expected in text
    # Every count, zero or not, in the contract's order.
    counts = [line.split()[0] for line in text.split("Counts:\n")[1].split("\n\n")[0].splitlines()]
    assert counts == [
        "read",
        "inserted",
        "updated",
        "unchanged",
        "rejected",
        "duplicates",
        "suppressed_unsubscribed",
        "suppressed_blocklisted",
    ]


def test_body_says_how_many_rejects_are_not_shown() -> None:
    rows = [{"line": i, "reason": "invalid address"} for i in range(2, 40)]
    result = import_result(first_rejects=rows, counts={"read": 500, "rejected": 250})
    text = body(make_job(), result)
    assert text.count("invalid address") == 10
    assert "… and 240 more in the rejects file" in text


def test_body_of_a_failure_holds_the_error() -> None:
    text = body(make_job("newsletter-export", "recipient-export"), failed_result())
    assert "Status:    failed" in text
    assert "Error:\n  cannot fetch /import/x.csv: connection refused" in text
    assert "Duration:  0.5 s" in text


# --------------------------------------------------------------------------- delivery


def test_import_notice_is_mailed_to_merged_recipients(
    tmp_path: Path, smtp_server: SmtpTestServer, logger: logging.Logger
) -> None:
    job = make_job()
    config = make_config(tmp_path, smtp=smtp_for(smtp_server), jobs=(job,))
    result = import_result()

    notify(config, job, result, log=logger)

    assert result.warnings == ["the file had a BOM"]
    [received] = smtp_server.messages
    assert received.mail_from == SENDER
    assert received.rcpt_tos == ["newsletter-team@example.com", "crm-ops@example.com"]
    msg = received.message
    assert msg["Subject"] == subject(result)
    assert msg["To"] == "newsletter-team@example.com, crm-ops@example.com"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["X-Campaign-Sync-Status"] == "succeeded"
    assert received.text == body(job, result)


def test_failure_notice_of_an_export(tmp_path: Path, smtp_server: SmtpTestServer) -> None:
    job = make_job("newsletter-export", "recipient-export", notify=())
    config = make_config(tmp_path, smtp=smtp_for(smtp_server))
    notify(config, job, failed_result())
    [received] = smtp_server.messages
    assert received.rcpt_tos == ["crm-ops@example.com"]
    assert "FAILED" in received.message["Subject"]
    assert "cannot fetch /import/x.csv: connection refused" in received.text


def test_webhook_gets_the_run_as_json(
    tmp_path: Path,
    smtp_server: SmtpTestServer,
    webhook: WebhookTestServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = make_config(tmp_path, smtp=smtp_for(smtp_server), webhook=webhook.url)
    result = import_result()
    with caplog.at_level(logging.INFO, logger="campaign_sync.ops.notify"):
        notify(config, make_job(), result)
    assert "notification mailed to newsletter-team@example.com, crm-ops@example.com" in caplog.text
    assert "run result posted to the webhook at http://127.0.0.1:" in caplog.text
    [request] = webhook.requests
    assert request.method == "POST"
    assert request.path == "/hooks/campaign-sync"
    assert request.headers["content-type"] == "application/json"
    assert request.json == result.as_dict()


def test_webhook_only_without_mail_recipients(tmp_path: Path, webhook: WebhookTestServer) -> None:
    config = make_config(tmp_path, smtp=None, to=(), webhook=webhook.url)
    result = import_result(warnings=[])
    notify(config, make_job(notify=()), result)
    assert len(webhook.requests) == 1
    assert result.warnings == []  # nobody to mail: not worth a warning


def test_dry_run_sends_nothing(
    tmp_path: Path, smtp_server: SmtpTestServer, webhook: WebhookTestServer
) -> None:
    config = make_config(tmp_path, smtp=smtp_for(smtp_server), webhook=webhook.url)
    result = import_result(dry_run=True, warnings=[])
    notify(config, make_job(), result)
    assert smtp_server.messages == []
    assert webhook.requests == []
    assert result.warnings == []


# ------------------------------------------------------------------- failures become warnings


def test_no_smtp_block_is_a_warning_when_someone_should_be_mailed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path, smtp=None)
    result = import_result(warnings=[])
    with caplog.at_level(logging.WARNING):
        notify(config, make_job(), result)
    assert result.warnings == [
        "notification mail to newsletter-team@example.com, crm-ops@example.com not sent: "
        "no smtp block in the config"
    ]
    assert result.warnings[0] in caplog.text


def test_smtp_refusing_connections_is_a_warning(tmp_path: Path) -> None:
    with ClosedPort() as port:
        config = make_config(tmp_path, smtp=smtp_for(port))
        result = import_result(warnings=[])
        notify(config, make_job(), result)
    assert result.status == "succeeded"
    [warning] = result.warnings
    assert warning.startswith("notification mail to newsletter-team@example.com")
    assert "connection refused" in warning


def test_hanging_smtp_server_does_not_hang_the_job(tmp_path: Path) -> None:
    with SilentServer() as silent:
        config = make_config(tmp_path, smtp=smtp_for(silent, timeout=1.0))
        result = import_result(warnings=[])
        started = time.monotonic()
        notify(config, make_job(), result)
        elapsed = time.monotonic() - started
    assert elapsed < 1.0 + TIMEOUT_MARGIN
    [warning] = result.warnings
    assert "no answer within 1 s" in warning


def test_refused_recipient_is_a_warning_others_still_get_it(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    smtp_server.reject("crm-ops@example.com", 550, "No such user")
    config = make_config(tmp_path, smtp=smtp_for(smtp_server))
    result = import_result(warnings=[])
    notify(config, make_job(), result)
    assert result.warnings == [
        "notification mail to crm-ops@example.com refused by the SMTP server: 550 No such user"
    ]
    assert smtp_server.messages[0].rcpt_tos == ["newsletter-team@example.com"]


def test_webhook_500_is_a_warning(tmp_path: Path, webhook: WebhookTestServer) -> None:
    webhook.mode = "500"
    config = make_config(tmp_path, to=(), webhook=webhook.url)
    result = import_result(warnings=[])
    notify(config, make_job(notify=()), result)
    [warning] = result.warnings
    assert warning.startswith("webhook notification to http://127.0.0.1:")
    assert "HTTP 500" in warning
    assert len(webhook.requests) == 1


def test_webhook_redirect_is_a_warning_and_is_not_followed(
    tmp_path: Path, webhook: WebhookTestServer
) -> None:
    webhook.mode = "redirect"
    url = webhook.url.replace("http://", "http://hook:s3cret@")
    config = make_config(tmp_path, to=(), webhook=url)
    result = import_result(warnings=[])
    notify(config, make_job(notify=()), result)
    [warning] = result.warnings
    assert warning.endswith(
        "HTTP 302 Found: redirects are not followed; set notify.webhook to the address that "
        "accepts the POST"
    )
    assert "s3cret" not in warning
    assert [(r.method, r.path) for r in webhook.requests] == [("POST", "/hooks/campaign-sync")]


def test_hanging_webhook_does_not_hang_the_job(tmp_path: Path, webhook: WebhookTestServer) -> None:
    webhook.mode = "hang"
    config = make_config(tmp_path, to=(), webhook=webhook.url, webhook_timeout=1.0)
    result = import_result(warnings=[])
    started = time.monotonic()
    notify(config, make_job(notify=()), result)
    assert time.monotonic() - started < 1.0 + TIMEOUT_MARGIN
    [warning] = result.warnings
    assert "no answer within 1 s" in warning


def test_webhook_refusing_connections_is_a_warning(tmp_path: Path) -> None:
    with ClosedPort() as port:
        url = f"http://{port.host}:{port.port}/hook"
        config = make_config(tmp_path, to=(), webhook=url, webhook_timeout=1.0)
        result = import_result(warnings=[])
        notify(config, make_job(notify=()), result)
    [warning] = result.warnings
    assert "refused" in warning.lower()


def test_everything_failing_at_once_still_returns(tmp_path: Path) -> None:
    with SilentServer() as silent, WebhookTestServer(mode="hang") as hook:
        config = make_config(
            tmp_path, smtp=smtp_for(silent, timeout=1.0), webhook=hook.url, webhook_timeout=1.0
        )
        result = failed_result()
        started = time.monotonic()
        notify(config, make_job("newsletter-export", "recipient-export"), result)
        assert time.monotonic() - started < 2.0 + TIMEOUT_MARGIN
    assert result.status == "failed"
    assert len(result.warnings) == 2


def test_webhook_url_credentials_stay_out_of_warnings(
    tmp_path: Path, webhook: WebhookTestServer
) -> None:
    webhook.mode = "500"
    host_port = webhook.url.split("/")[2]
    url = f"http://hookuser:hook-token-55@{host_port}/hooks/T0KEN-in-path?sig=s3cr3t"
    config = make_config(tmp_path, to=(), webhook=url)
    result = import_result(warnings=[])
    notify(config, make_job(notify=()), result)
    [warning] = result.warnings
    assert f"http://{host_port} failed" in warning
    for secret in ("hook-token-55", "T0KEN-in-path", "s3cr3t", "hookuser"):
        assert secret not in warning


# --------------------------------------------------------------------------- secrets


def test_no_secret_in_any_notice(
    tmp_path: Path,
    tls_files: TlsFiles,
    webhook: WebhookTestServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A real STARTTLS + AUTH session with the password, and a run whose error and warnings
    # quote every configured secret (as a careless error message from a library might).
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files.cert))
    leak = f"ssh said: bad passphrase {KEY_PASSPHRASE}, password {SERVER_PASSWORD}"
    with SmtpTestServer(tls=tls_files, auth={"mailer": SMTP_PASSWORD}) as server:
        smtp = smtp_for(server, starttls=True, user="mailer", password=SMTP_PASSWORD)
        config = make_config(tmp_path, smtp=smtp, webhook=webhook.url)
        result = failed_result(
            error=f"{leak}\nsmtp login {SMTP_PASSWORD}",
            warnings=[f"retrying with {SMTP_PASSWORD}"],
        )
        with caplog.at_level(logging.DEBUG):
            notify(config, make_job(), result)
        [received] = server.messages

    assert received.tls and received.authenticated_as == "mailer"
    assert "***" in received.text  # the error was kept, the secrets blanked
    texts = [
        received.data.decode("utf-8", "replace"),
        received.text,
        str(received.message["Subject"]),
        webhook.requests[0].body.decode(),
        caplog.text,
    ]
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


def test_smtp_auth_failure_warning_has_no_password(
    tmp_path: Path, tls_files: TlsFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files.cert))
    with SmtpTestServer(tls=tls_files, auth={"mailer": "the-right-one"}) as server:
        smtp = smtp_for(server, starttls=True, user="mailer", password=SMTP_PASSWORD)
        config = make_config(tmp_path, smtp=smtp)
        result = import_result(warnings=[])
        notify(config, make_job(), result)
    [warning] = result.warnings
    assert "authentication as 'mailer' failed: 535" in warning
    assert SMTP_PASSWORD not in warning


def test_untrusted_certificate_is_a_warning_and_no_password_is_sent(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    with SmtpTestServer(tls=tls_files, auth={"mailer": SMTP_PASSWORD}) as server:
        smtp = smtp_for(server, starttls=True, user="mailer", password=SMTP_PASSWORD)
        result = import_result(warnings=[])
        notify(make_config(tmp_path, smtp=smtp), make_job(), result)
        assert server.auth_attempts == []
        assert server.messages == []
    [warning] = result.warnings
    assert "TLS certificate not trusted" in warning


@given(
    st.text(),
    st.lists(
        st.text(alphabet=st.characters(blacklist_characters="*"), min_size=MIN_SECRET_LENGTH),
        max_size=4,
    ),
)
def test_scrubber_leaves_no_secret(text: str, secrets: list[str]) -> None:
    # Build a text that certainly contains the secrets, around arbitrary other text.
    mixed = text.join(secrets) + text
    scrubbed = Scrubber(secrets)(mixed)
    for secret in secrets:
        assert secret not in scrubbed


def test_scrubber_covers_nested_json() -> None:
    scrub = Scrubber(["hunter2-x"])
    data = {
        "error": "pw hunter2-x",
        "counts": {"read": 1},
        "first_rejects": [{"r": "hunter2-x!"}],
    }
    assert scrub.data(data) == {
        "error": "pw ***",
        "counts": {"read": 1},
        "first_rejects": [{"r": "***!"}],
    }


def test_result_dataclass_untouched_except_warnings(
    tmp_path: Path, smtp_server: SmtpTestServer
) -> None:
    # Scrubbing works on copies: the run's own record (stored, printed as JSON) is not rewritten.
    config = make_config(tmp_path, smtp=smtp_for(smtp_server, password=SMTP_PASSWORD))
    result = failed_result(error=f"oops {SMTP_PASSWORD}")
    before = dataclasses.asdict(result)
    notify(config, make_job(), result)
    assert dataclasses.asdict(result) == before


def test_short_secrets_are_not_masked_and_leave_text_intact() -> None:
    # Masking `e` or `2026` would garble every word and date, and give the secret away.
    text = (
        "webhook rejected: read 2026 rows of /import/newsletter_20261127.csv on 2026-11-27, "
        "sha256 e3b0c442"
    )
    assert Scrubber(["e", "2026", "x" * (MIN_SECRET_LENGTH - 1)])(text) == text
    assert Scrubber(["20261127"])(text) == text.replace("20261127", "***")  # long enough


def test_notice_with_short_secrets_is_sent_unaltered(
    tmp_path: Path, smtp_server: SmtpTestServer, webhook: WebhookTestServer
) -> None:
    smtp = smtp_for(smtp_server, password="e")
    config = dataclasses.replace(
        make_config(tmp_path, smtp=smtp, webhook=webhook.url.replace("//", "//ops:2026@")),
        servers={"box": ServerConfig(name="box", type="ssh", password="1127")},
    )
    result = import_result(warnings=[])
    notify(config, make_job(), result)
    [received] = smtp_server.messages
    assert received.text == body(make_job(), result)
    assert received.message["Subject"] == subject(result)
    assert webhook.requests[0].json == result.as_dict()


# ------------------------------------------------------------------ any failure is one warning


def _notify_webhook_only(tmp_path: Path, url: str, timeout: float = 5.0) -> RunResult:
    """Notify by webhook alone; check that nothing but the warnings changed."""
    config = make_config(tmp_path, to=(), webhook=url, webhook_timeout=timeout)
    result = import_result(warnings=[])
    before = dataclasses.asdict(result)
    notify(config, make_job(notify=()), result)
    assert {**dataclasses.asdict(result), "warnings": []} == before
    return result


BAD_URL = "notify.webhook is not a URL that can be used; check it with `campaign-sync validate`"


@pytest.mark.parametrize(
    ("url", "warning"),
    [
        (
            "https://u:p@127.0.0.1:80a/hook",
            "https://127.0.0.1:80a failed: the port '80a' in notify.webhook is not a number "
            "from 1 to 65535",
        ),
        (
            "https://u:p@127.0.0.1:99999/hook",
            "https://127.0.0.1:99999 failed: the port '99999' in notify.webhook is not a number "
            "from 1 to 65535",
        ),
        (
            "http://127.0.0.1:0/hook?token=T0k3n",
            "http://127.0.0.1:0 failed: the port '0' in notify.webhook is not a number "
            "from 1 to 65535",
        ),
        (
            "http://[::1/hook",
            "http://[::1 failed: the host '[::1' in notify.webhook is not valid",
        ),
        ("http://a..b/hook", f"http://a..b failed: {BAD_URL}"),
        (
            "ftp://files.example.com/x",
            "ftp://files.example.com failed: notify.webhook must be an http:// or https:// URL",
        ),
    ],
)
def test_a_webhook_url_that_cannot_be_used_is_one_warning(
    tmp_path: Path, url: str, warning: str
) -> None:
    # validate refuses such URLs; at run time they still must not break a run that succeeded.
    result = _notify_webhook_only(tmp_path, url)
    assert result.warnings == [f"webhook notification to {warning}"]


def test_webhook_failures_are_described_in_our_words(
    tmp_path: Path, webhook: WebhookTestServer
) -> None:
    port = webhook.url.split("/")[2]
    tls = _notify_webhook_only(tmp_path, webhook.url.replace("http://", "https://"))
    assert tls.warnings == [
        f"webhook notification to https://{port} failed: TLS failed (wrong version number)"
    ]
    webhook.mode = "garbage"
    garbage = _notify_webhook_only(tmp_path, webhook.url)
    assert garbage.warnings == [
        f"webhook notification to http://{port} failed: the server's answer is not valid HTTP"
    ]
    nan = _notify_webhook_only(tmp_path, webhook.url, timeout=float("nan"))
    assert nan.warnings == [
        f"webhook notification to http://{port} failed: notify.webhook_timeout nan is not a "
        "usable number of seconds"
    ]


def test_smtp_host_that_is_not_a_host_name_is_one_warning(tmp_path: Path) -> None:
    config = make_config(tmp_path, smtp=SmtpConfig(host="a..b", sender=SENDER, timeout=5.0))
    result = import_result(warnings=[])
    notify(config, make_job(), result)
    assert result.status == "succeeded"
    assert result.warnings == [
        "notification mail to newsletter-team@example.com, crm-ops@example.com not sent: "
        "SMTP server a..b:25: cannot connect: the host name is not valid"
    ]


def test_notice_never_sends_the_password_without_tls(tmp_path: Path) -> None:
    # A config built without validation (which refuses this): the mail code refuses too.
    auth = {"mailer": SMTP_PASSWORD}
    with SmtpTestServer(auth=auth, auth_require_tls=False) as server:
        smtp = smtp_for(server, user="mailer", password=SMTP_PASSWORD)
        result = import_result(warnings=[])
        notify(make_config(tmp_path, smtp=smtp), make_job(), result)
        assert server.auth_commands == []
        assert server.messages == []
    assert result.status == "succeeded"
    assert result.warnings == [
        "notification mail to newsletter-team@example.com, crm-ops@example.com not sent: "
        f"SMTP server {server.host}:{server.port}: not sending the password over a connection "
        "without TLS: set starttls: true (or ssl: true) in the smtp block; for a relay on this "
        "machine, allow_plaintext_auth: true"
    ]
