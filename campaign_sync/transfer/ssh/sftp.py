"""SFTP over an SSH connection: paramiko's SFTPClient, with requests as large as the server
allows and downloads read with a pipeline of requests in flight."""

from __future__ import annotations

import posixpath
import stat
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO

import paramiko
from paramiko.sftp import CMD_EXTENDED, CMD_EXTENDED_REPLY, CMD_READ, CMD_STATUS, int64

from ...errors import SourceMissing, TransferError
from ..base import Progress, RemoteFile, no_archive_name, plain_name
from .session import CHUNK, MAX_PACKET_SIZE, WINDOW_SIZE, ConnectionLost

# Bytes of SFTP reads in flight: enough to cover the round trip, yet well inside our 16 MiB
# window; measured on loopback, filling the window made downloads slower, not faster.
SFTP_READ_AHEAD = 4 * 1024 * 1024
SFTP_DEFAULT_REQUEST = 32768  # what every SFTP server must accept (and paramiko's default)
SFTP_LARGEST_REQUEST = 256 * 1024 - 1024  # room for the header under OpenSSH's 256 KiB


def sftp_path(path: str) -> str:
    """A path for SFTP, where relative paths start in the login directory: no `~/`."""
    if path == "~":
        return "."
    return (path[2:] or ".") if path.startswith("~/") else path


DIRECTORY_TARGET = "it is a directory; the target's path must name a file"


def bare_refusal(exc: OSError) -> bool:
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


class SftpChannel:
    """The SFTP client of a connection, reopened with it; `connection` gives a live one."""

    def __init__(self, connection: Callable[[], paramiko.Transport], timeout: float):
        self._connection = connection
        self._timeout = timeout
        self.open_client: paramiko.SFTPClient | None = None
        self.request = SFTP_DEFAULT_REQUEST

    def client(self) -> paramiko.SFTPClient:
        transport = self._connection()
        channel = self.open_client.get_channel() if self.open_client is not None else None
        if self.open_client is None or channel is None or channel.closed:
            client = paramiko.SFTPClient.from_transport(
                transport, window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET_SIZE
            )
            if client is None:
                raise ConnectionLost("the server did not start the sftp subsystem")
            opened = client.get_channel()
            assert opened is not None  # from_transport gives a client on an open channel
            opened.settimeout(self._timeout)
            self.open_client = client
            self.request = _sftp_request_size(client)
        return self.open_client

    def size(self, path: str) -> int | None:
        try:
            attributes = self.client().stat(sftp_path(path))
        except FileNotFoundError:
            return None
        _not_a_file(attributes.st_mode)
        return attributes.st_size

    def list_files(self, folder: str) -> list[RemoteFile]:
        where = sftp_path(folder) or "."
        try:
            entries = self.client().listdir_attr(where)
        except OSError:
            # OpenSSH says "no such file" for a file named as the folder, too: look.
            try:
                mode = self.client().stat(where).st_mode
            except FileNotFoundError:
                raise SourceMissing(f"no folder {folder or '.'}") from None
            if mode is not None and not stat.S_ISDIR(mode):
                raise TransferError(f"{folder} is not a folder") from None
            raise
        # OpenSSH reports each entry as lstat sees it: a link is a link, never its target.
        return [
            RemoteFile(entry.filename, entry.st_size or 0, int(entry.st_mtime or 0))
            for entry in entries
            if entry.st_mode is not None
            and stat.S_ISREG(entry.st_mode)
            and plain_name(entry.filename)
        ]

    def fetch(self, path: str, sink: BinaryIO, progress: Progress | None) -> int:
        sftp = self.client()
        try:
            # Opening a directory works; reading it then fails with a bare "Failure".
            _not_a_file(sftp.stat(sftp_path(path)).st_mode)
            remote = sftp.open(sftp_path(path), "rb")
        except FileNotFoundError:
            raise SourceMissing(path) from None
        size = remote.stat().st_size or 0
        done = 0
        for chunk in _pipelined_reads(self.client(), remote, size, self.request):
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

    def put(self, src: Path, path: str, progress: Progress | None) -> None:
        size = src.stat().st_size
        sftp = self.client()
        with open(src, "rb") as reader:
            remote = self._create(path)
            remote.MAX_REQUEST_SIZE = self.request
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
                if not bare_refusal(exc):
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

    def _create(self, path: str) -> paramiko.SFTPFile:
        try:
            return self.client().open(sftp_path(path), "wb")
        except FileNotFoundError:  # OpenSSH says so for a missing folder and for a file
            folder = posixpath.dirname(path) or "."
            raise TransferError(f"there is no folder {folder} on the server") from None
        except OSError as exc:
            if bare_refusal(exc) and self.is_directory(path):
                raise TransferError(DIRECTORY_TARGET) from None
            raise

    def remove(self, path: str) -> None:
        try:
            self.client().remove(sftp_path(path))
        except OSError as exc:
            if bare_refusal(exc) and self.is_directory(path):
                raise TransferError("it is a directory, not a file") from None
            raise

    def archive(self, path: str, names: list[str]) -> str:
        sftp = self.client()
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

    def rename(self, staging: str, path: str) -> None:
        self.client().posix_rename(sftp_path(staging), sftp_path(path))

    def is_directory(self, path: str) -> bool:
        """Best effort, for an error message: whether `path` is a directory on the server."""
        try:
            mode = self.client().stat(sftp_path(path)).st_mode
            return mode is not None and stat.S_ISDIR(mode)
        except ConnectionLost:
            raise
        except (TransferError, OSError, paramiko.SSHException):
            return False


def _sftp_request_size(client: paramiko.SFTPClient) -> int:
    """The largest read/write request the server accepts, from OpenSSH's limits extension.

    paramiko asks for 32 KiB at a time; OpenSSH serves up to ~255 KiB, which cuts the
    per-request overhead several-fold. Servers without the extension keep the safe default.
    """
    try:
        # paramiko internals (not in its stubs), as are the three in _pipelined_reads.
        kind, reply = client._request(CMD_EXTENDED, "limits@openssh.com")  # type: ignore[attr-defined]
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
        number = sftp._async_request(  # type: ignore[attr-defined]
            replies, CMD_READ, remote.handle, int64(at), int(length)
        )
        return number, at, length

    while pending or offset < size:
        while offset < size and len(pending) < in_flight:
            pending.append(ask(offset, min(request, size - offset)))
            offset += pending[-1][2]
        number, at, length = pending.popleft()
        while number not in replies.by_id:
            sftp._read_response()  # type: ignore[attr-defined]  # files one reply by its id
        kind, message = replies.by_id.pop(number)
        if kind == CMD_STATUS:
            try:
                sftp._convert_status(message)  # type: ignore[attr-defined]
            except EOFError:
                return  # the file is shorter than it was: the caller's size check says so
            raise TransferError("unexpected SFTP status reply")  # pragma: no cover
        data = message.get_string()
        if 0 < len(data) < length:
            pending.appendleft(ask(at + len(data), length - len(data)))
        elif not data:
            return
        yield data
