"""Sending mail over SMTP: one session, many messages, an outcome per recipient.

Used by notifications and by double opt-in dispatch. Dispatch needs more than "sent or not":
it records a hard bounce for a 5xx refusal and a soft bounce for a 4xx one, and it must never
resend a message whose outcome is unknown. So `send` talks SMTP step by step (MAIL, RCPT per
recipient, DATA) instead of using `sendmail`, and says which stage a failure happened at.

smtplib, ssl and email are imported here and only here, lazily by callers, so commands that
never send mail (status, list-jobs) do not pay for them.
"""

from __future__ import annotations

import contextlib
import copy
import smtplib
import ssl
from dataclasses import dataclass, field
from email.headerregistry import Address, Group
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from types import TracebackType
from typing import TYPE_CHECKING, cast

from ..config.model import SmtpConfig
from ..config.redact import Scrubber
from ..config.validate_servers import is_loopback
from ..core.neterrors import describe
from ..errors import MailError

if TYPE_CHECKING:
    from email.policy import EmailPolicy

__all__ = [
    "DeliveryUnknown",
    "MailError",
    "Refusal",
    "SendOutcome",
    "SmtpSession",
    "build_text_message",
]


class DeliveryUnknown(MailError):
    """The session broke after the message data was handed over: it may have been delivered.

    Dispatch must report such a send and not repeat it (exactly once beats at least once).
    """


@dataclass(frozen=True)
class Refusal:
    """The server's answer when it would not take a message for one recipient."""

    code: int
    text: str
    # rcpt: refused at RCPT; data: refused at DATA, for every recipient of the message;
    # local: never offered to the server (an address this session cannot carry).
    stage: str = "rcpt"

    @property
    def permanent(self) -> bool:
        """5xx: a hard bounce. Everything else (4xx) is temporary: a soft bounce, retry later."""
        return 500 <= self.code < 600

    @property
    def kind(self) -> str:
        return "hard" if self.permanent else "soft"

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


@dataclass
class SendOutcome:
    """What happened to one message, per recipient."""

    accepted: list[str] = field(default_factory=list)
    refused: dict[str, Refusal] = field(default_factory=dict)

    @property
    def hard_bounces(self) -> dict[str, Refusal]:
        return {rcpt: r for rcpt, r in self.refused.items() if r.permanent}

    @property
    def soft_bounces(self) -> dict[str, Refusal]:
        return {rcpt: r for rcpt, r in self.refused.items() if not r.permanent}

    @property
    def all_accepted(self) -> bool:
        return not self.refused


