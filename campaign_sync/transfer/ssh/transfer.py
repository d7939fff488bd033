"""`type: ssh` servers: the Transfer over SCP (scp.py) or SFTP (sftp.py) on one connection
(session.py), with retries on a new connection and a watchdog against stalls.

Design choices, and why:

* One paramiko Transport per SshTransfer, opened lazily and reopened after a failure, so a
  job that fetches, then archives, makes one connection when all goes well. Through jump
  hosts, one connection per hop; a failure anywhere on the way reopens them all, and
  close() closes them all.
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

import posixpath
import shlex
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

import paramiko

from ...config.model import ServerConfig
from ...errors import CampaignSyncError, HostKeyError, SourceMissing, TransferError
from ..base import Progress, RemoteFile, Transfer, archive_names, no_archive_name, temp_name
from .listing import listing_command, parse_listing
from .scp import Scp, scp_fetch, scp_put
from .session import (
    AuthenticationFailed,
    ConnectionLost,
    SshSession,
    remote_arg,
    reply_text,
    run_command,
)
from .sftp import DIRECTORY_TARGET, SftpChannel, bare_refusal, sftp_path

T = TypeVar("T")

BACKOFF_FIRST = 1.0  # seconds before the first retry; doubled for each further one
BACKOFF_MAX = 30.0


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
        if bare_refusal(exc):
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


class SshTransfer(Transfer):
    """A connection to one `type: ssh` server, speaking scp or sftp as configured."""

    def __init__(self, server: ServerConfig):
        self.server = server
        self._watchdog: _Watchdog | None = None
        self.session = SshSession(server, self._alive)
        self._sftp = SftpChannel(self._connection, server.timeout)
        # Sleeps between attempts; tests replace it to stay quick.
        self.sleep: Callable[[float], None] = time.sleep

    # -- the Transfer interface -------------------------------------------------------

    def list_files(self, folder: str) -> list[RemoteFile]:
        shown = folder or "."
        try:
            if self.server.protocol == "sftp":
                return self._retrying(f"list {shown}", lambda: self._sftp.list_files(folder))
            out = self._retrying(f"list {shown}", lambda: self._run(listing_command(folder)))
            return self._retrying(f"list {shown}", lambda: parse_listing(out, folder))
        except SourceMissing:
            raise SourceMissing(f"no folder {shown} on {self.session.where()}") from None

    def size(self, path: str) -> int | None:
        if self.server.protocol == "sftp":
            return self._retrying(f"stat {path}", lambda: self._sftp.size(path))
        return self._retrying(
            f"stat {path}", lambda: Scp(self._connection(), self.server.timeout).probe(path)
        )

    def fetch(self, path: str, dest: Path, progress: Progress | None = None) -> int:
        progress = self._tracked(progress)

        def attempt() -> int:
            # "wb" truncates what a failed attempt left and keeps the file's 0600 mode.
            with open(dest, "wb") as sink:
                if self.server.protocol == "sftp":
                    return self._sftp.fetch(path, sink, progress)
                return scp_fetch(self._connection(), self.server.timeout, path, sink, progress)

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
                    self._sftp.put(src, staging, progress)
                else:
                    scp_put(self._connection(), self.server.timeout, src, staging, progress)
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
            self._retrying(f"delete {path}", lambda: self._sftp.remove(path))
        else:
            self._retrying(f"delete {path}", lambda: self._run(f"rm -- {remote_arg(path)}"))

    def archive(self, path: str, archive_dir: str) -> str:
        names = archive_names(path, archive_dir)
        if self.server.protocol == "sftp":
            return self._retrying(f"archive {path}", lambda: self._sftp.archive(path, names))
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
                f"{self.session.where()}: archive {path}: unexpected reply {reply_text(out)!r}"
            ) from None

    def close(self) -> None:
        sftp, self._sftp.open_client = self._sftp.open_client, None
        if sftp is not None:
            with suppress(Exception):
                sftp.close()
        self.session.close()  # this server's connection and every jump host's

    # -- retries ----------------------------------------------------------------------

    def _retrying(self, what: str, operation: Callable[[], T]) -> T:
        attempts = self.server.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                with self._watched() as watchdog, _remote_errors(self.session.connected):
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
                    raise TransferError(f"{self.session.where()}: {what}: {exc}{tries}") from None
                self.sleep(min(BACKOFF_FIRST * 2 ** (attempt - 1), BACKOFF_MAX))
            except SourceMissing as exc:
                raise SourceMissing(
                    f"no file {self._quote(what)} on {self.session.where()}"
                ) from exc
            except HostKeyError:
                self.close()
                raise
            except TransferError as exc:
                raise type(exc)(f"{self.session.where()}: {what}: {exc}") from None
        raise AssertionError("unreachable")

    @contextmanager
    def _watched(self) -> Iterator[_Watchdog]:
        # Twice the timeout: the channel timeouts normally fire first, with a clearer cause.
        # A jump host with a longer timeout of its own may take that long to connect.
        limit = 2 * max(hop.server.timeout for hop in self.session.hops()) + 1

        with _Watchdog(limit, self.session.abort) as watchdog:
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

    @staticmethod
    def _quote(what: str) -> str:
        return what.split(" ", 1)[1] if " " in what else what

    # -- the connection -----------------------------------------------------------------

    def _connection(self) -> paramiko.Transport:
        transport = self.session.transport
        if transport is not None and transport.is_active():
            return transport
        self.close()
        self.session.transport = self.session.connect()
        return self.session.transport

    def _run(self, command: str) -> bytes:
        """Run a shell command on the server; its stdout, or TransferError with its stderr."""
        return run_command(self._connection(), command, self.server.timeout, self._alive)

    # -- atomic uploads -------------------------------------------------------------------

    def _rename_into_place(self, staging: str, path: str) -> None:
        try:
            if self.server.protocol == "sftp":
                self._sftp.rename(staging, path)
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
                raise TransferError(DIRECTORY_TARGET) from None
            detail = (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)
            detail = detail or "refused"
            raise TransferError(
                f"uploaded {staging} but could not rename it to {path}: {detail}. If this "
                f"server cannot rename files, set `atomic: false` on the job's target "
                f"(the partner may then see a partly written file)."
            ) from None

    def _is_directory(self, path: str) -> bool:
        """Best effort, for an error message: whether `path` is a directory on the server."""
        if self.server.protocol == "sftp":
            return self._sftp.is_directory(path)
        try:
            self._run(f"test -d {remote_arg(path)}")
            return True
        except ConnectionLost:
            raise
        except (TransferError, OSError, paramiko.SSHException):
            return False

    def _remove_quietly(self, path: str) -> None:
        """Best effort: do not leave a temporary upload behind on a live connection."""
        transport = self.session.transport
        if transport is None or not transport.is_active():
            return
        with suppress(Exception):
            if self.server.protocol == "sftp":
                self._sftp.client().remove(sftp_path(path))
            else:
                self._run(f"rm -f -- {remote_arg(path)}")
