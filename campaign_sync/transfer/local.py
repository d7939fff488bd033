"""A `local` server: a folder on this machine, opened without ever following a link."""

from __future__ import annotations

import errno
import os
import posixpath
import re
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from ..config.model import ServerConfig
from ..core.private import inherited_mode, make_folders_like_parent
from ..errors import CampaignSyncError, SourceMissing, TransferError
from .base import (
    TEMP_PREFIX,
    Progress,
    RemoteFile,
    Transfer,
    archive_names,
    no_archive_name,
)


class LocalTransfer(Transfer):
    """A folder on this machine standing in for the partner's server.

    The partner can write in this folder, so any name in it may be one they planted: a
    symbolic link to a file of ours, of root's or of another partner. Every operation
    therefore starts from a descriptor of the root and opens one folder at a time relative to
    the one before (openat with O_NOFOLLOW | O_DIRECTORY), then acts on the last name relative
    to its folder's descriptor (openat, fstatat, renameat, unlinkat). A link anywhere on the
    path is refused, never followed, so no path resolves outside the root; `..` is resolved
    as text first and cannot climb above it. There is no window between a check and its
    use: what was checked is the descriptor then used, so a folder swapped for a link after
    we opened it changes nothing for us. Files we create there are new names opened with
    O_CREAT | O_EXCL | O_NOFOLLOW; a rename onto a name replaces the directory entry, so a
    link planted at the final name is replaced as a link, and its target is never opened.
    The root's own path is the operator's and may go through links.

    The folder is the partner's side, not campaign-sync's own: an upload is made readable
    as a new file would be (0666 less the umask), and a folder made here (the archive, a
    dated export folder, the root itself) gets the permissions of the folder it is made in,
    whatever the umask. It is then open to exactly those who could open its parent (a
    partner's group reads its archive), and never wider: the files moved into an archive
    were already readable where they came from.
    """

    def __init__(self, server: ServerConfig):
        assert server.path is not None
        self.server = server
        self.root = Path(server.path)

    def list_files(self, folder: str) -> list[RemoteFile]:
        # The folder is reached like any other (no link on the way); its entries are looked
        # at without following links, so a link planted there is neither listed nor read.
        parts = self._parts(folder, folder=True)
        shown = folder or "/"
        try:
            with self._folder(parts, "list", shown) as fd, os.scandir(fd) as entries:
                found = []
                for entry in entries:
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # removed while we looked
                    if stat.S_ISREG(info.st_mode):
                        found.append(RemoteFile(entry.name, info.st_size, int(info.st_mtime)))
                return found
        except SourceMissing:
            raise SourceMissing(f"no folder {shown} on server '{self.server.name}'") from None
        except OSError as exc:
            raise self._failure("list", shown, _problem(exc)) from None

    def size(self, path: str) -> int | None:
        parts = self._parts(path)
        try:
            with self._folder(parts[:-1], "read", path) as folder:
                try:
                    info = os.stat(parts[-1], dir_fd=folder, follow_symlinks=False)
                except FileNotFoundError:
                    return None
                self._check_file(info.st_mode, "read", path)
                return info.st_size
        except SourceMissing:
            return None
        except OSError as exc:
            raise self._failure("read", path, _problem(exc)) from None

    def fetch(self, path: str, dest: Path, progress: Progress | None = None) -> int:
        parts = self._parts(path)
        try:
            with self._folder(parts[:-1], "fetch", path) as folder:
                try:
                    fd = os.open(parts[-1], _READ, dir_fd=folder)
                except OSError as exc:
                    raise self._refusal(exc, folder, parts[-1], None, "fetch", path) from None
            with open(fd, "rb") as reader:
                info = os.fstat(fd)
                self._check_file(info.st_mode, "fetch", path)
                with open(dest, "wb") as writer:
                    copied = _copy_stream(reader, writer, info.st_size, progress)
        except OSError as exc:
            raise self._failure("fetch", path, _problem(exc)) from None
        if copied != info.st_size:
            raise TransferError(
                f"{path} on server '{self.server.name}' changed size while being read "
                f"({copied} of {info.st_size} bytes); is it still being uploaded?"
            )
        return copied

    def put(
        self, src: Path, path: str, *, atomic: bool = True, progress: Progress | None = None
    ) -> None:
        parts = self._parts(path)
        name = parts[-1]
        try:
            with self._folder(parts[:-1], "upload", path, create=True) as folder:
                _remove_stale_temps(folder, name)
                if atomic:
                    temp = f"{TEMP_PREFIX}{name}.{secrets.token_hex(8)}.part"
                    _write_new(folder, temp, src, progress)
                    try:
                        os.rename(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
                    except BaseException:
                        _unlink_quietly(folder, temp)
                        raise
                else:
                    # Not written in place: the name's old file (or a link planted there)
                    # goes, and a new one is created exclusively, so no inode someone else
                    # chose is ever written to.
                    with suppress(FileNotFoundError):
                        os.unlink(name, dir_fd=folder)
                    _write_new(folder, name, src, progress)
                # The rename (or the new name) survives a power cut; best effort, as some
                # file systems refuse fsync on a folder and the file is in place already.
                with suppress(OSError):
                    os.fsync(folder)
        except SourceMissing:  # a folder we just made was removed under us
            raise self._failure("upload", path, "its folder was removed meanwhile") from None
        except OSError as exc:
            raise self._failure("upload", path, _problem(exc)) from None

    def delete(self, path: str) -> None:
        parts = self._parts(path)
        try:
            with self._folder(parts[:-1], "delete", path) as folder:
                os.unlink(parts[-1], dir_fd=folder)  # removes a link itself, never its target
        except OSError as exc:
            raise self._failure("delete", path, _problem(exc)) from None

    def archive(self, path: str, archive_dir: str) -> str:
        parts = self._parts(path)
        names = archive_names(path, archive_dir)
        into = self._parts(posixpath.dirname(names[0]), folder=True)
        try:
            with (
                self._folder(parts[:-1], "archive", path) as source,
                self._folder(into, "archive", path, create=True) as folder,
            ):
                for new_path in names:
                    if _move(source, parts[-1], folder, posixpath.basename(new_path)):
                        return new_path
        except OSError as exc:
            raise self._failure("archive", path, _problem(exc)) from None
        raise TransferError(f"{no_archive_name(path, archive_dir)} on server '{self.server.name}'")

    # -- walking the root without following links ---------------------------------------

    def _parts(self, path: str, *, folder: bool = False) -> list[str]:
        """`path` as names below the root; `..` is resolved as text and stops at the root."""
        relative = posixpath.normpath("/" + path).lstrip("/")
        parts = [part for part in relative.split("/") if part]
        if not parts and not folder:
            raise TransferError(f"path '{path}' on server '{self.server.name}' names no file")
        return parts

    @contextmanager
    def _folder(
        self, parts: list[str], verb: str, path: str, *, create: bool = False
    ) -> Iterator[int]:
        """A descriptor of the folder `parts` below the root, reached through no link;
        missing folders are made with `create`. SourceMissing when one is missing."""
        fd = self._open_root(verb, path, create)
        try:
            for depth, name in enumerate(parts):
                made = create and _made_folder(fd, name)
                try:
                    child = os.open(name, _FOLDER, dir_fd=fd)
                except OSError as exc:
                    shown = "/" + "/".join(parts[: depth + 1])
                    raise self._refusal(exc, fd, name, shown, verb, path) from None
                if made:  # as open as the folder it is in, whatever the umask
                    os.fchmod(child, inherited_mode(os.fstat(fd)))
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    def _open_root(self, verb: str, path: str, create: bool) -> int:
        try:
            if create:
                make_folders_like_parent(self.root)
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise SourceMissing(f"no file {path} on server '{self.server.name}'") from None
        except OSError as exc:
            problem = f"its folder {self.root}: {exc.strerror or exc}"
            raise self._failure(verb, path, problem) from None

    def _refusal(
        self, exc: OSError, folder: int, name: str, shown: str | None, verb: str, path: str
    ) -> CampaignSyncError:
        """The error for `name` in `folder` (`shown` as a server path; None: the file itself)."""
        if exc.errno == errno.ENOENT:
            return SourceMissing(f"no file {path} on server '{self.server.name}'")
        try:
            mode = os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode
        except OSError:
            mode = None
        what = shown or "it"
        if mode is not None and stat.S_ISLNK(mode):
            return self._failure(verb, path, _link(what))
        if exc.errno == errno.ENOTDIR:
            return self._failure(verb, path, f"{what} is not a folder")
        return self._failure(verb, path, _problem(exc))

    def _check_file(self, mode: int, verb: str, path: str) -> None:
        if stat.S_ISLNK(mode):
            raise self._failure(verb, path, _link("it"))
        if stat.S_ISDIR(mode):
            raise self._failure(verb, path, "it is a directory, not a file")
        if not stat.S_ISREG(mode):
            raise self._failure(verb, path, "it is not a regular file")

    def _failure(self, verb: str, path: str, problem: str) -> TransferError:
        return TransferError(f"cannot {verb} {path} on server '{self.server.name}': {problem}")


# Opening a folder below a local root: never through a link, and it must be a folder.
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Reading a partner's file: not through a link; O_NONBLOCK so a FIFO planted there cannot
# hang the run before fstat shows it is no regular file (it changes nothing for files).
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# Every file we create there: a new name, made by us, never a link; private until complete.
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _made_folder(folder: int, name: str) -> bool:
    """Make folder `name` in `folder` (0700 until the caller sets its mode); False when the
    name exists already."""
    try:
        os.mkdir(name, 0o700, dir_fd=folder)
    except FileExistsError:
        return False
    return True


def _link(what: str) -> str:
    return (
        f"{what} is a symbolic link, and links are never followed on a local server "
        "(they could lead out of its folder); put the real file or folder there"
    )


def _problem(exc: OSError) -> str:
    """What went wrong, without the descriptor-relative name Python would put in it."""
    if exc.errno == errno.EISDIR:
        return "it is a directory; the path must name a file"
    if exc.errno == errno.ENOENT:
        return "there is no such file"
    return exc.strerror or str(exc)


def _write_new(folder: int, name: str, src: Path, progress: Progress | None) -> None:
    """Create `name` in `folder` exclusively (0600 while written) and copy `src` into it."""
    fd = os.open(name, _CREATE, 0o600, dir_fd=folder)
    try:
        with open(fd, "wb") as writer, open(src, "rb") as reader:
            _copy_stream(reader, writer, os.fstat(reader.fileno()).st_size, progress)
            writer.flush()
            os.fchmod(writer.fileno(), _published_mode())  # the partner must read it
            os.fsync(writer.fileno())
    except BaseException:
        _unlink_quietly(folder, name)
        raise


def _published_mode() -> int:
    """The mode a plain new file would get (0666 less the umask), as uploads had before.

    The umask can only be read by setting it; the stricter value in between can only make
    a file another thread creates meanwhile more private, never less.
    """
    mask = os.umask(0o077)
    os.umask(mask)
    return 0o666 & ~mask


def _remove_stale_temps(folder: int, name: str) -> None:
    """Remove temporary uploads of `name` that killed runs left (our prefix, random part).

    Unlinking removes a name, never what a link points to, so a name planted here is harmless.
    """
    pattern = re.compile(re.escape(f"{TEMP_PREFIX}{name}") + r"(\.[0-9a-f]{16})?\.part")
    for entry in os.listdir(folder):
        if pattern.fullmatch(entry):
            _unlink_quietly(folder, entry)


def _unlink_quietly(folder: int, name: str) -> None:
    with suppress(OSError):
        os.unlink(name, dir_fd=folder)


def _move(source: int, name: str, folder: int, target: str) -> bool:
    """Move `name` to `target` unless that name is taken (False then).

    Between the look and the rename only someone who can write the archive folder (the
    partner) could create `target`; the rename would then replace their entry, a link as a
    link, never anything outside the root.
    """
    try:
        os.stat(target, dir_fd=folder, follow_symlinks=False)
        return False
    except FileNotFoundError:
        pass
    try:
        os.rename(name, target, src_dir_fd=source, dst_dir_fd=folder)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        return _copy_across(source, name, folder, target)
    return True


def _copy_across(source: int, name: str, folder: int, target: str) -> bool:
    """`_move` to another file system: an exclusive copy, then the original goes."""
    with open(os.open(name, _READ, dir_fd=source), "rb") as reader:
        info = os.fstat(reader.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "it is not a regular file")
        try:
            fd = os.open(target, _CREATE, 0o600, dir_fd=folder)
        except FileExistsError:
            return False
        try:
            with open(fd, "wb") as writer:
                _copy_stream(reader, writer, info.st_size, None)
                os.fchmod(writer.fileno(), stat.S_IMODE(info.st_mode))
                os.fsync(writer.fileno())
        except BaseException:
            _unlink_quietly(folder, target)
            raise
    os.unlink(name, dir_fd=source)
    return True


def _copy_stream(
    reader: BinaryIO, writer: BinaryIO, total: int | None, progress: Progress | None
) -> int:
    done = 0
    while chunk := reader.read(1 << 20):
        writer.write(chunk)
        done += len(chunk)
        if progress:
            progress(done, total)
    return done
