"""Real SMTP endpoints for tests: an aiosmtpd server, a closed port and a silent listener.

    with SmtpTestServer() as server:
        server.reject("bounce@example.com", 550)      # refused at RCPT time
        ... send to server.host:server.port ...
        server.messages[0].message["Subject"]

    with SmtpTestServer(tls=make_tls_files(tmp_path), auth={"user": "secret"}) as server:
        ... STARTTLS is offered and AUTH (only after TLS) checks the password ...

    with ClosedPort() as port: ...     # connecting is refused
    with SilentServer() as server: ... # accepts TCP, never says a word (timeouts)

Everything listens on 127.0.0.1 only, on a free port chosen at start.
"""

from __future__ import annotations

import datetime
import email
import email.policy
import socket
import ssl
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A port nobody listens on right now (aiosmtpd's Controller cannot bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- TLS material


@dataclass(frozen=True)
class TlsFiles:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key (PEM files)."""

    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this certificate (and nothing else)."""
        return ssl.create_default_context(cafile=str(self.cert))


def make_tls_files(folder: Path) -> TlsFiles:
    """Generate a throwaway self-signed certificate with `cryptography` (a paramiko dependency)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "campaign-sync test SMTP")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return TlsFiles(cert_path, key_path)


# --------------------------------------------------------------------------- the server


@dataclass
class ReceivedMessage:
    """One message as the server took it: the envelope and the raw data."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    authenticated_as: str | None

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def text(self) -> str:
        """The plain-text body, decoded, with the wire's CRLF turned back into newlines."""
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None, "message has no text/plain part"
        return part.get_content().replace("\r\n", "\n")


@dataclass
class _Handler:
    """aiosmtpd hooks: decide at RCPT and DATA, record what was accepted."""

    owner: SmtpTestServer
    messages: list[ReceivedMessage] = field(default_factory=list)

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        if self.owner.sender_reply is not None:
            return self.owner.sender_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        rule = self.owner.rejections.get(address.lower())
        if rule is not None:
            return rule
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any
    ) -> str:
        if self.owner.data_reply is not None:
            return self.owner.data_reply
        login = session.auth_data.login.decode() if session.authenticated else None
        self.messages.append(
            ReceivedMessage(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                data=envelope.original_content or envelope.content,
                tls=session.ssl is not None,
                authenticated_as=login,
            )
        )
        if self.owner.drop_after_data:
            # Took the message, then "crashed" before saying so: the client cannot know.
            server.transport.close()
        return "250 Message accepted for delivery"


