"""An SSH connection to one server: connect, check the host key, log in; and the shell
commands run over it.

The host key is checked (hostkeys.py) right after key exchange, before any credential is
sent. There is no auto-add: paramiko's SSHClient policies are not used at all. AES-GCM is
negotiated first and CBC/3DES are not offered at all; windows and packets are as large as
the server allows.

A server with a `jump` host is reached through it, as OpenSSH's ProxyJump does: a
`direct-tcpip` channel opened on the jump host's own logged-in connection carries this
server's SSH connection, end to end. Each hop is an SshSession of its own, so each checks
its own host key and logs in with its own credentials; the jump host only relays bytes it
cannot read. Chains (A through B through C) are sessions nested the same way.
"""

from __future__ import annotations

import getpass
import re
import shlex
import socket
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import paramiko
from paramiko.ssh_exception import IncompatiblePeer  # (the stubs miss paramiko.IncompatiblePeer)

from ...config.model import ServerConfig
from ...errors import CampaignSyncError, HostKeyError, TransferError
from ..hostkeys import HostKeyPolicy, host_pattern, preferred_algorithms

# AES-GCM first: it needs no separate MAC pass and is by far the fastest paramiko cipher
# (issue 3 measured ~220 MB/s against ~75-100 MB/s for aes128-ctr). CTR stays as fallback.
PREFERRED_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
    "aes192-ctr",
)
# A large receive window lets the server keep sending while we decrypt; large packets mean
# fewer per-packet Python round trips. OpenSSH accepts up to 256 KiB packets.
WINDOW_SIZE = 16 * 1024 * 1024
MAX_PACKET_SIZE = 256 * 1024 - 1024
CHUNK = 1024 * 1024
KEEPALIVE_MAX = 15  # seconds between keepalives on an idle connection


# A server has at most one host key of each family; asking for one family at a time makes
# it show each key it has (used to find a pinned key that is not offered first).
_HOST_KEY_FAMILIES = (
    ("ssh-ed25519",),
    ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"),
    ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
)


class ConnectionLost(TransferError):
    """The connection failed, broke or stalled: worth another attempt."""


class AuthenticationFailed(TransferError):
    """The server refused every credential we have; retrying would not help."""


# Why a jump host would not open a channel (RFC 4254, 5.1), in words that say what to check.
_CHANNEL_REFUSALS = {
    1: "it does not allow forwarding there (AllowTcpForwarding or PermitOpen in its sshd_config)",
    2: "it could not connect there (check host and port as seen from the jump host)",
    3: "it does not support forwarding",
    4: "it is short of resources",
}


def remote_arg(path: str) -> str:
    """A remote path as one shell word that no command can take for an option.

    A leading `-` gets `./` in front (`--` does not help scp). A leading `~/` (or a
    lone `~`) stays unquoted so that the login shell expands it, as OpenSSH's scp does.
    """
    if path.startswith("-"):
        path = "./" + path
    if path == "~":
        return path
    if path.startswith("~/"):
        return "~/" + shlex.quote(path[2:])
    return shlex.quote(path)


def _kex_stall(timeout: float) -> str:
    return f"the server stopped answering during key exchange (no reply within {timeout:g} s)"


def _stalled_in_kex(transport: paramiko.Transport, started: float, timeout: float) -> bool:
    """Whether a failed handshake is one where the banner came but key exchange never ended."""
    return (
        bool(transport.remote_version)
        and not transport.initial_kex_done
        and time.monotonic() - started >= timeout * 0.9
    )


def reply_text(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip()
    return re.sub(r"\s*\n\s*", " / ", text)[:500]


def _read_all(read: Callable[[int], bytes]) -> bytes:
    data = b""
    while chunk := read(65536):
        data += chunk
    return data


def run_command(
    transport: paramiko.Transport, command: str, timeout: float, alive: Callable[[], None]
) -> bytes:
    """Run a shell command on the server; its stdout, or TransferError with its stderr."""
    channel = transport.open_session(timeout=timeout)
    alive()
    try:
        channel.settimeout(timeout)
        channel.exec_command(command)
        channel.shutdown_write()
        out = _read_all(channel.recv)
        alive()
        err = _read_all(channel.recv_stderr)
        alive()
        if not channel.status_event.wait(timeout):
            raise ConnectionLost("the server stopped responding (timeout)")
        if not transport.is_active():
            raise ConnectionLost("connection lost while running a command")
        if channel.exit_status != 0:
            raise TransferError(
                f"`{command}` failed (exit status {channel.exit_status}): "
                f"{reply_text(err) or 'no message'}"
            )
        return out
    finally:
        channel.close()


class _Tunnel:
    """A jump host's channel as the socket the next hop's connection runs over.

    paramiko's Transport takes any socket-like object; this one differs from the bare
    channel in two ways:

    * recv() takes all the channel holds at once and hands it out from here. The next
      hop's reader asks for a few bytes at a time (a packet header, then the packet), and
      paramiko's channel buffer drops what was read by moving all the rest to the front:
      with a large window holding megabytes, that made downloads through a jump host
      several times slower than through OpenSSH's `ssh -J`.
    * close() is quiet. Closing the channel tells the jump host over its own connection;
      when that connection is already gone (the jump host died: the very case the inner
      connection is closing for), paramiko raises in its reader thread, where nothing
      could catch it and Python would print a traceback. There is nothing left to tell.
    """

    def __init__(self, channel: paramiko.Channel):
        self._channel = channel
        self._pending = b""
        self._at = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._channel, name)

    def recv(self, size: int) -> bytes:
        if self._at >= len(self._pending):
            # Everything buffered: the pipe then clears itself instead of shifting the rest.
            self._pending, self._at = self._channel.recv(WINDOW_SIZE), 0
        chunk = self._pending[self._at : self._at + size]
        self._at += len(chunk)
        return chunk

    def close(self) -> None:
        with suppress(EOFError, OSError, paramiko.SSHException):
            self._channel.close()