class SmtpSession:
    """An SMTP connection as a context manager.

    ``with SmtpSession(config.smtp) as session: outcome = session.send(msg, [addr])``

    Connecting, TLS and AUTH happen on enter; failures there raise MailError. STARTTLS is never
    skipped silently: if it is configured and the server does not offer it, that is an error,
    because the next step may be sending the password. The password is only sent over TLS,
    or to this machine itself when `allow_plaintext_auth` says so.
    """

    def __init__(self, smtp: SmtpConfig, *, ssl_context: ssl.SSLContext | None = None):
        self.smtp = smtp
        # Certificates are verified against the system trust store (which honours
        # SSL_CERT_FILE / SSL_CERT_DIR for a private CA). A caller may pass its own context.
        self._ssl_context = ssl_context
        self._conn: smtplib.SMTP | None = None

    # -- connection -------------------------------------------------------------------

    def __enter__(self) -> SmtpSession:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def where(self) -> str:
        return f"{self.smtp.host}:{self.smtp.port}"

    def open(self) -> None:
        conn: smtplib.SMTP | None = None
        try:
            conn = self._connect()
            self._conn = conn
            self._secure_and_login(conn)
        except MailError:
            self._abandon()
            raise
        except smtplib.SMTPAuthenticationError as exc:
            self._abandon()
            user = self.smtp.user
            raise self._error(f"authentication as '{user}' failed: {_reply(exc)}") from None
        except smtplib.SMTPResponseException as exc:
            self._abandon()
            raise self._error(f"the server refused the session: {_reply(exc)}") from None
        except ssl.SSLCertVerificationError as exc:
            self._abandon()
            raise self._error(describe(exc, self.smtp.timeout)) from None
        except (smtplib.SMTPException, OSError, ValueError) as exc:
            # ValueError: a host name IDNA refuses, a setting the socket refuses.
            if conn is None:
                raise self._error(f"cannot connect: {_describe(exc, self.smtp.timeout)}") from None
            self._abandon()
            raise self._error(f"session failed: {_describe(exc, self.smtp.timeout)}") from None

    def _connect(self) -> smtplib.SMTP:
        # The timeout covers the TCP connect and every later read or write on the socket, so
        # a server that accepts but never answers costs at most `timeout` per step.
        if self.smtp.ssl:
            return smtplib.SMTP_SSL(
                self.smtp.host,
                self.smtp.port,
                timeout=self.smtp.timeout,
                context=self._context(),
            )
        return smtplib.SMTP(self.smtp.host, self.smtp.port, timeout=self.smtp.timeout)

    def _secure_and_login(self, conn: smtplib.SMTP) -> None:
        conn.ehlo_or_helo_if_needed()
        if self.smtp.starttls and not self.smtp.ssl:
            if not conn.has_extn("starttls"):
                raise self._error("STARTTLS is configured but the server does not offer it")
            conn.starttls(context=self._context())
            conn.ehlo()  # capabilities (AUTH, SMTPUTF8) may differ after TLS
        if self.smtp.user:
            encrypted = self._check_auth_is_private(conn)
            if not conn.has_extn("auth"):
                hint = "" if encrypted else " (many servers offer it only over TLS)"
                raise self._error(f"a user is configured but the server offers no AUTH{hint}")
            password = self.smtp.password or ""
            if not (self.smtp.user + password).isascii():
                # smtplib encodes every AUTH mechanism as ASCII and would fail mid-login.
                raise self._error(
                    "cannot log in: smtp.user or smtp.password has non-ASCII characters, "
                    "which this SMTP client cannot send"
                )
            conn.login(self.smtp.user, password)

    def _check_auth_is_private(self, conn: smtplib.SMTP) -> bool:
        """Whether the session is encrypted; raise before AUTH when it is not and may not be.

        Validation already refuses such a config; this looks at the socket itself, so a
        config built another way, or a `localhost` that resolves elsewhere, cannot leak it.
        """
        if isinstance(conn.sock, ssl.SSLSocket):
            return True
        if not self.smtp.allow_plaintext_auth:
            raise self._error(
                "not sending the password over a connection without TLS: set starttls: true "
                "(or ssl: true) in the smtp block; for a relay on this machine, "
                "allow_plaintext_auth: true"
            )
        peer = _peer_address(conn)
        if not is_loopback(peer):
            raise self._error(
                f"not sending the password without TLS to {peer}: allow_plaintext_auth is "
                "only for a relay on this machine; set starttls: true (or ssl: true)"
            )
        return False

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    def close(self) -> None:
        """Say QUIT politely; a server that already went away is not an error here."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.quit()
        except (smtplib.SMTPException, OSError):
            conn.close()

    def _abandon(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # -- sending ----------------------------------------------------------------------

    def send(self, message: EmailMessage, recipients: list[str]) -> SendOutcome:
        """Send one message to `recipients` (the envelope; To/Cc headers are not consulted).

        Per-recipient refusals come back in the outcome. A failure of the session as a whole
        raises MailError before the data was sent (nothing delivered: safe to retry), or
        DeliveryUnknown after (maybe delivered: do not retry blindly).
        """
        conn = self._conn
        if conn is None:
            raise self._error("send() called outside an open session")
        if not recipients:
            return SendOutcome()
        outcome = SendOutcome()
        utf8 = self._use_smtputf8(conn, [self.smtp.sender, *recipients])
        sender = _envelope_address(self.smtp.sender, utf8)
        if sender is None:
            raise self._error(
                f"the sender <{self.smtp.sender}> needs SMTPUTF8, which the server does not offer"
            )
        options = ["smtputf8"] if utf8 else []
        if utf8 and conn.has_extn("8bitmime"):
            options.append("body=8bitmime")
        try:
            self._mail_from(conn, sender, options)
            for rcpt in recipients:
                address = _envelope_address(rcpt, utf8)
                if address is None:
                    outcome.refused[rcpt] = Refusal(553, _NO_SMTPUTF8, stage="local")
                    continue
                code, reply = conn.rcpt(address)
                if code == 421:
                    # "Closing the session" is about the server, not this recipient.
                    raise smtplib.SMTPServerDisconnected(f"{code} {_text(reply)}")
                if code in (250, 251):
                    outcome.accepted.append(rcpt)
                else:
                    outcome.refused[rcpt] = Refusal(code, _text(reply))
            if not outcome.accepted:
                conn.rset()  # leave the session clean for the next message
                return outcome
        except (smtplib.SMTPException, OSError) as exc:
            self._abandon()
            raise self._error(
                f"session failed before sending: {_describe(exc, self.smtp.timeout)}"
            ) from None

        data = _serialise(message, international=utf8)
        try:
            code, reply = conn.data(data)
        except smtplib.SMTPDataError as exc:
            # Refused at the DATA command itself: nothing was transmitted.
            self._reset_quietly(conn)
            return _refuse_all(outcome, Refusal(exc.smtp_code, _text(exc.smtp_error), "data"))
        except (smtplib.SMTPException, OSError) as exc:
            self._abandon()
            raise DeliveryUnknown(
                f"SMTP server {self.where}: session broke while sending the message data, "
                f"it may or may not have been delivered: {_describe(exc, self.smtp.timeout)}"
            ) from None
        if code != 250:
            # Refused after the data (e.g. 554 content rejected): for every accepted recipient.
            return _refuse_all(outcome, Refusal(code, _text(reply), "data"))
        return outcome

    @staticmethod
    def _use_smtputf8(conn: smtplib.SMTP, addresses: list[str]) -> bool:
        # Only when needed: SMTPUTF8 asks more of every relay down the line.
        return conn.has_extn("smtputf8") and not all(a.isascii() for a in addresses)

    def _mail_from(self, conn: smtplib.SMTP, sender: str, options: list[str]) -> None:
        code, reply = conn.mail(sender, options)
        if code != 250:
            self._reset_quietly(conn)
            # The same sender goes on every message: this is not one recipient's bounce.
            raise self._error(f"the server refused the sender <{sender}>: {code} {_text(reply)}")

    @staticmethod
    def _reset_quietly(conn: smtplib.SMTP) -> None:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            conn.rset()

    def _error(self, message: str) -> MailError:
        return MailError(self._scrub(f"SMTP server {self.where}: {message}"))

    def _scrub(self, text: str) -> str:
        # The password is never put into a message on purpose; this guards against a server
        # echoing it back in a reply we quote.
        return Scrubber([self.smtp.password])(text)


def build_text_message(
    *,
    sender: str,
    to: list[str],
    subject: str,
    body: str,
    headers: dict[str, str] | None = None,
) -> EmailMessage:
    """A plain-text message with Date, Message-ID and the given extra headers."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = " ".join(subject.split())  # headers must not carry line breaks
    msg["Date"] = formatdate(localtime=True)
    domain = sender.rpartition("@")[2] or None
    msg["Message-ID"] = make_msgid(domain=domain)
    for name, value in (headers or {}).items():
        msg[name] = " ".join(value.split())
    msg.set_content(body)
    return msg


