"""How a partner file is packed around its CSV: what its name says, and reading a zip member.

A name's last suffixes say it, outermost last: `list.csv.gz`, `list.zip`, `list.csv.pgp`,
`list.csv.zip.gpg`. OpenPGP (`.pgp`, `.gpg`, `.asc`) is undone first, by csvio/pgp.py into a
private staging file; gzip and zip are undone while the rows are read, as a stream.

A zip member is never extracted: it is read through zipfile's inflating stream, so no name
from the archive ever reaches the file system. An archive that names a member with `..` or
an absolute path is refused all the same: no partner's export tool writes one, and the run
says what it found instead of quietly reading a file that someone built to climb folders.

Bounds (a zip bomb is a small file that inflates to something huge; each check fails the run
with one line, before any row is merged):

* a member may inflate to at most MAX_UNZIPPED_BYTES;
* past RATIO_FLOOR_BYTES it may inflate to at most MAX_RATIO times its compressed size (CSV
  deflates 3 to 15 times; a bomb of repeated bytes about 1000 times);
* both are checked against the sizes the archive declares, before reading, and again
  against the bytes actually inflated while reading, so a header that lies about them changes
  nothing.
"""

from __future__ import annotations

import io
from pathlib import Path, PurePosixPath
from typing import IO, Any

from ..config.model import ENCRYPTED_SUFFIXES
from ..errors import InputError

COMPRESSED = (".gz", ".zip")
ENCRYPTED = ENCRYPTED_SUFFIXES

MAX_UNZIPPED_BYTES = 8 << 30  # 8 GiB: some 100 million recipient rows of 80 bytes
MAX_RATIO = 100
RATIO_FLOOR_BYTES = 16 << 20  # a small file may compress as well as it likes

# Entries that are no file of the partner's: folders, and the resource forks macOS's
# archiver adds beside each file.
_NOT_FILES = ("__MACOSX/",)

# A readable stream of bytes: a file, a GzipFile, a zip member.
Stream = io.BufferedIOBase | IO[bytes]


def staging_suffix(name: str) -> str:
    """The suffix a staging copy of `name` keeps so that its readers know how to unpack it:
    `.csv` and then the name's own packing suffixes (`x.csv.zip.pgp` → `.csv.zip.pgp`)."""
    chain: list[str] = []
    for suffix in reversed(PurePosixPath(name).suffixes):
        if suffix.lower() not in COMPRESSED + ENCRYPTED:
            break
        chain.insert(0, suffix.lower())
    return ".csv" + "".join(chain)


def encrypted(name: str) -> bool:
    return name.lower().endswith(ENCRYPTED)


def without_encryption(name: str) -> str:
    """`name` without its OpenPGP suffix: what the decrypted file is."""
    return name[: -len(PurePosixPath(name).suffix)] if encrypted(name) else name


def zip_member_name(target: str) -> str:
    """The one member of an exported zip: the target's file name without `.zip` (and
    without an OpenPGP suffix outside it), `.csv` added when nothing else is left."""
    base = PurePosixPath(without_encryption(target)).name
    base = base[: -len(".zip")] if base.lower().endswith(".zip") else base
    return base if PurePosixPath(base).suffix else f"{base}.csv"


def open_binary(path: Path, name: str, member: str | None = None) -> Stream:
    """The CSV bytes of `path` as a stream: gunzipped for .gz, the member of a .zip."""
    lowered = path.name.lower()
    if lowered.endswith(".gz"):
        import gzip

        return gzip.open(path, "rb")
    if lowered.endswith(".zip"):
        return open_member(path, name, member)
    return open(path, "rb")


def open_member(path: Path, name: str, wanted: str | None) -> Stream:
    """The member `wanted` of the zip archive at `path` (its only file when None), bounded."""
    import zipfile

    raw = open(path, "rb")  # noqa: SIM115 - closed with the member stream
    try:
        try:
            archive = zipfile.ZipFile(raw)
        except (zipfile.BadZipFile, EOFError, ValueError, OSError):
            raise InputError(
                f"{name}: not a readable zip archive (broken or cut off); ask for the file again"
            ) from None
        info = _chosen(archive.infolist(), name, wanted)
        compressed = min(info.compress_size, path.stat().st_size)
        _check_declared(info, compressed, name)
        try:
            stream = archive.open(info)
        except NotImplementedError:
            raise InputError(
                f"{name}: member {info.filename!r} is compressed with a method campaign-sync "
                f"cannot read (zip method {info.compress_type}); ask for deflate"
            ) from None
        return _BoundedMember(stream, raw, compressed, name, info.filename)
    except BaseException:
        raw.close()
        raise


