"""Reading partner CSV files in the job's dialect.

Reading fails the whole file (InputError naming the line) when its structure is broken:
undecodable bytes, an unterminated quote, a truncated last row, an absurdly long line.
Row-level problems are not decided here; the caller validates each row.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

from .config import CsvFormat
from .errors import InputError

# One physical line longer than this is not a CSV row of recipients but a broken file.
MAX_LINE_CHARS = 1 << 20

csv.field_size_limit(MAX_LINE_CHARS)


@dataclass
class CsvRows:
    """The header of a file and an iterator over its data rows as (line number, cells)."""

    header: list[str]
    rows: Iterator[tuple[int, list[str]]]


def _text_encoding(encoding: str) -> str:
    # utf-8 files from spreadsheet programs often start with a BOM: accept it.
    return "utf-8-sig" if encoding.replace("_", "-").lower() in ("utf-8", "utf8") else encoding


@contextmanager
def read_csv(path: Path, fmt: CsvFormat, *, label: str | None = None) -> Iterator[CsvRows]:
    """Open `path` (gunzipped when it ends in .gz) and yield its header and rows."""
    name = label or path.name
    binary: IO[bytes] = (
        gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")  # noqa: SIM115
    )
    try:
        last: list[str] = [""]  # the latest physical line, for the truncation check
        lines = _lines(binary, fmt.encoding, name, last)
        reader = csv.reader(lines, delimiter=fmt.delimiter, quotechar=fmt.quotechar, strict=True)
        header = _header(reader, name)
        if header is None:
            raise InputError(f"{name}: the file is empty (no header line)")
        yield CsvRows(header, _data_rows(reader, name, len(header), last))
    finally:
        binary.close()


def _lines(binary: IO[bytes], encoding: str, name: str, last: list[str]) -> Iterator[str]:
    codec = _text_encoding(encoding)
    if _ascii_compatible(codec):
        decode = codecs.getincrementaldecoder(codec)("strict").decode
        return _decoded_lines(binary, decode, name, encoding, last)
    # UTF-16 and friends cannot be split into lines as bytes; let io find the lines (an
    # undecodable byte is then reported at the line being read, which may be a little early).
    text = io.TextIOWrapper(binary, encoding=codec, newline="")
    return _text_lines(text.readline, name, encoding, last)


def _ascii_compatible(codec: str) -> bool:
    """Whether line ends and CSV punctuation are single ASCII bytes in this encoding."""
    probe = '\n,;"|\t'
    try:
        encoded = codecs.getincrementalencoder(codec)().encode(probe)
    except (UnicodeError, LookupError):
        return False
    # utf-8-sig puts its BOM in front; what matters is that the characters are bytes.
    return encoded.removeprefix(codecs.BOM_UTF8) == probe.encode("ascii")


def _decoded_lines(
    binary: IO[bytes], decode: Callable[..., str], name: str, encoding: str, last: list[str]
) -> Iterator[str]:
    """Byte lines decoded one by one, so that a decoding error names its exact line.

    (io.TextIOWrapper decodes 8 KiB ahead of the line being parsed: its errors point dozens
    of lines too early.) The incremental decoder carries a BOM and multi-byte state across
    lines. This is the hot loop of a million-row file: locals only, no method per line.
    """
    number = 0
    for raw in iter(partial(binary.readline, MAX_LINE_CHARS), b""):
        number += 1
        try:
            line = decode(raw)
        except UnicodeDecodeError as exc:
            raise _undecodable(name, number, encoding, exc) from None
        if len(raw) >= MAX_LINE_CHARS and raw[-1:] != b"\n":
            raise _too_long(name, number)
        last[0] = line
        yield line
    try:
        decode(b"", True)  # a multi-byte sequence cut off at the very end
    except UnicodeDecodeError as exc:
        raise _undecodable(name, max(number, 1), encoding, exc) from None


def _text_lines(
    readline: Callable[[int], str], name: str, encoding: str, last: list[str]
) -> Iterator[str]:
    number = 0
    while True:
        try:
            line = readline(MAX_LINE_CHARS)
        except UnicodeDecodeError as exc:
            raise _undecodable(name, number + 1, encoding, exc) from None
        if not line:
            return
        number += 1
        if len(line) >= MAX_LINE_CHARS and not line.endswith("\n"):
            raise _too_long(name, number)
        last[0] = line
        yield line


def _undecodable(name: str, line: int, encoding: str, exc: UnicodeDecodeError) -> InputError:
    byte = bytes(exc.object[exc.start : exc.start + 1]).hex()
    return InputError(
        f"{name}: line {line}: cannot decode as {encoding} (byte 0x{byte}); "
        "set the job's format.encoding (e.g. latin-1, cp1252)"
    )


def _too_long(name: str, line: int) -> InputError:
    return InputError(
        f"{name}: line {line} is longer than {MAX_LINE_CHARS:,} characters; "
        "this is not a recipient file (check the delimiter and line endings)"
    )


def _broken(name: str, start: int, exc: Exception) -> InputError:
    """The csv and gzip modules' errors as an InputError naming the line."""
    if isinstance(exc, csv.Error):
        return InputError(
            f"{name}: line {start}: broken CSV structure ({exc}); check quoting, the "
            "delimiter, or whether the file was cut off"
        )
    return InputError(f"{name}: the gzip data is broken or cut off ({exc})")


_BROKEN = (csv.Error, EOFError, zlib.error, gzip.BadGzipFile)


def _header(reader: Any, name: str) -> list[str] | None:
    try:
        return next(reader, None)
    except _BROKEN as exc:
        raise _broken(name, 1, exc) from None


def _data_rows(
    reader: Any, name: str, width: int, last: list[str]
) -> Iterator[tuple[int, list[str]]]:
    line_num = reader.line_num
    while True:
        start = line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except _BROKEN as exc:
            raise _broken(name, start, exc) from None
        line_num = reader.line_num
        if not row or row == [""]:
            continue  # blank line
        if len(row) < width and not last[0].endswith("\n"):
            raise InputError(
                f"{name}: line {start}: the last row is incomplete ({len(row)} of "
                f"{width} fields, no line end); the file looks truncated"
            )
        yield start, row