_NO_SMTPUTF8 = "address needs SMTPUTF8, which the server does not offer (not sent)"


def _envelope_address(address: str, utf8: bool) -> str | None:
    """The address as it can go into MAIL FROM / RCPT TO on this session, or None.

    Without SMTPUTF8 an internationalised domain still works as punycode (IDNA); a non-ASCII
    local part does not, and such a recipient is refused locally (stage "local").
    """
    if utf8 or address.isascii():
        return address
    local, at, domain = address.rpartition("@")
    if not at or not local.isascii():
        return None
    a_label = _a_label(domain)
    return None if a_label is None else f"{local}@{a_label}"


def _a_label(domain: str) -> str | None:
    """The domain in ASCII (punycode, IDNA), or None if it has no such form."""
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None


def _refuse_all(outcome: SendOutcome, refusal: Refusal) -> SendOutcome:
    for rcpt in outcome.accepted:
        outcome.refused[rcpt] = refusal
    outcome.accepted = []
    return outcome


def _serialise(message: EmailMessage, *, international: bool) -> bytes:
    # Bcc must not travel in the data; the envelope already carries those recipients.
    msg = copy.copy(message)
    del msg["Bcc"]
    del msg["Resent-Bcc"]
    if not international:
        _ascii_domains(msg)
    # smtplib sends bytes as they are, so the line endings must already be SMTP's CRLF.
    # An EmailMessage always carries an EmailPolicy (the one kind with `utf8`).
    policy = cast("EmailPolicy", msg.policy).clone(linesep="\r\n", utf8=international)
    return msg.as_bytes(policy=policy)


# Address headers whose domains must be ASCII when the message is not sent with SMTPUTF8.
_ADDRESS_HEADERS = ("From", "Sender", "Reply-To", "To", "Cc")


def _ascii_domains(msg: EmailMessage) -> None:
    """Write internationalised domains in address headers as punycode, like the envelope.

    Without SMTPUTF8 the email package would put an encoded word into the domain, which is
    not allowed in an address. A non-ASCII local part has no ASCII form and is left as is.
    `msg` is a shallow copy: its header list is replaced, never changed in place.
    """
    for name in _ADDRESS_HEADERS:
        header = msg.get(name)
        groups = getattr(header, "groups", None)
        if not groups or all(a.domain.isascii() for g in groups for a in g.addresses):
            continue
        fixed = [Group(g.display_name, [_ascii_address(a) for a in g.addresses]) for g in groups]
        del msg[name]  # assigns a new header list, so the caller's message keeps its own
        msg[name] = fixed


def _ascii_address(address: Address) -> Address:
    a_label = _a_label(address.domain)
    if a_label is None or a_label == address.domain or not address.username.isascii():
        return address
    return Address(address.display_name, address.username, a_label)


def _reply(exc: smtplib.SMTPResponseException) -> str:
    return f"{exc.smtp_code} {_text(exc.smtp_error)}"


def _text(reply: bytes | str) -> str:
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", "replace")
    return " ".join(reply.split())


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, smtplib.SMTPServerDisconnected) and "timed out" not in str(exc):
        return f"the server closed the connection ({exc})" if str(exc) else "disconnected"
    return describe(exc, timeout)


def _peer_address(conn: smtplib.SMTP) -> str:
    """The address the socket is really connected to (not the configured name)."""
    sock = conn.sock
    if sock is None:
        return "an unknown address"
    try:
        return str(sock.getpeername()[0])
    except (OSError, AttributeError, IndexError):
        return "an unknown address"