def _chosen(infos: list[Any], name: str, wanted: str | None) -> Any:
    unsafe = [info.filename for info in infos if _unsafe(info.filename)]
    if unsafe:
        raise InputError(
            f"{name}: the archive names a member {unsafe[0]!r}, a path out of its folder "
            "(.. or absolute); refused, nothing was read: ask the partner for a plain archive"
        )
    files = [i for i in infos if not i.is_dir() and not i.filename.startswith(_NOT_FILES)]
    if wanted is not None:
        exact = [info for info in files if info.filename == wanted]
        by_base = [info for info in files if PurePosixPath(info.filename).name == wanted]
        found = exact or (by_base if len(by_base) == 1 else [])
        if not found:
            raise InputError(
                f"{name}: the archive has no member {wanted!r} (source.member); it holds "
                f"{_listing(files)}"
            )
        info = found[0]
    elif len(files) != 1:
        if not files:
            raise InputError(f"{name}: the zip archive holds no file; ask for the file again")
        raise InputError(
            f"{name}: the archive holds {len(files)} files ({_listing(files)}); set the job's "
            "source.member to the one to import"
        )
    else:
        info = files[0]
    if info.flag_bits & 0x1:
        raise InputError(
            f"{name}: member {info.filename!r} is encrypted with a zip password, which "
            "campaign-sync does not read; ask for OpenPGP encryption (.pgp) instead"
        )
    return info


def _unsafe(member: str) -> bool:
    path = member.replace("\\", "/")
    drive = len(path) > 1 and path[1] == ":"
    return path.startswith("/") or drive or ".." in path.split("/")


def _listing(infos: list[Any]) -> str:
    names = [info.filename for info in infos[:10]]
    more = f", and {len(infos) - 10} more" if len(infos) > 10 else ""
    return (", ".join(repr(n) for n in names) + more) if names else "no file"


def _check_declared(info: Any, compressed: int, name: str) -> None:
    if info.file_size > MAX_UNZIPPED_BYTES:
        raise _too_big(name, info.filename, info.file_size, declared=True)
    if info.file_size > RATIO_FLOOR_BYTES and info.file_size > MAX_RATIO * max(compressed, 1):
        raise _too_dense(name, info.filename, info.file_size, compressed)


def _too_big(name: str, member: str, size: int, *, declared: bool) -> InputError:
    says = "says it inflates to" if declared else "inflated past"
    return InputError(
        f"{name}: member {member!r} {says} {size:,} bytes, more than the limit of "
        f"{MAX_UNZIPPED_BYTES:,} for a zipped file; refused as a possible zip bomb "
        "(send a file this large unzipped or gzipped)"
    )


def _too_dense(name: str, member: str, size: int, compressed: int) -> InputError:
    return InputError(
        f"{name}: member {member!r} inflates {compressed:,} compressed bytes to {size:,} or "
        f"more, over {MAX_RATIO} times; refused as a possible zip bomb (no CSV compresses "
        "that well)"
    )


class _BoundedMember(io.BufferedIOBase):
    """A zip member's inflated bytes that counts what it hands out and stops at the bounds;
    `fileobj` is the archive file, whose position a progress bar shows."""

    def __init__(self, stream: Any, raw: IO[bytes], compressed: int, name: str, member: str):
        super().__init__()
        self._stream = stream
        self.fileobj = raw
        self._compressed = compressed
        self._name = name
        self._member = member
        self.inflated = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read1(self, size: int | None = -1) -> bytes:
        return self.read(size)

    def read(self, size: int | None = -1) -> bytes:
        data: bytes = self._stream.read(-1 if size is None else size)
        self.inflated += len(data)
        if self.inflated > MAX_UNZIPPED_BYTES:
            raise _too_big(self._name, self._member, self.inflated, declared=False)
        if self.inflated > RATIO_FLOOR_BYTES and self.inflated > MAX_RATIO * max(
            self._compressed, 1
        ):
            raise _too_dense(self._name, self._member, self.inflated, self._compressed)
        return data

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self.fileobj.close()
            super().close()
