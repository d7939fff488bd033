"""SmtpSession against a real SMTP server (aiosmtpd), not a mock of smtplib."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from props import examples
from smtp_server import ClosedPort, SilentServer, SmtpTestServer, TlsFiles, make_tls_files

from campaign_sync.config.model import SmtpConfig
from campaign_sync.dispatch.smtp import DeliveryUnknown, Refusal, SmtpSession, build_text_message
from campaign_sync.errors import MailError

SENDER = "campaign-sync@example.com"
PASSWORD = "pw-Zq81!never-shown"
# Slack for thread scheduling on a busy 2-core CI machine when checking timeouts.
TIMEOUT_MARGIN = 2.0


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def smtp_server() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as server:
        yield server


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_server(tls_files: TlsFiles) -> Iterator[SmtpTestServer]:
    """STARTTLS offered; AUTH only after it, as real submission servers do."""
    with SmtpTestServer(tls=tls_files, auth={"mailer": PASSWORD}) as server:
        yield server


def smtp_config(server: SmtpTestServer | ClosedPort | SilentServer, **overrides) -> SmtpConfig:
    values = {"host": server.host, "port": server.port, "sender": SENDER, "timeout": 5.0}
    values.update(overrides)
    return SmtpConfig(**values)


def message(to: str = "someone@example.com", body: str = "Hello.\n", **headers: str):
    msg = build_text_message(sender=SENDER, to=[to], subject="Test", body=body)
    for name, value in headers.items():
        msg[name] = value
    return msg


def connect(config: SmtpConfig, ssl_context: ssl.SSLContext | None = None) -> None:
    """Open a session and close it again: connecting, TLS and AUTH happen on enter."""
    with SmtpSession(config, ssl_context=ssl_context):
        pass


# --------------------------------------------------------------------------- sending


def test_send_delivers_message_with_envelope_and_headers(smtp_server: SmtpTestServer) -> None:
    with SmtpSession(smtp_config(smtp_server)) as session:
        outcome = session.send(message("a@example.com"), ["a@example.com", "b@example.com"])

    assert outcome.accepted == ["a@example.com", "b@example.com"]
    assert outcome.refused == {}
    assert outcome.all_accepted
    [received] = smtp_server.messages
    assert received.mail_from == SENDER
    assert received.rcpt_tos == ["a@example.com", "b@example.com"]
    assert received.message["Subject"] == "Test"
    assert received.message["Message-ID"].endswith("@example.com>")
    assert received.message["Date"]
    assert received.text == "Hello.\n"


def test_several_messages_share_one_session(smtp_server: SmtpTestServer) -> None:
    with SmtpSession(smtp_config(smtp_server)) as session:
        for i in range(3):
            session.send(message(f"r{i}@example.com"), [f"r{i}@example.com"])
    assert [m.rcpt_tos for m in smtp_server.messages] == [[f"r{i}@example.com"] for i in range(3)]


def test_bcc_header_is_not_transmitted(smtp_server: SmtpTestServer) -> None:
    with SmtpSession(smtp_config(smtp_server)) as session:
        session.send(message(Bcc="hidden@example.com"), ["a@example.com", "hidden@example.com"])
    [received] = smtp_server.messages
    assert "hidden@example.com" in received.rcpt_tos
    assert b"hidden@example.com" not in received.data


def test_per_recipient_refusals_distinguish_4xx_from_5xx(smtp_server: SmtpTestServer) -> None:
    smtp_server.reject("gone@example.com", 550, "No such user")
    smtp_server.reject("full@example.com", 452, "Mailbox full")
    recipients = ["ok@example.com", "gone@example.com", "full@example.com"]

    with SmtpSession(smtp_config(smtp_server)) as session:
        outcome = session.send(message(), recipients)

    assert outcome.accepted == ["ok@example.com"]
    assert outcome.refused == {
        "gone@example.com": Refusal(550, "No such user"),
        "full@example.com": Refusal(452, "Mailbox full"),
    }
    assert set(outcome.hard_bounces) == {"gone@example.com"}
    assert set(outcome.soft_bounces) == {"full@example.com"}
    assert outcome.refused["gone@example.com"].kind == "hard"
    assert outcome.refused["full@example.com"].kind == "soft"
    [received] = smtp_server.messages
    assert received.rcpt_tos == ["ok@example.com"]


def test_all_recipients_refused_sends_no_data_and_session_goes_on(
    smtp_server: SmtpTestServer,
) -> None:
    smtp_server.reject("gone@example.com", 550)
    with SmtpSession(smtp_config(smtp_server)) as session:
        outcome = session.send(message(), ["gone@example.com"])
        assert outcome.accepted == []
        assert outcome.refused["gone@example.com"].code == 550
        # The session was reset and stays usable for the next message.
        later = session.send(message(), ["ok@example.com"])
    assert later.accepted == ["ok@example.com"]
    assert [m.rcpt_tos for m in smtp_server.messages] == [["ok@example.com"]]


def test_refusal_at_data_applies_to_every_accepted_recipient(smtp_server: SmtpTestServer) -> None:
    smtp_server.reject_data(554, "Spam detected")
    smtp_server.reject("gone@example.com", 550)
    with SmtpSession(smtp_config(smtp_server)) as session:
        outcome = session.send(message(), ["a@example.com", "b@example.com", "gone@example.com"])
    assert outcome.accepted == []
    assert outcome.refused["a@example.com"] == Refusal(554, "Spam detected", "data")
    assert outcome.refused["b@example.com"].stage == "data"
    assert outcome.refused["gone@example.com"] == Refusal(550, "Mailbox unavailable", "rcpt")


def test_no_recipients_is_a_no_op(smtp_server: SmtpTestServer) -> None:
    with SmtpSession(smtp_config(smtp_server)) as session:
        assert session.send(message(), []).accepted == []
    assert smtp_server.messages == []


def test_international_recipient_uses_smtputf8(smtp_server: SmtpTestServer) -> None:
    address = "jürgen@bücher.example"
    with SmtpSession(smtp_config(smtp_server)) as session:
        outcome = session.send(message(address, body="Grüße\n"), [address])
    assert outcome.accepted == [address]
    [received] = smtp_server.messages
    assert received.rcpt_tos == [address]
    assert received.text == "Grüße\n"


def test_without_smtputf8_idn_domains_go_as_punycode_and_utf8_local_parts_are_refused() -> None:
    recipients = ["anna@bücher.example", "jürgen@example.com", "plain@example.com"]
    with SmtpTestServer(smtputf8=False) as server, SmtpSession(smtp_config(server)) as session:
        outcome = session.send(message(), recipients)
    assert outcome.accepted == ["anna@bücher.example", "plain@example.com"]
    refusal = outcome.refused["jürgen@example.com"]
    assert (refusal.code, refusal.stage) == (553, "local")
    assert "SMTPUTF8" in refusal.text
    assert server.messages[0].rcpt_tos == ["anna@xn--bcher-kva.example", "plain@example.com"]


def test_without_smtputf8_the_to_header_carries_the_punycode_domain() -> None:
    msg = message("Anna <anna@bücher.example>")
    msg["Cc"] = "bo@bücher.example, plain@example.com"
    with SmtpTestServer(smtputf8=False) as server, SmtpSession(smtp_config(server)) as session:
        session.send(msg, ["anna@bücher.example"])
    data = server.messages[0].data
    assert b"To: Anna <anna@xn--bcher-kva.example>\r\n" in data
    assert b"Cc: bo@xn--bcher-kva.example, plain@example.com\r\n" in data
    assert b"=?" not in data
    assert str(msg["To"]) == "Anna <anna@bücher.example>"  # the caller's message is unchanged


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=40)
        | st.sampled_from([".", "..", ".hidden", "From here", " "]),
        min_size=1,
        max_size=8,
    )
)
def test_body_survives_the_wire(lines: list[str]) -> None:
    # Dot-stuffing, CRLF line endings and transfer encodings must round-trip any text.
    body = "\n".join(lines) + "\n"
    with SmtpTestServer() as server, SmtpSession(smtp_config(server)) as session:
        session.send(message(body=body), ["a@example.com"])
    assert server.messages[0].text == body


# --------------------------------------------------------------------------- TLS and AUTH


def test_starttls_and_auth(tls_server: SmtpTestServer, tls_files: TlsFiles) -> None:
    config = smtp_config(tls_server, starttls=True, user="mailer", password=PASSWORD)
    with SmtpSession(config, ssl_context=tls_files.client_context()) as session:
        session.send(message(), ["a@example.com"])
    [received] = tls_server.messages
    assert received.tls
    assert received.authenticated_as == "mailer"
    assert tls_server.auth_commands == [True]  # AUTH came after STARTTLS


def test_starttls_verifies_certificates_by_default(tls_server: SmtpTestServer) -> None:
    config = smtp_config(tls_server, starttls=True, user="mailer", password=PASSWORD)
    with pytest.raises(MailError, match="certificate") as caught, SmtpSession(config):
        pass
    assert PASSWORD not in str(caught.value)
    assert tls_server.auth_attempts == []  # the password never left over an untrusted link


def test_private_ca_via_ssl_cert_file(
    tls_server: SmtpTestServer, tls_files: TlsFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    # How an operator trusts an internal relay's CA without any option of ours.
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files.cert))
    config = smtp_config(tls_server, starttls=True, user="mailer", password=PASSWORD)
    with SmtpSession(config) as session:
        session.send(message(), ["a@example.com"])
    assert tls_server.messages[0].tls


def test_implicit_tls(tls_files: TlsFiles) -> None:
    with SmtpTestServer(tls=tls_files, implicit_tls=True) as server:
        config = smtp_config(server, ssl=True)
        with SmtpSession(config, ssl_context=tls_files.client_context()) as session:
            outcome = session.send(message(), ["a@example.com"])
    assert outcome.accepted == ["a@example.com"]
    assert len(server.messages) == 1


def test_wrong_password_is_a_mail_error_without_the_password(
    tls_server: SmtpTestServer, tls_files: TlsFiles
) -> None:
    config = smtp_config(tls_server, starttls=True, user="mailer", password=PASSWORD + "x")
    with pytest.raises(MailError, match="authentication as 'mailer' failed: 535") as caught:
        connect(config, tls_files.client_context())
    assert PASSWORD not in str(caught.value)
    assert set(tls_server.auth_attempts) == {"mailer"}  # smtplib tries PLAIN, then LOGIN


def test_non_ascii_credentials_are_a_clear_mail_error(
    tls_server: SmtpTestServer, tls_files: TlsFiles
) -> None:
    config = smtp_config(tls_server, starttls=True, user="mailer", password="Pässwort-lang-42")
    with pytest.raises(MailError) as caught:
        connect(config, tls_files.client_context())
    assert str(caught.value) == (
        f"SMTP server {tls_server.host}:{tls_server.port}: cannot log in: smtp.user or "
        "smtp.password has non-ASCII characters, which this SMTP client cannot send"
    )
    assert tls_server.auth_commands == []


def test_starttls_required_but_not_offered(smtp_server: SmtpTestServer) -> None:
    with pytest.raises(MailError, match="STARTTLS is configured but the server does not offer"):
        connect(smtp_config(smtp_server, starttls=True))


NO_PLAINTEXT_AUTH = (
    "SMTP server {where}: not sending the password over a connection without TLS: set "
    "starttls: true (or ssl: true) in the smtp block; for a relay on this machine, "
    "allow_plaintext_auth: true"
)


@pytest.mark.parametrize("server_requires_tls", [True, False], ids=["tls-only", "any"])
def test_no_auth_command_without_tls(tls_files: TlsFiles, server_requires_tls: bool) -> None:
    # Neither starttls nor ssl: whether or not the server would take AUTH in the clear, the
    # password must not go out, and the session fails before any AUTH command.
    auth = {"mailer": PASSWORD}
    with SmtpTestServer(tls=tls_files, auth=auth, auth_require_tls=server_requires_tls) as server:
        config = smtp_config(server, user="mailer", password=PASSWORD)
        with pytest.raises(MailError) as caught:
            connect(config)
        assert str(caught.value) == NO_PLAINTEXT_AUTH.format(where=f"{server.host}:{server.port}")
        assert server.auth_commands == []
        assert server.auth_attempts == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_plaintext_auth_to_a_loopback_relay_when_opted_in(host: str) -> None:
    auth = {"mailer": PASSWORD}
    with SmtpTestServer(auth=auth, auth_require_tls=False) as server:
        config = smtp_config(
            server, host=host, user="mailer", password=PASSWORD, allow_plaintext_auth=True
        )
        with SmtpSession(config) as session:
            session.send(message(), ["a@example.com"])
    assert server.auth_commands == [False]  # one AUTH, in the clear, as the operator chose
    [received] = server.messages
    assert received.authenticated_as == "mailer" and not received.tls


def test_opt_in_does_not_stop_starttls(tls_server: SmtpTestServer, tls_files: TlsFiles) -> None:
    config = smtp_config(
        tls_server, starttls=True, user="mailer", password=PASSWORD, allow_plaintext_auth=True
    )
    with SmtpSession(config, ssl_context=tls_files.client_context()) as session:
        session.send(message(), ["a@example.com"])
    assert tls_server.auth_commands == [True]


# --------------------------------------------------------------------------- failures


def test_connection_refused() -> None:
    with ClosedPort() as port:
        started = time.monotonic()
        with pytest.raises(MailError, match="cannot connect: connection refused"):
            connect(smtp_config(port, timeout=5))
    assert time.monotonic() - started < 1.0


def test_hanging_server_times_out() -> None:
    with SilentServer() as silent:
        started = time.monotonic()
        with pytest.raises(MailError, match=r"no answer within 1 s"):
            connect(smtp_config(silent, timeout=1))
        elapsed = time.monotonic() - started
        assert silent.connections == 1
    assert elapsed < 1 + TIMEOUT_MARGIN


def test_send_outside_a_session_is_an_error(smtp_server: SmtpTestServer) -> None:
    with pytest.raises(MailError, match="outside an open session"):
        SmtpSession(smtp_config(smtp_server)).send(message(), ["a@example.com"])


def test_disconnect_after_data_is_delivery_unknown(smtp_server: SmtpTestServer) -> None:
    smtp_server.drop_after_data = True
    unknown = pytest.raises(DeliveryUnknown, match="may or may not have been delivered")
    with unknown, SmtpSession(smtp_config(smtp_server)) as session:
        session.send(message(), ["a@example.com"])
    # It was in fact received: this is why dispatch must not resend such a message.
    assert len(smtp_server.messages) == 1


def test_sender_refused_is_a_session_error(smtp_server: SmtpTestServer) -> None:
    smtp_server.reject_sender(553, "Sender address rejected")
    refused = pytest.raises(MailError, match="refused the sender <campaign-sync@example.com>: 553")
    with refused, SmtpSession(smtp_config(smtp_server)) as session:
        session.send(message(), ["a@example.com"])
    assert smtp_server.messages == []


def test_importing_notify_does_not_load_smtplib_or_email() -> None:
    # Status commands import config and result; they must not drag in smtplib via notify.
    import subprocess
    import sys

    code = (
        "import sys, campaign_sync.config, campaign_sync.result, campaign_sync.ops.notify; "
        "print('smtplib' in sys.modules, 'email.message' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.stdout.split() == ["False", "False"]