class SmtpTestServer:
    """A real SMTP server (aiosmtpd) on a free loopback port, in a background thread.

    tls:  offer STARTTLS with this certificate.
    implicit_tls: speak TLS from the first byte instead (SMTPS, port 465 style); needs tls.
    smtputf8: offer SMTPUTF8 (internationalised addresses); on by default, as in aiosmtpd.
    auth: accept AUTH PLAIN/LOGIN for these user → password pairs (over TLS only, as real
          servers do, unless auth_require_tls=False).
    """

    def __init__(
        self,
        *,
        tls: TlsFiles | None = None,
        implicit_tls: bool = False,
        auth: dict[str, str] | None = None,
        auth_require_tls: bool = True,
        smtputf8: bool = True,
    ):
        if implicit_tls and tls is None:
            raise ValueError("implicit_tls needs tls files")
        self.host = LOOPBACK
        self.port = 0
        self.rejections: dict[str, str] = {}
        self.data_reply: str | None = None
        self.sender_reply: str | None = None
        self.drop_after_data = False
        self.auth = dict(auth or {})
        self.auth_attempts: list[str] = []  # user names tried, successful or not
        # One entry per AUTH command that arrived, whatever its mechanism or outcome: whether
        # the session was under TLS at that moment.
        self.auth_commands: list[bool] = []
        self._handler = _Handler(self)
        self._tls = tls
        self._implicit_tls = implicit_tls
        self._smtputf8 = smtputf8
        self._auth_require_tls = auth_require_tls
        self._controller: Controller | None = None

    # -- control ------------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        return self._handler.messages

    def reject(self, address: str, code: int, text: str | None = None) -> None:
        """Refuse `address` at RCPT with `code` (4xx temporary, 5xx permanent)."""
        if not 400 <= code < 600:
            raise ValueError("a rejection code is 4xx or 5xx")
        default = "Mailbox unavailable" if code >= 500 else "Try again later"
        self.rejections[address.lower()] = f"{code} {text or default}"

    def reject_sender(self, code: int, text: str = "Sender not allowed") -> None:
        """Refuse every MAIL FROM (a misconfigured sender address, a blocked account)."""
        self.sender_reply = f"{code} {text}"

    def reject_data(self, code: int, text: str = "Message content rejected") -> None:
        """Refuse every message after its data was sent (e.g. 554 spam)."""
        self.data_reply = f"{code} {text}"

    def clear(self) -> None:
        self.messages.clear()
        self.rejections.clear()
        self.data_reply = None
        self.sender_reply = None
        self.drop_after_data = False

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> SmtpTestServer:
        kwargs: dict[str, Any] = {"enable_SMTPUTF8": self._smtputf8}
        if self._tls is not None and self._implicit_tls:
            kwargs["ssl_context"] = self._tls.server_context()
        elif self._tls is not None:
            kwargs["tls_context"] = self._tls.server_context()
        if self.auth:
            kwargs["authenticator"] = self._authenticate
            kwargs["auth_require_tls"] = self._auth_require_tls
        # A port picked free can be taken before aiosmtpd binds it; try a few.
        for attempt in range(5):
            self.port = free_port()
            controller = _RecordingController(
                self, self._handler, hostname=self.host, port=self.port, ready_timeout=5, **kwargs
            )
            try:
                controller.start()
            except OSError:
                if attempt == 4:
                    raise
                continue
            self._controller = controller
            return self
        raise AssertionError("unreachable")

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = auth_data.login.decode("utf-8", "replace")
        self.auth_attempts.append(user)
        ok = self.auth.get(user) == auth_data.password.decode("utf-8", "replace")
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


class _RecordingSMTP(SMTP):
    """aiosmtpd's server, noting every AUTH command before it is handled."""

    def __init__(self, owner: SmtpTestServer, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._owner = owner

    async def smtp_AUTH(self, arg: str) -> None:  # noqa: N802 - aiosmtpd's command method
        assert self.session is not None
        self._owner.auth_commands.append(self.session.ssl is not None)
        await super().smtp_AUTH(arg)


class _RecordingController(Controller):
    def __init__(self, owner: SmtpTestServer, *args: Any, **kwargs: Any):
        self._owner = owner
        super().__init__(*args, **kwargs)

    def factory(self) -> SMTP:
        return _RecordingSMTP(self._owner, self.handler, **self.SMTP_kwargs)


# --------------------------------------------------------------------------- failing peers


class ClosedPort:
    """A loopback port where connecting is refused.

    The socket is bound but never listens, so the port stays reserved (no other test can
    take it) and the kernel answers every connection attempt with a reset.
    """

    def __init__(self) -> None:
        self.host = LOOPBACK
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((LOOPBACK, 0))
        self.port: int = self._sock.getsockname()[1]

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> ClosedPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SilentServer:
    """Accepts TCP connections and never sends a byte: a hung SMTP (or any) server.

    Connections are accepted by a thread and held open until stop(), so a client waits for
    a greeting that never comes and must rely on its own timeout.
    """

    def __init__(self) -> None:
        self.host = LOOPBACK
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((LOOPBACK, 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self.port: int = self._sock.getsockname()[1]
        self.connections = 0
        self._held: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="silent-server", daemon=True)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            self._held.append(conn)

    def start(self) -> SilentServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=2)
        for conn in self._held:
            conn.close()
        self._sock.close()

    def __enter__(self) -> SilentServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
