"""The work directory: private staging files, rejects files and locks live here.

Everything created here is readable by the owner only: partner data must not leak to
other users of the machine through a world-readable temp file.

Files are made by mkstemp (a random name, O_CREAT | O_EXCL | O_NOFOLLOW, 0600) and later
reopened by name (fetched into, read, written). That is safe only while nobody else can
plant or swap names on the way, so every folder level we use below `work_dir` must be a
real folder (no link) of our own with mode 0700, and `work_dir` itself must not be
writable by other users (unless sticky, where they cannot rename our folders). A level
that fails this is refused, never used.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import stat
import tempfile
from pathlib import Path
from typing import IO

from ..errors import CampaignSyncError
from .private import make_private_folders

REJECTS = "rejects"  # the folder of rejects files, in work_dir


def private_folder(work_dir: Path, name: str) -> Path:
    """`work_dir/name` (`locks`, …), checked and made as the docstring above says."""
    return _private_dir(work_dir, name)


def _private_dir(work_dir: Path, *names: str) -> Path:
    """`work_dir/names...`, each level checked (and made, 0700) as the docstring above says."""
    make_private_folders(work_dir)  # and any folder above it that is missing, 0700 too
    _check_unshared(work_dir)
    path = work_dir
    for name in names:
        path = path / name
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
        problem = _not_our_folder(path)
        if problem:
            raise CampaignSyncError(
                f"work_dir: {problem}; campaign-sync keeps private files only in folders of "
                "its own: remove it (it is recreated) or set `work_dir` to another folder"
            )
    return path


def _check_unshared(work_dir: Path) -> None:
    mode = work_dir.stat().st_mode  # the operator's path: a link to it is theirs to make
    if mode & (stat.S_IWGRP | stat.S_IWOTH) and not mode & stat.S_ISVTX:
        raise CampaignSyncError(
            f"work_dir: {work_dir} can be written by other users, who could swap the private "
            "files kept there; make it private (chmod 700) or set `work_dir` to another folder"
        )


def _not_our_folder(path: Path) -> str | None:
    """Why `path` is no private folder of ours (None: it is one, now 0700); OSError if absent."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return f"{path} is a symbolic link"
    if not stat.S_ISDIR(info.st_mode):
        return f"{path} is not a folder"
    if info.st_uid != os.geteuid():
        return f"{path} belongs to another user (uid {info.st_uid})"
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)  # ours, in a folder only we can write: nobody swapped it
    return None


def staging_file(work_dir: Path, job: str, suffix: str = "") -> Path:
    """A new, empty, 0600 file under a name we choose, never the final name of anything."""
    folder = _private_dir(work_dir, "staging", job)
    # ".part" before the real suffix: readers still see ".csv.gz" and gunzip it.
    fd, name = tempfile.mkstemp(prefix=f"{job}-", suffix=f".part{suffix}", dir=folder)
    os.close(fd)
    return Path(name)


def clear_staging(work_dir: Path, job: str) -> int:
    """Remove what killed runs of `job` left in staging; call it holding the job's lock.

    Only in a staging folder that passes the checks above (a planted link must never make
    us empty the folder it points to); staging_file() reports one that does not.
    """
    folder = work_dir / "staging" / job
    try:
        _check_unshared(work_dir)
        if _not_our_folder(folder.parent) or _not_our_folder(folder):
            return 0
    except (CampaignSyncError, OSError):
        return 0
    removed = 0
    for leftover in folder.iterdir():
        leftover.unlink(missing_ok=True)  # removes a name, never what a link points to
        removed += 1
    return removed


def rejects_file(work_dir: Path, job: str, run_id: int | None) -> Path:
    """A new 0600 file for a run's rejected rows; named by job, time and run."""
    folder = _private_dir(work_dir, REJECTS)
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    tag = f"run{run_id}" if run_id else "dry-run"
    fd, name = tempfile.mkstemp(prefix=f"{job}-{stamp}-{tag}-", suffix=".csv", dir=folder)
    os.close(fd)
    return Path(name)


def rejects_files(work_dir: Path) -> list[tuple[float, Path]]:
    """(last written, path) of every rejects file, oldest first; only reads (for `check`).

    Only regular files directly in the rejects folder count; none when that folder is
    missing, unreadable, or no folder (a link is not followed)."""
    folder = work_dir / REJECTS
    try:
        if not stat.S_ISDIR(folder.lstat().st_mode):
            return []
        with os.scandir(folder) as entries:
            found = [
                (info.st_mtime, Path(entry.path))
                for entry in entries
                if stat.S_ISREG((info := entry.stat(follow_symlinks=False)).st_mode)
            ]
    except OSError:  # no such folder, or none that can be read: `check` names the folder
        return []
    return sorted(found)


def remove_rejects(work_dir: Path, before: float, *, dry_run: bool) -> list[Path]:
    """Remove (with `dry_run`: only name) the rejects files last written before `before`
    (a POSIX time), oldest first.

    Only in a rejects folder that passes the checks above, like clear_staging: a link
    planted there must never make us delete what it points to (CampaignSyncError then)."""
    folder = work_dir / REJECTS
    if not os.path.lexists(folder):
        return []
    _check_unshared(work_dir)
    problem = _not_our_folder(folder)
    if problem:
        raise CampaignSyncError(
            f"work_dir: {problem}; its rejects files are not pruned: remove it (it is "
            "recreated) or set `work_dir` to another folder"
        )
    old = [path for written, path in rejects_files(work_dir) if written < before]
    if not dry_run:
        for path in old:
            path.unlink(missing_ok=True)  # removes a name, never what a link points to
    return old


def remove_quietly(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def private_files(work_dir: Path, folder: str) -> list[Path]:
    """The files in `work_dir/folder`, by name; none when it does not exist. A folder that is
    no private one of ours (a link, another user's) is refused, never read or written."""
    path = work_dir / folder
    if not os.path.lexists(path):
        return []
    _private_dir(work_dir, folder)  # raises for a folder that is not ours
    return sorted(path.iterdir())


def open_private(path: Path) -> IO[str] | None:
    """`path` opened for reading as UTF-8 text (bytes that are not kept as they are), if it
    is a regular file of ours; None for anything else (a link, a folder, another user's)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        os.close(fd)
        return None
    return open(fd, encoding="utf-8", errors="surrogateescape", newline="")  # noqa: SIM115


def replacement(path: Path) -> tuple[Path, IO[str]]:
    """A new 0600 file beside `path`, open for writing, to take its place (os.replace) once
    complete: readers see the old file or the new one, never half of it."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    return Path(name), open(fd, "w", encoding="utf-8", errors="surrogateescape", newline="")
