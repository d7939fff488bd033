"""`type: ssh` servers: SCP (paramiko + the scp package) and SFTP (paramiko's SFTPClient).

Design choices, and why:

* One paramiko Transport per SshTransfer, opened lazily and reopened after a failure, so a
  job that fetches, then archives, makes one connection when all goes well.
* The host key is checked (hostkeys.py) right after key exchange, before any credential is
  sent. There is no auto-add: paramiko's SSHClient policies are not used at all.
* Every channel gets `timeout` as its socket timeout, so a server that stops sending (or
  stops reading) raises within that many seconds instead of hanging a cron job. Where
  paramiko has no timeout (its socket writes), a watchdog closes a connection that made
  no progress for 2 x timeout + 1 s.
* AES-GCM is negotiated first and CBC/3DES are not offered at all; windows, packets and
  SFTP requests are as large as the server allows. Python's per-packet cost, not the
  cipher, is what limits paramiko's throughput.
* Failures are sorted into "the connection broke" (retried with backoff, on a new
  connection) and "the server said no" (not retried: host key, authentication, missing
  file, permission, a server that cannot rename).
* scp downloads use the scp package in single-file mode with the file handlers replaced:
  the bytes go into the staging file we opened, the name, mode and times the server
  sends are ignored, and anything but exactly one regular file is refused.
"""

from __future__ import annotations

import getpass
import posixpath
import re
import shlex
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, TypeVar

import paramiko
from paramiko.sftp import CMD_EXTENDED, CMD_EXTENDED_REPLY, CMD_READ, CMD_STATUS, int64
from scp import SCPClient, SCPException

from .config import ServerConfig
from .errors import CampaignSyncError, HostKeyError, SourceMissing, TransferError
from .hostkeys import HostKeyPolicy, host_pattern, preferred_algorithms
from .transfer import Progress, Transfer, archive_names, no_archive_name, temp_name

T = TypeVar("T")

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
# OpenSSH accepts 32 KiB channel packets from clients, less the 64 bytes paramiko keeps for
# the header (Channel._wait_for_send_window). A few packets per write keeps both the
# per-call overhead and sendall's re-slicing of the remainder small.
SCP_SEND_CHUNK = 4 * (32768 - 64)
# Bytes of SFTP reads in flight: enough to cover the round trip, yet well inside our 16 MiB
# window; measured on loopback, filling the window made downloads slower, not faster.
SFTP_READ_AHEAD = 4 * 1024 * 1024
SFTP_DEFAULT_REQUEST = 32768  # what every SFTP server must accept (and paramiko's default)
SFTP_LARGEST_REQUEST = 256 * 1024 - 1024  # room for the header under OpenSSH's 256 KiB
BACKOFF_FIRST = 1.0  # seconds before the first retry; doubled for each further one
BACKOFF_MAX = 30.0
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


# --------------------------------------------------------------------------- helpers


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


def sftp_path(path: str) -> str:
    """A path for SFTP, where relative paths start in the login directory: no `~/`."""
    if path == "~":
        return "."
    return (path[2:] or ".") if path.startswith("~/") else path