def _hop_error(exc: CampaignSyncError, hop: str | None = None) -> CampaignSyncError:
    """`exc` (same type: retried or not as before) naming the jump host it happened on.

    Only the innermost hop that failed names itself: the hops after it pass the error on.
    """
    if hop is not None and not getattr(exc, "hop_named", False):
        exc = type(exc)(f"{hop}: {exc}")
    exc.hop_named = True  # type: ignore[attr-defined]
    return exc


class SshSession:
    """Opens logged-in connections to one server; `alive` is told of every step's progress."""

    def __init__(self, server: ServerConfig, alive: Callable[[], None]):
        self.server = server
        self.policy = HostKeyPolicy(
            server.host,
            server.port,
            server.known_hosts,
            server.host_key,
            via=server.jump.name if server.jump is not None else None,
        )
        self.transport: paramiko.Transport | None = None
        self._key: paramiko.PKey | None = None
        self._alive = alive
        # The hop this server is reached through (None: a direct TCP connection).
        self.jump = SshSession(server.jump, alive) if server.jump is not None else None

    def hops(self) -> list[SshSession]:
        """This session and every jump host before it, the first hop (the TCP one) first."""
        return (self.jump.hops() if self.jump is not None else []) + [self]

    def abort(self) -> None:
        """Close every hop's connection, the first hop first.

        That order never blocks: once the real socket is closed, the inner connections'
        channels are dead and closing them writes nothing. Closing an inner connection
        first would send over the outer one, which may be the one that stalled.
        """
        for hop in self.hops():
            transport = hop.transport
            if transport is not None:
                with suppress(Exception):
                    transport.close()

    def close(self) -> None:
        """Close every hop's connection and forget them: the next connect starts afresh."""
        self.abort()
        for hop in self.hops():
            hop.transport = None

    def connected(self) -> bool:
        transport = self.transport
        return transport is not None and transport.is_active()

    def where(self) -> str:
        return f"server '{self.server.name}' ({self._address()})"

    def _address(self) -> str:
        return host_pattern(self.server.host, self.server.port)

    def tunnel(self, host: str, port: int) -> _Tunnel:
        """A channel from this server to host:port, logging in here first if need be."""
        hop = f"jump host '{self.server.name}' ({self._address()})"
        try:
            if not self.connected():
                self.close()
                self.transport = self.connect()
            return _Tunnel(
                self.transport.open_channel(  # type: ignore[union-attr]
                    "direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=self.server.timeout
                )
            )
        except paramiko.ChannelException as exc:
            refusal = _CHANNEL_REFUSALS.get(exc.code, f"it refused (code {exc.code})")
            said = f"; it said: {reply_text(exc.text.encode())}" if exc.text else ""
            error = TransferError if exc.code == 1 else ConnectionLost
            raise _hop_error(
                error(f"{hop} would not open a connection to {host}:{port}: {refusal}{said}")
            ) from None
        except CampaignSyncError as exc:
            raise _hop_error(exc, hop) from None
        except (EOFError, OSError, paramiko.SSHException):
            if self.connected():  # paramiko gave up waiting for the channel
                problem = f"no reply to opening a connection within {self.server.timeout:g} s"
            else:
                problem = "the connection broke"
            raise _hop_error(ConnectionLost(f"{hop}: {problem}")) from None

    def connect(self) -> paramiko.Transport:
        transport = self._handshake(None)
        try:
            key = transport.get_remote_server_key()
            if self.server.host_key and not self.policy.matches_pin(key.asbytes()):
                transport.close()
                transport = self._find_pinned_key(key)
            else:
                self.policy.verify(key.get_name(), key.asbytes())
            self._authenticate(transport)
        except BaseException:
            transport.close()
            raise
        transport.set_keepalive(max(1, int(min(self.server.timeout / 2, KEEPALIVE_MAX))))
        return transport

    def _find_pinned_key(self, first: paramiko.PKey) -> paramiko.Transport:
        """A new connection whose host key matches the pin, asking for one key kind at a time.

        The server offers the key of the first algorithm in our list that it has, which
        need not be the pinned one (ed25519 comes first). So ask again for each other kind
        of key (ecdsa, rsa): at most two more handshakes, each under the usual timeouts.
        Only a key whose fingerprint matches the pin is accepted.
        """
        offered = [(first.get_name(), first.asbytes())]
        for family in _HOST_KEY_FAMILIES:
            if first.get_name() in family:
                continue
            try:
                transport = self._handshake(family)
            except IncompatiblePeer:
                continue  # the server has no key of this kind
            key = transport.get_remote_server_key()
            if self.policy.matches_pin(key.asbytes()):
                return transport
            transport.close()
            offered.append((key.get_name(), key.asbytes()))
        raise HostKeyError(self.policy.pin_mismatch(offered))

    def _open_socket(self) -> socket.socket | _Tunnel:
        """What this server's SSH connection runs over: TCP, or a channel through the jump."""
        if self.jump is not None:
            return self.jump.tunnel(self.server.host, self.server.port)
        try:
            sock = socket.create_connection(
                (self.server.host, self.server.port), timeout=self.server.timeout
            )
        except OSError as exc:
            raise ConnectionLost(f"cannot connect: {exc.strerror or exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _handshake(self, key_types: tuple[str, ...] | None) -> paramiko.Transport:
        """A new connection through key exchange (host key not yet checked, no login)."""
        sock = self._open_socket()
        self._alive()
        transport = paramiko.Transport(
            sock,  # type: ignore[arg-type]  # a _Tunnel stands in for a Channel
            default_window_size=WINDOW_SIZE,
            default_max_packet_size=MAX_PACKET_SIZE,
        )
        try:
            self._negotiate(transport, key_types)
        except BaseException:
            transport.close()
            sock.close()
            raise
        return transport

    def _negotiate(self, transport: paramiko.Transport, key_types: tuple[str, ...] | None) -> None:
        timeout = self.server.timeout
        options = transport.get_security_options()
        available = tuple(options.ciphers)
        options.ciphers = tuple(c for c in PREFERRED_CIPHERS if c in available) or available
        if key_types is not None:
            usable = tuple(k for k in key_types if k in options.key_types)
            if not usable:
                raise IncompatiblePeer("no such host key algorithm here")
            options.key_types = usable
        elif not self.server.host_key:
            options.key_types = preferred_algorithms(self.policy.known(), tuple(options.key_types))
        transport.banner_timeout = timeout
        # A little later than start_client gives up, so that the clearer message below wins.
        transport.handshake_timeout = timeout + 1
        transport.auth_timeout = timeout
        started = time.monotonic()
        try:
            transport.start_client(timeout=timeout)
        except (EOFError, paramiko.SSHException) as exc:
            if isinstance(exc, IncompatiblePeer) or not _stalled_in_kex(
                transport, started, timeout
            ):
                raise
            raise ConnectionLost(_kex_stall(timeout)) from None
        self._alive()
        if not transport.is_active() or not transport.initial_kex_done:
            # start_client returns quietly when its timeout passes mid-handshake.
            if transport.remote_version:
                raise ConnectionLost(_kex_stall(timeout))
            raise ConnectionLost("the server stopped responding (timeout)")

    def _authenticate(self, transport: paramiko.Transport) -> None:
        user = self.server.user or getpass.getuser()
        tried = []
        if self.server.key_file:
            tried.append(f"key file {self.server.key_file}")
            if self._try_key(transport, user, self._load_key(self.server.key_file)):
                return
        if self.server.agent:
            tried.append("ssh-agent keys")
            for agent_key in paramiko.Agent().get_keys():
                if self._try_key(transport, user, agent_key):
                    return
        if self.server.password:
            tried.append("password")
            with suppress(paramiko.AuthenticationException):
                transport.auth_password(user, self.server.password)
        if transport.is_authenticated():
            return
        if not transport.is_active():
            raise ConnectionLost("the server closed the connection during authentication")
        raise AuthenticationFailed(
            f"authentication as '{user}' on {self.where()} failed "
            f"(tried: {', '.join(tried) or 'nothing: set key_file, password or agent'}). "
            f"Is the public key in that account's authorized_keys?"
        )

    def _try_key(self, transport: paramiko.Transport, user: str, key: paramiko.PKey) -> bool:
        try:
            transport.auth_publickey(user, key)
        except paramiko.AuthenticationException:
            return False
        finally:
            self._alive()
        return transport.is_authenticated()

    def _load_key(self, path: Path) -> paramiko.PKey:
        if self._key is None:
            try:
                passphrase = self.server.key_passphrase
                self._key = paramiko.PKey.from_path(
                    path,
                    # paramiko says str, but hands it on to cryptography, which takes bytes.
                    passphrase.encode("utf-8") if passphrase else None,  # type: ignore[arg-type]
                )
            except (paramiko.SSHException, TypeError, ValueError, OSError) as exc:
                # The message names the problem, never the passphrase. cryptography raises
                # TypeError for an encrypted key without one, ValueError for a wrong one.
                if not passphrase and isinstance(
                    exc, (paramiko.PasswordRequiredException, TypeError)
                ):
                    problem = "it is encrypted: set key_passphrase"
                else:
                    problem = f"wrong key_passphrase or unsupported format: {type(exc).__name__}"
                raise AuthenticationFailed(f"cannot load key file {path} ({problem})") from None
        return self._key
