"""Moving files to and from a server: one small interface, a `local` folder and `ssh`.

Import and export jobs talk only to `Transfer`; they never know which kind of server it is.
Remote paths are POSIX paths as written in the config (``/import/x.csv``). Local names are
always chosen by us: a name the server sends back never picks a local path.
"""

from __future__ import annotations

import os
import posixpath
import shutil
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from .config import ServerConfig
from .errors import SourceMissing, TransferError

# Called with (bytes done, bytes total or None) while a file moves.
Progress = Callable[[int, "int | None"], None]

TEMP_PREFIX = ".campaign-sync-"


def temp_name(final_path: str) -> str:
    """The name an upload gets until it is complete: hidden, beside the final name.

    Fixed per target (no pid): an upload killed half-way leaves a file that the next upload
    of the same target overwrites, instead of one that stays forever. Runs of one job never
    overlap (the job lock), so two uploads never share it.
    """
    head, tail = posixpath.split(final_path)
    return posixpath.join(head, f"{TEMP_PREFIX}{tail}.part")


class Transfer:
    """One connection to one server. Use as a context manager; every path closes it."""

    server: ServerConfig

    def size(self, path: str) -> int | None:
        """The size of a remote file, or None if there is none."""
        raise NotImplementedError

    def fetch(self, path: str, dest: Path, progress: Progress | None = None) -> int:
        """Copy the remote file into `dest` (an existing private file we created).

        Returns the number of bytes written; raises SourceMissing when there is no such
        file and TransferError when the copy is incomplete.
        """
        raise NotImplementedError

    def put(
        self, src: Path, path: str, *, atomic: bool = True, progress: Progress | None = None
    ) -> None:
        """Upload `src` to `path`; with `atomic`, under a temporary name renamed into place."""
        raise NotImplementedError

    def delete(self, path: str) -> None:
        raise NotImplementedError

    def archive(self, path: str, archive_dir: str) -> str:
        """Move a remote file into `archive_dir`; returns its new path."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the connection; safe to call twice."""

    def __enter__(self) -> Transfer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LocalTransfer(Transfer):
    """A folder on this machine standing in for the partner's server."""

    def __init__(self, server: ServerConfig):
        assert server.path is not None
        self.server = server
        self.root = Path(server.path)

    def _local(self, path: str) -> Path:
        relative = posixpath.normpath("/" + path).lstrip("/")
        if relative.startswith("..") or relative in ("", "."):
            raise TransferError(f"path '{path}' is outside server '{self.server.name}'")
        return self.root / relative

    def size(self, path: str) -> int | None:
        try:
            return self._local(path).stat().st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TransferError(f"cannot read {path} on '{self.server.name}': {exc}") from None

    def fetch(self, path: str, dest: Path, progress: Progress | None = None) -> int:
        source = self._local(path)
        try:
            with open(source, "rb") as reader, open(dest, "wb") as writer:
                expected = os.fstat(reader.fileno()).st_size
                copied = _copy_stream(reader, writer, expected, progress)
        except FileNotFoundError:
            raise SourceMissing(f"no file {path} on server '{self.server.name}'") from None
        except OSError as exc:
            raise TransferError(f"cannot fetch {path} from '{self.server.name}': {exc}") from None
        if copied != expected:
            raise TransferError(
                f"{path} on '{self.server.name}' changed size while being read "
                f"({copied} of {expected} bytes); is it still being uploaded?"
            )
        return copied

    def put(
        self, src: Path, path: str, *, atomic: bool = True, progress: Progress | None = None
    ) -> None:
        final = self._local(path)
        staging = self._local(temp_name(path)) if atomic else final
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with open(src, "rb") as reader, open(staging, "wb") as writer:
                _copy_stream(reader, writer, os.fstat(reader.fileno()).st_size, progress)
                writer.flush()
                os.fsync(writer.fileno())
            if atomic:
                os.replace(staging, final)
        except OSError as exc:
            if atomic:
                staging.unlink(missing_ok=True)
            raise TransferError(f"cannot upload {path} to '{self.server.name}': {exc}") from None

    def delete(self, path: str) -> None:
        try:
            self._local(path).unlink()
        except OSError as exc:
            raise TransferError(f"cannot delete {path} on '{self.server.name}': {exc}") from None

    def archive(self, path: str, archive_dir: str) -> str:
        new_path = posixpath.join(archive_dir, posixpath.basename(path))
        target = self._local(new_path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(self._local(path), target)
        except OSError as exc:
            raise TransferError(
                f"cannot archive {path} to {archive_dir} on '{self.server.name}': {exc}"
            ) from None
        return new_path


def _copy_stream(reader, writer, total: int | None, progress: Progress | None) -> int:  # type: ignore[no-untyped-def]
    done = 0
    while chunk := reader.read(1 << 20):
        writer.write(chunk)
        done += len(chunk)
        if progress:
            progress(done, total)
    return done


def open_transfer(server: ServerConfig) -> Transfer:
    """A connected Transfer for `server`; ssh support is imported only when needed."""
    if server.type == "local":
        return LocalTransfer(server)
    from .ssh import SshTransfer  # paramiko is heavy: load it only for ssh servers

    return SshTransfer(server)
