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
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

from .config import ServerConfig
from .errors import SourceMissing, TransferError

# Called with (bytes done, bytes total or None) while a file moves.
Progress = Callable[[int, "int | None"], None]

TEMP_PREFIX = ".campaign-sync-"
# How many names archive() tries before giving up: the plain name, the timestamped one and
# numbered variants of that (only needed for several archives of one name in a second).
ARCHIVE_NAMES = 20
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip")


def temp_name(final_path: str) -> str:
    """The name an upload gets until it is complete: hidden, beside the final name.

    Fixed per target (no pid): an upload killed half-way leaves a file that the next upload
    of the same target overwrites, instead of one that stays forever. Runs of one job never
    overlap (the job lock), so two uploads never share it.
    """
    head, tail = posixpath.split(final_path)
    return posixpath.join(head, f"{TEMP_PREFIX}{tail}.part")


def archive_names(path: str, archive_dir: str, now: datetime | None = None) -> list[str]:
    """Where archive() may put `path`, in order: the first name that is free is used.

    An archived file is never replaced: `in.csv` goes to `archive_dir/in.csv`, or, when
    that exists, to `in.20261127T104500Z.csv` (UTC), then `in.20261127T104500Z-1.csv`...
    """
    name = posixpath.basename(path)
    stem, ext = posixpath.splitext(name)
    if ext in _COMPRESSED:  # keep `x.csv.gz` together: `x.<stamp>.csv.gz`
        stem, inner = posixpath.splitext(stem)
        ext = inner + ext
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    names = [name, f"{stem}.{stamp}{ext}"]
    names += [f"{stem}.{stamp}-{n}{ext}" for n in range(1, ARCHIVE_NAMES - 1)]
    return [posixpath.join(archive_dir, n) for n in names]


def no_archive_name(path: str, archive_dir: str) -> str:
    return f"cannot archive {path}: {ARCHIVE_NAMES} files of that name are already in {archive_dir}"


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
        """Move a remote file into `archive_dir`; returns its new path.

        A file already there is never replaced: the first free name of archive_names().
        """
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
        source = self._local(path)
        names = archive_names(path, archive_dir)
        try:
            self._local(names[0]).parent.mkdir(parents=True, exist_ok=True)
            for new_path in names:
                target = self._local(new_path)
                if not os.path.lexists(target):
                    shutil.move(source, target)
                    return new_path
        except OSError as exc:
            raise TransferError(
                f"cannot archive {path} to {archive_dir} on '{self.server.name}': {exc}"
            ) from None
        raise TransferError(f"{no_archive_name(path, archive_dir)} on '{self.server.name}'")


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