def _sanitize(path: bytes) -> bytes:
    # The scp package passes remote paths through this before building its command line.
    return remote_arg(path.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")


def _kex_stall(timeout: float) -> str:
    return f"the server stopped answering during key exchange (no reply within {timeout:g} s)"


def _stalled_in_kex(transport: paramiko.Transport, started: float, timeout: float) -> bool:
    """Whether a failed handshake is one where the banner came but key exchange never ended."""
    return (
        bool(transport.remote_version)
        and not transport.initial_kex_done
        and time.monotonic() - started >= timeout * 0.9
    )


def _is_missing(message: str) -> bool:
    return "No such file or directory" in message


_DIRECTORY_TARGET = "it is a directory; the target's path must name a file"


def _bare_refusal(exc: OSError) -> bool:
    """Whether `exc` is SFTP's generic "Failure": OpenSSH's sftp server sends it for most
    errors (a directory, a full disk...), so it says nothing to a reader by itself."""
    return exc.errno is None and str(exc) == "Failure"


def _not_a_file(mode: int | None) -> None:
    """Refuse what stat shows is not a regular file (scp does the same: "not a regular file")."""
    if mode is None or stat.S_ISREG(mode):
        return  # a server that sends no mode: let the read itself tell
    if stat.S_ISDIR(mode):
        raise TransferError("it is a directory, not a file")
    raise TransferError("it is not a regular file")


def _one_line(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip()
    return re.sub(r"\s*\n\s*", " / ", text)[:500]


@contextmanager
def _remote_errors(connected: Callable[[], bool]) -> Iterator[None]:
    """Turn low-level failures into ConnectionLost (retry) or TransferError (do not)."""
    try:
        yield
    except CampaignSyncError:
        raise
    except TimeoutError:
        raise ConnectionLost("the server stopped responding (timeout)") from None
    except paramiko.AuthenticationException as exc:
        raise AuthenticationFailed(f"authentication failed: {exc}") from None
    except (EOFError, ConnectionError, paramiko.SSHException) as exc:
        raise ConnectionLost(f"connection lost: {exc or type(exc).__name__}") from None
    except OSError as exc:
        if not connected():  # paramiko's "Socket is closed" after the connection died
            raise ConnectionLost(f"connection lost: {exc}") from None
        # SFTP status errors and local file errors: the server (or disk) said no.
        if _bare_refusal(exc):
            raise TransferError("the server refused without giving a reason") from None
        raise TransferError(str(exc.strerror or exc)) from None


class _Watchdog:
    """Closes the connection when an operation has made no progress for `limit` seconds.

    Channel timeouts catch a stalled server almost everywhere, but paramiko writes to the
    socket without any timeout: if the server stops reading while its SSH window is still
    open (some servers advertise gigabytes), a write would block forever. Closing the
    transport from here makes that write fail, so no stall can outlive the limit.
    """

    def __init__(self, limit: float, on_stall: Callable[[], None]):
        self.limit = limit
        self.fired = False
        self._on_stall = on_stall
        self._last = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ssh-watchdog", daemon=True)

    def __enter__(self) -> _Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()

    def touch(self) -> None:
        self._last = time.monotonic()

    def _watch(self) -> None:
        while not self._done.wait(min(0.25, self.limit / 4)):
            if time.monotonic() - self._last > self.limit:
                self.fired = True
                self._on_stall()
                return


# --------------------------------------------------------------------------- scp


class _Scp(SCPClient):
    """The scp package's client, receiving at most one regular file into our file object."""

    def __init__(self, transport: paramiko.Transport, timeout: float):
        super().__init__(transport, buff_size=CHUNK, socket_timeout=timeout, sanitize=_sanitize)
        self._sink: BinaryIO | None = None
        self._report: Progress | None = None
        self.received: tuple[int, int] | None = None  # (bytes written, size announced)
        self.exit_status: int | None = None
        self.stderr = b""

    def fetch_into(self, remote: str, sink: BinaryIO, progress: Progress | None) -> int:
        self._sink, self._report = sink, progress
        # The local path only satisfies get()'s bookkeeping; _recv_file never opens it.
        self.get(remote, local_path="/nonexistent-campaign-sync")
        if self.received is None:
            raise TransferError(self.refusal("sent no file"))
        written, announced = self.received
        if written != announced:
            raise ConnectionLost(f"transfer stopped after {written} of {announced} bytes")
        return written

    def upload(self, reader: BinaryIO, remote: str, size: int, progress: Progress | None) -> None:
        # paramiko's Channel.sendall copies what is left after every packet, which is
        # quadratic in the block size: hand it a few packets' worth per call.
        self.buff_size = SCP_SEND_CHUNK
        if progress:
            self._progress = lambda _name, total, done, _peer: progress(done, total)
        self.putfo(reader, remote, mode="0644", size=size)

    def probe(self, remote: str) -> int | None:
        """The size scp announces for `remote` (no data is transferred), None if missing."""
        self.channel = self._open()
        self.channel.settimeout(self.socket_timeout)
        self.channel.exec_command(b"scp -f " + self.sanitize(remote.encode()))
        try:
            while True:
                self.channel.sendall(b"\x00")
                line = self._read_line()
                if not line:
                    if not self.transport.is_active():
                        raise ConnectionLost("connection lost")
                    self.close()  # collects exit status and stderr for the message
                    raise TransferError(self.refusal("ended the scp command"))
                if line[:1] == b"C":
                    return int(line.split(b" ", 2)[1])
                if line[:1] != b"T":  # T is a timestamp record; anything else is an error
                    message = _one_line(line[1:])
                    if _is_missing(message):
                        return None
                    raise TransferError(message)
        finally:
            self.abort()

    def _read_line(self) -> bytes:
        line = b""
        while not line.endswith(b"\n"):
            byte = self.channel.recv(1)
            if not byte:
                break
            line += byte
        return line

    def refusal(self, what: str) -> str:
        """Explain a server that ended the scp command without doing what was asked."""
        detail = _one_line(self.stderr)
        status = f" (exit status {self.exit_status})" if self.exit_status is not None else ""
        return (
            f"the server {what}{status}: {detail or 'no message'}. Does the account allow "
            f"scp? If it only allows SFTP, set protocol: sftp."
        )

    # -- the scp package's hooks -------------------------------------------------------

    def _recv_file(self, cmd: bytes) -> None:
        chan = self.channel
        sink, self._sink = self._sink, None
        try:
            size = int(cmd.strip().split(b" ", 2)[1])
        except (ValueError, IndexError):
            size = -1
        if sink is None or size < 0:
            chan.send(b"\x01campaign-sync expects exactly one file\n")
            raise TransferError("the server sent more than one file or a malformed header")
        chan.send(b"\x00")
        done = 0
        self.received = (0, size)
        while done < size:
            data = chan.recv(min(CHUNK, size - done))
            if not data:
                raise ConnectionLost(f"connection closed after {done} of {size} bytes")
            sink.write(data)
            done += len(data)
            self.received = (done, size)
            if self._report:
                self._report(done, size)
        status = chan.recv(1)
        if status != b"\x00":
            raise TransferError(_one_line(chan.recv(512)) or "the server aborted the transfer")

    def _recv_pushd(self, cmd: bytes) -> None:
        self.channel.send(b"\x01campaign-sync does not copy directories\n")
        raise TransferError("the remote path is a directory, not a file")

    def close(self) -> None:
        """Finish the command, keeping its exit status and stderr for error messages."""
        chan = self.channel
        if chan is None:
            return
        try:
            chan.shutdown_write()
            if chan.status_event.wait(self.socket_timeout):
                self.exit_status = chan.exit_status
            while chan.recv_stderr_ready():
                self.stderr += chan.recv_stderr(4096)
        except (EOFError, OSError, paramiko.SSHException):
            pass
        finally:
            self.abort()

    def abort(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None


# --------------------------------------------------------------------------- transfer


class SshTransfer(Transfer):
    """A connection to one `type: ssh` server, speaking scp or sftp as configured."""

    def __init__(self, server: ServerConfig):
        self.server = server
        self.policy = HostKeyPolicy(server.host, server.port, server.known_hosts, server.host_key)
        self._transport: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._sftp_request = SFTP_DEFAULT_REQUEST
        self._key: paramiko.PKey | None = None
        self._watchdog: _Watchdog | None = None
        # Sleeps between attempts; tests replace it to stay quick.
        self.sleep: Callable[[float], None] = time.sleep

    # -- the Transfer interface -------------------------------------------------------

    def size(self, path: str) -> int | None:
        if self.server.protocol == "sftp":
            return self._retrying(f"stat {path}", lambda: self._sftp_size(path))
        return self._retrying(f"stat {path}", lambda: self._scp().probe(path))

    def fetch(self, path: str, dest: Path, progress: Progress | None = None) -> int:
        progress = self._tracked(progress)

        def attempt() -> int:
            # "wb" truncates what a failed attempt left and keeps the file's 0600 mode.
            with open(dest, "wb") as sink:
                if self.server.protocol == "sftp":
                    return self._sftp_fetch(path, sink, progress)
                return self._scp_fetch(path, sink, progress)

        try:
            return self._retrying(f"fetch {path}", attempt)
        except BaseException:
            # Nothing may mistake a partial download for the file: leave it empty.
            with suppress(OSError):
                open(dest, "wb").close()
            raise

    def put(
        self, src: Path, path: str, *, atomic: bool = True, progress: Progress | None = None
    ) -> None:
        staging = temp_name(path) if atomic else path
        progress = self._tracked(progress)

        def attempt() -> None:
            try:
                if self.server.protocol == "sftp":
                    self._sftp_put(src, staging, progress)
                else:
                    self._scp_put(src, staging, progress)
                if atomic:
                    self._rename_into_place(staging, path)
            except (ConnectionLost, TimeoutError, EOFError, paramiko.SSHException):
                # The connection is broken or stalled: cleaning up over it would only wait
                # out another timeout. The hidden temporary name is reused by a retry.
                raise
            except BaseException:
                if atomic:
                    self._remove_quietly(staging)
                raise

        self._retrying(f"upload {path}", attempt)

    def delete(self, path: str) -> None:
        if self.server.protocol == "sftp":
            self._retrying(f"delete {path}", lambda: self._sftp_remove(path))
        else:
            self._retrying(f"delete {path}", lambda: self._run(f"rm -- {remote_arg(path)}"))

    def archive(self, path: str, archive_dir: str) -> str:
        names = archive_names(path, archive_dir)
        if self.server.protocol == "sftp":
            return self._retrying(f"archive {path}", lambda: self._sftp_archive(path, names))
        # The first name that is free (no file, directory or link there); its number back.
        command = (
            f"mkdir -p -- {remote_arg(posixpath.dirname(names[0]) or '.')} && n=0 && "
            f"for t in {' '.join(remote_arg(name) for name in names)}; do "
            f'if [ ! -e "$t" ] && [ ! -L "$t" ]; then mv -f -- {remote_arg(path)} "$t" '
            f"&& echo $n; exit; fi; n=$((n+1)); done; "
            f"echo {shlex.quote(no_archive_name(path, archive_dir))} >&2; exit 1"
        )
        out = self._retrying(f"archive {path}", lambda: self._run(command))
        try:
            return names[int(out.strip())]
        except (ValueError, IndexError):
            raise TransferError(
                f"{self._where()}: archive {path}: unexpected reply {_one_line(out)!r}"
            ) from None

    def close(self) -> None:
        sftp, self._sftp = self._sftp, None
        transport, self._transport = self._transport, None
        if sftp is not None:
            with suppress(Exception):
                sftp.close()
        if transport is not None:
            with suppress(Exception):
                transport.close()

    # -- retries ----------------------------------------------------------------------

    def _retrying(self, what: str, operation: Callable[[], T]) -> T:
        attempts = self.server.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                with self._watched() as watchdog, _remote_errors(self._connected):
                    try:
                        return operation()
                    except BaseException:
                        if watchdog.fired:
                            raise ConnectionLost(
                                f"no progress for {watchdog.limit:g}s: the server stalled (timeout)"
                            ) from None
                        raise
            except ConnectionLost as exc:
                self.close()  # a broken connection is never reused
                if attempt == attempts:
                    tries = f" (gave up after {attempts} attempts)" if attempts > 1 else ""
                    raise TransferError(f"{self._where()}: {what}: {exc}{tries}") from None
                self.sleep(min(BACKOFF_FIRST * 2 ** (attempt - 1), BACKOFF_MAX))
            except SourceMissing as exc:
                raise SourceMissing(f"no file {self._quote(what)} on {self._where()}") from exc
            except HostKeyError:
                self.close()
                raise
            except TransferError as exc:
                raise type(exc)(f"{self._where()}: {what}: {exc}") from None
        raise AssertionError("unreachable")

    @contextmanager
    def _watched(self) -> Iterator[_Watchdog]:
        # Twice the timeout: the channel timeouts normally fire first, with a clearer cause.
        limit = 2 * self.server.timeout + 1

        def stalled() -> None:
            transport = self._transport
            if transport is not None:
                transport.close()

        with _Watchdog(limit, stalled) as watchdog:
            self._watchdog = watchdog
            try:
                yield watchdog
            finally:
                self._watchdog = None

    def _alive(self) -> None:
        """Tell the watchdog that the current operation is making progress."""
        if self._watchdog is not None:
            self._watchdog.touch()

    def _tracked(self, progress: Progress | None) -> Progress:
        def report(done: int, total: int | None) -> None:
            self._alive()
            if progress:
                progress(done, total)

        return report

    def _connected(self) -> bool:
        transport = self._transport
        return transport is not None and transport.is_active()

    def _where(self) -> str:
        return f"server '{self.server.name}' ({host_pattern(self.server.host, self.server.port)})"

    @staticmethod
    def _quote(what: str) -> str:
        return what.split(" ", 1)[1] if " " in what else what

    # -- connecting ---------------------------------------------------------------------

    def _connection(self) -> paramiko.Transport:
        if self._transport is not None and self._transport.is_active():
            return self._transport
        self.close()
        self._transport = self._connect()
        return self._transport

    def _connect(self) -> paramiko.Transport:
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
            except paramiko.IncompatiblePeer:
                continue  # the server has no key of this kind
            key = transport.get_remote_server_key()
            if self.policy.matches_pin(key.asbytes()):
                return transport
            transport.close()
            offered.append((key.get_name(), key.asbytes()))
        raise HostKeyError(self.policy.pin_mismatch(offered))

    def _handshake(self, key_types: tuple[str, ...] | None) -> paramiko.Transport:
        """A new connection through key exchange (host key not yet checked, no login)."""
        timeout = self.server.timeout
        try:
            sock = socket.create_connection((self.server.host, self.server.port), timeout=timeout)
        except OSError as exc:
            raise ConnectionLost(f"cannot connect: {exc.strerror or exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._alive()
        transport = paramiko.Transport(
            sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET_SIZE
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
                raise paramiko.IncompatiblePeer("no such host key algorithm here")
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
            if isinstance(exc, paramiko.IncompatiblePeer) or not _stalled_in_kex(
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
            if self._try_key(transport, user, self._load_key()):
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
            f"authentication as '{user}' on {self._where()} failed "
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

    def _load_key(self) -> paramiko.PKey:
        if self._key is None:
            path = self.server.key_file
            try:
                passphrase = self.server.key_passphrase
                self._key = paramiko.PKey.from_path(
                    path, passphrase.encode("utf-8") if passphrase else None
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

    # -- scp ----------------------------------------------------------------------------

    def _scp(self) -> _Scp:
        return _Scp(self._connection(), self.server.timeout)

    def _scp_fetch(self, path: str, sink: BinaryIO, progress: Progress | None) -> int:
        client = self._scp()
        try:
            return client.fetch_into(path, sink, progress)
        except SCPException as exc:
            raise self._scp_failure(client, str(exc), downloading=True) from None
        except (AssertionError, ValueError):
            raise TransferError("the server broke the scp protocol") from None
        finally:
            client.abort()

    def _scp_put(self, src: Path, path: str, progress: Progress | None) -> None:
        client = self._scp()
        try:
            with open(src, "rb") as reader:
                size = src.stat().st_size
                client.upload(reader, path, size, progress)
        except SCPException as exc:
            raise self._scp_failure(client, str(exc), downloading=False) from None
        finally:
            client.abort()

    def _scp_failure(self, client: _Scp, message: str, *, downloading: bool) -> TransferError:
        """Classify an error the scp package reported."""
        if downloading and _is_missing(message):
            return SourceMissing(message)
        transport = self._transport
        if "Timeout" in message or "timeout" in message:
            return ConnectionLost("the server stopped responding (timeout)")
        if transport is None or not transport.is_active():
            return ConnectionLost(f"connection lost ({message})")
        if message in ("No response from server", "Underlying channel was closed"):
            client.close()  # collect exit status and stderr for the explanation
            return TransferError(client.refusal("ended the scp command"))
        if not message.startswith("scp:"):
            # Not an error of the remote scp program: something else answered instead.
            client.stderr = message.encode("utf-8", "replace") + client.stderr
            client.close()
            return TransferError(client.refusal("did not run scp"))
        return TransferError(_one_line(message.encode("utf-8", "replace")))

    def _run(self, command: str) -> bytes:
        """Run a shell command on the server; its stdout, or TransferError with its stderr."""
        transport = self._connection()
        channel = transport.open_session(timeout=self.server.timeout)
        self._alive()
        try:
            channel.settimeout(self.server.timeout)
            channel.exec_command(command)
            channel.shutdown_write()
            out = _read_all(channel.recv)
            self._alive()
            err = _read_all(channel.recv_stderr)
            self._alive()
            if not channel.status_event.wait(self.server.timeout):
                raise ConnectionLost("the server stopped responding (timeout)")
            if not transport.is_active():
                raise ConnectionLost("connection lost while running a command")
            if channel.exit_status != 0:
                raise TransferError(
                    f"`{command}` failed (exit status {channel.exit_status}): "
                    f"{_one_line(err) or 'no message'}"
                )
            return out
        finally:
            channel.close()

    # -- sftp ---------------------------------------------------------------------------

    def _sftp_client(self) -> paramiko.SFTPClient:
        transport = self._connection()
        if self._sftp is None or self._sftp.get_channel().closed:
            client = paramiko.SFTPClient.from_transport(
                transport, window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET_SIZE
            )
            if client is None:
                raise ConnectionLost("the server did not start the sftp subsystem")
            client.get_channel().settimeout(self.server.timeout)
            self._sftp = client
            self._sftp_request = _sftp_request_size(client)
        return self._sftp

    def _sftp_size(self, path: str) -> int | None:
        try:
            attributes = self._sftp_client().stat(sftp_path(path))
        except FileNotFoundError:
            return None
        _not_a_file(attributes.st_mode)
        return attributes.st_size

    def _sftp_fetch(self, path: str, sink: BinaryIO, progress: Progress | None) -> int:
        sftp = self._sftp_client()
        try:
            # Opening a directory works; reading it then fails with a bare "Failure".
            _not_a_file(sftp.stat(sftp_path(path)).st_mode)
            remote = sftp.open(sftp_path(path), "rb")
        except FileNotFoundError:
            raise SourceMissing(path) from None
        size = remote.stat().st_size or 0
        done = 0
        for chunk in _pipelined_reads(self._sftp_client(), remote, size, self._sftp_request):
            sink.write(chunk)
            done += len(chunk)
            if progress:
                progress(done, size)
        remote.close()
        if done != size:
            raise TransferError(
                f"{path} changed size while being read ({done} of {size} bytes); "
                f"is it still being uploaded?"
            )
        return done

    def _sftp_put(self, src: Path, path: str, progress: Progress | None) -> None:
        size = src.stat().st_size
        sftp = self._sftp_client()
        with open(src, "rb") as reader:
            remote = self._sftp_create(path)
            remote.MAX_REQUEST_SIZE = self._sftp_request
            remote.set_pipelined(True)  # do not wait for each write's acknowledgement
            done = 0
            try:
                while chunk := reader.read(CHUNK):
                    remote.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, size)
                remote.close()  # waits for every pending write to be acknowledged
            except OSError as exc:
                if not _bare_refusal(exc):
                    raise
                raise TransferError(
                    f"the server refused the data of {path} without giving a reason "
                    "(is its disk full, or the account over its quota?)"
                ) from None
        written = sftp.stat(sftp_path(path)).st_size
        if written != size:
            # The connection is fine and the server answered: it did not keep the bytes
            # (a full disk or a quota). Retrying cannot help; the caller removes the rest.
            raise TransferError(
                f"the server kept only {written} of {size} bytes of {path} (is its disk full?)"
            )

    def _sftp_create(self, path: str) -> paramiko.SFTPFile:
        try:
            return self._sftp_client().open(sftp_path(path), "wb")
        except FileNotFoundError:  # OpenSSH says so for a missing folder and for a file
            folder = posixpath.dirname(path) or "."
            raise TransferError(f"there is no folder {folder} on the server") from None
        except OSError as exc:
            if _bare_refusal(exc) and self._is_directory(path):
                raise TransferError(_DIRECTORY_TARGET) from None
            raise

    def _sftp_remove(self, path: str) -> None:
        try:
            self._sftp_client().remove(sftp_path(path))
        except OSError as exc:
            if _bare_refusal(exc) and self._is_directory(path):
                raise TransferError("it is a directory, not a file") from None
            raise

    def _sftp_archive(self, path: str, names: list[str]) -> str:
        sftp = self._sftp_client()
        parts = sftp_path(posixpath.dirname(names[0])).split("/")
        for depth in range(1, len(parts) + 1):
            directory = "/".join(parts[:depth])
            if directory:
                with suppress(OSError):
                    sftp.mkdir(directory)
        for new_path in names:
            try:
                sftp.lstat(sftp_path(new_path))
            except FileNotFoundError:
                sftp.posix_rename(sftp_path(path), sftp_path(new_path))
                return new_path
        raise TransferError(no_archive_name(path, posixpath.dirname(names[0])))

    # -- atomic uploads -------------------------------------------------------------------

    def _rename_into_place(self, staging: str, path: str) -> None:
        try:
            if self.server.protocol == "sftp":
                self._sftp_client().posix_rename(sftp_path(staging), sftp_path(path))
            else:
                # mv onto a directory would move the file into it and report success.
                target = remote_arg(path)
                self._run(
                    f'if [ -d {target} ]; then echo "is a directory" >&2; exit 1; fi; '
                    f"mv -f -- {remote_arg(staging)} {target}"
                )
        except ConnectionLost:
            raise
        except (TransferError, OSError, paramiko.SSHException) as exc:
            if self._is_directory(path):
                raise TransferError(_DIRECTORY_TARGET) from None
            detail = (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)
            detail = detail or "refused"
            raise TransferError(
                f"uploaded {staging} but could not rename it to {path}: {detail}. If this "
                f"server cannot rename files, set `atomic: false` on the job's target "
                f"(the partner may then see a partly written file)."
            ) from None

    def _is_directory(self, path: str) -> bool:
        """Best effort, for an error message: whether `path` is a directory on the server."""
        try:
            if self.server.protocol == "sftp":
                mode = self._sftp_client().stat(sftp_path(path)).st_mode
                return mode is not None and stat.S_ISDIR(mode)
            self._run(f"test -d {remote_arg(path)}")
            return True
        except ConnectionLost:
            raise
        except (TransferError, OSError, paramiko.SSHException):
            return False

    def _remove_quietly(self, path: str) -> None:
        """Best effort: do not leave a temporary upload behind on a live connection."""
        transport = self._transport
        if transport is None or not transport.is_active():
            return
        with suppress(Exception):
            if self.server.protocol == "sftp":
                self._sftp_client().remove(sftp_path(path))
            else:
                self._run(f"rm -f -- {remote_arg(path)}")


def _sftp_request_size(client: paramiko.SFTPClient) -> int:
    """The largest read/write request the server accepts, from OpenSSH's limits extension.

    paramiko asks for 32 KiB at a time; OpenSSH serves up to ~255 KiB, which cuts the
    per-request overhead several-fold. Servers without the extension keep the safe default.
    """
    try:
        kind, reply = client._request(CMD_EXTENDED, "limits@openssh.com")
    except (OSError, paramiko.SSHException):
        return SFTP_DEFAULT_REQUEST
    if kind != CMD_EXTENDED_REPLY:
        return SFTP_DEFAULT_REQUEST
    reply.get_int64()  # max packet length
    max_read, max_write = reply.get_int64(), reply.get_int64()
    # 0 means "no limit announced"; keep reads and writes at one common size.
    limits = [n for n in (max_read, max_write) if n > 0] + [SFTP_LARGEST_REQUEST]
    return max(SFTP_DEFAULT_REQUEST, min(limits))


class _Replies:
    """Collects SFTP replies by request id (paramiko hands them to a "file object")."""

    def __init__(self) -> None:
        self.by_id: dict[int, tuple[int, paramiko.Message]] = {}

    def _async_response(self, kind: int, message: paramiko.Message, number: int) -> None:
        self.by_id[number] = (kind, message)


def _pipelined_reads(
    sftp: paramiko.SFTPClient, remote: paramiko.SFTPFile, size: int, request: int
) -> Iterator[bytes]:
    """The file's bytes in order, with SFTP_READ_AHEAD bytes of read requests in flight.

    Done here rather than with SFTPFile.prefetch, whose extra thread and buffering cost
    about half the throughput. Short replies are completed with a follow-up request, so
    servers that cap reads below `request` work too. Reading stops at `size` or at EOF.
    """
    replies = _Replies()
    pending: deque[tuple[int, int, int]] = deque()  # (request id, offset, length)
    offset = 0
    in_flight = max(1, SFTP_READ_AHEAD // request)

    def ask(at: int, length: int) -> tuple[int, int, int]:
        number = sftp._async_request(replies, CMD_READ, remote.handle, int64(at), int(length))
        return number, at, length

    while pending or offset < size:
        while offset < size and len(pending) < in_flight:
            pending.append(ask(offset, min(request, size - offset)))
            offset += pending[-1][2]
        number, at, length = pending.popleft()
        while number not in replies.by_id:
            sftp._read_response()  # reads one reply and files it under its request id
        kind, message = replies.by_id.pop(number)
        if kind == CMD_STATUS:
            try:
                sftp._convert_status(message)
            except EOFError:
                return  # the file is shorter than it was: the caller's size check says so
            raise TransferError("unexpected SFTP status reply")  # pragma: no cover
        data = message.get_string()
        if 0 < len(data) < length:
            pending.appendleft(ask(at + len(data), length - len(data)))
        elif not data:
            return
        yield data


def _read_all(read: Callable[[int], bytes]) -> bytes:
    data = b""
    while chunk := read(65536):
        data += chunk
    return data
