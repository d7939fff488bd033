"""scp over an SSH connection: the scp package in single-file mode with its file handlers
replaced, so the bytes go into the staging file we opened, the name, mode and times the
server sends are ignored, and anything but exactly one regular file is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import paramiko
from scp import SCPClient, SCPException

from ...errors import SourceMissing, TransferError
from ..base import Progress
from .session import CHUNK, ConnectionLost, remote_arg, reply_text

# OpenSSH accepts 32 KiB channel packets from clients, less the 64 bytes paramiko keeps for
# the header (Channel._wait_for_send_window). A few packets per write keeps both the
# per-call overhead and sendall's re-slicing of the remainder small.
SCP_SEND_CHUNK = 4 * (32768 - 64)


def _sanitize(path: bytes) -> bytes:
    # The scp package passes remote paths through this before building its command line.
    return remote_arg(path.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")


def _is_missing(message: str) -> bool:
    return "No such file or directory" in message


class Scp(SCPClient):
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
                    message = reply_text(line[1:])
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
        detail = reply_text(self.stderr)
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
            raise TransferError(reply_text(chan.recv(512)) or "the server aborted the transfer")

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


def scp_fetch(
    transport: paramiko.Transport,
    timeout: float,
    path: str,
    sink: BinaryIO,
    progress: Progress | None,
) -> int:
    client = Scp(transport, timeout)
    try:
        return client.fetch_into(path, sink, progress)
    except SCPException as exc:
        raise _failure(client, str(exc), downloading=True) from None
    except (AssertionError, ValueError):
        raise TransferError("the server broke the scp protocol") from None
    finally:
        client.abort()


def scp_put(
    transport: paramiko.Transport,
    timeout: float,
    src: Path,
    path: str,
    progress: Progress | None,
) -> None:
    client = Scp(transport, timeout)
    try:
        with open(src, "rb") as reader:
            size = src.stat().st_size
            client.upload(reader, path, size, progress)
    except SCPException as exc:
        raise _failure(client, str(exc), downloading=False) from None
    finally:
        client.abort()


def _failure(client: Scp, message: str, *, downloading: bool) -> TransferError | SourceMissing:
    """Classify an error the scp package reported."""
    if downloading and _is_missing(message):
        return SourceMissing(message)
    transport = client.transport
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
    return TransferError(reply_text(message.encode("utf-8", "replace")))
