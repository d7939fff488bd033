"""Owner-only folders and files, whatever the umask and whichever of them is made first.

campaign-sync's own files (the SQLite store and its -wal/-shm, the log file, staging and
rejects files, locks) hold partner data, addresses or both. Each is created owner-only:
folders 0700, files 0600. The umask is no help here: cron's is usually 022, which would make
a folder 0755 and a file 0644, and a folder made on the way to another one (the log file's
folder inside a new `work_dir`, the store's) must not be left that way either. So every
missing level is made here, and its mode set on the descriptor of what was made (never
through a name that could have been swapped for a link meanwhile).

A folder or file that exists already is left as it is: it is the operator's, or made by an
earlier run (when it is ours, it is already private). New files are created exclusively
(O_CREAT | O_EXCL | O_NOFOLLOW): never through a name someone else planted.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import TextIO

FOLDER_MODE = 0o700
FILE_MODE = 0o600
# Opening what was just made, to set its mode: never a link put in its place.
_OPEN_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def missing_levels(folder: Path) -> list[Path]:
    """The levels of `folder` that do not exist yet, outermost first (a link, even a
    dangling one, exists: it is somebody's and is never made over)."""
    missing = []
    level = folder
    while not os.path.lexists(level) and level.parent != level:
        missing.append(level)
        level = level.parent
    return list(reversed(missing))


def make_private_folders(folder: Path) -> None:
    """Make `folder` and every missing folder above it, each 0700 (OSError if one cannot be
    made); levels that exist are left alone."""
    for level in missing_levels(folder):
        _make_folder(level, FOLDER_MODE)
    if not folder.is_dir():  # a file in the way: what `mkdir -p` says
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(folder))


def make_folders_like_parent(folder: Path) -> None:
    """Make `folder` and every missing folder above it, each with the permissions of the
    folder it is made in (a local server's folders: see transfer/local.py)."""
    for level in missing_levels(folder):
        _make_folder(level, None)


def _make_folder(level: Path, mode: int | None) -> None:
    """mkdir, then the mode set on what was made: `mode`, or (None) the parent's."""
    try:
        os.mkdir(level, FOLDER_MODE)
    except FileExistsError:
        return  # another process made it meanwhile: theirs to have made
    fd = os.open(level, _OPEN_FOLDER)
    try:
        os.fchmod(fd, mode if mode is not None else inherited_mode(os.stat(level.parent)))
    finally:
        os.close(fd)


def inherited_mode(parent: os.stat_result) -> int:
    """The permissions a new folder takes from its parent: the read, write and search bits,
    and set-group-ID (which the kernel already copied, and chmod must not clear)."""
    return stat.S_IMODE(parent.st_mode) & (0o777 | stat.S_ISGID)


def create_private_file(path: Path) -> bool:
    """Create `path` empty and 0600 if there is no such name yet; whether it was made.

    Its folder must exist. A name that exists (a file, or a link) is left alone: the caller
    opens what is there, as the operator set it up."""
    try:
        fd = os.open(path, _CREATE_FILE, FILE_MODE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, FILE_MODE)  # a umask such as 0277 would have taken the owner's write
    finally:
        os.close(fd)
    return True


def open_private_log(path: Path) -> TextIO:
    """`path` opened for appending text: made 0600 (and its missing folders 0700) when new,
    and never written through a symbolic link, which someone who can write its folder could
    have put there to point our writes elsewhere."""
    make_private_folders(path.parent)
    create_private_file(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(
                errno.ELOOP, "it is a symbolic link, and the log is never written through one"
            ) from None
        raise
    return open(fd, "a", encoding="utf-8")  # noqa: SIM115 - the log handler owns it
