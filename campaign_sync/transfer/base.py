"""The transfer interface every kind of server implements, and the names it shares:
temporary upload names and archive names.

Remote paths are POSIX paths as written in the config (``/import/x.csv``). Local names are
always chosen by us: a name the server sends back never picks a local path.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

from ..config.model import ServerConfig

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


@dataclass(frozen=True)
class RemoteFile:
    """A regular file a folder listing found."""

    name: str  # its name in the folder, never a path
    size: int
    # Whole seconds since the epoch: all an SFTP (version 3) server reports, so every kind
    # of server orders files alike.
    mtime: int


def plain_name(name: str) -> bool:
    """Whether a name a server listed is one entry of the folder: no path, nothing odd.

    A hostile server could answer a listing with `../x` or `a/b`; such a name is passed over
    (it is only ever used to build the remote path fetched, never a local one).
    """
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


class Transfer:
    """One connection to one server. Use as a context manager; every path closes it."""

    server: ServerConfig

    def list_files(self, folder: str) -> list[RemoteFile]:
        """The regular files directly in `folder` (`""`: the login or root folder), in no
        particular order: no folders, no symbolic links, nothing else. SourceMissing when
        there is no such folder."""
        raise NotImplementedError

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
