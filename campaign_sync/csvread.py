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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

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
        lines = _lines(binary, fmt.encoding, name)
        reader = csv.reader(lines, delimiter=fmt.delimiter, quotechar=fmt.quotechar, strict=True)
        header = _next_row(reader, lines, fmt)
        if header is None:
            raise InputError(f"{name}: the file is empty (no header line)")
        yield CsvRows(header, _data_rows(reader, lines, fmt, len(header)))
    finally:
        binary.close()


def _lines(binary: IO[bytes], encoding: str, name: str) -> _LineTracker:
    codec = _text_encoding(encoding)
    if _ascii_compatible(codec):
        return _DecodingLines(binary, codec, name)
    # UTF-16 and friends cannot be split into lines as bytes; let io find the lines (an
    # undecodable byte is then reported at the line being read, which may be a little early).
    return _LineTracker(io.TextIOWrapper(binary, encoding=codec, newline=""), name)


def _ascii_compatible(codec: str) -> bool:
    """Whether line ends and CSV punctuation are single ASCII bytes in this encoding."""
    probe = '\n,;"|\t'
    try:
        encoded = codecs.getincrementalencoder(codec)().encode(probe)
    except (UnicodeError, LookupError):
        return False
    # utf-8-sig puts its BOM in front; what matters is that the characters are bytes.
    return encoded.removeprefix(codecs.BOM_UTF8) == probe.encode("ascii")


class _LineTracker:
    """Feeds lines to csv.reader, bounding their length and remembering the last one."""

    def __init__(self, stream: IO[str], name: str):
        self.stream = stream
        self.name = name
        self.count = 0
        self.last_complete = True

    def __iter__(self) -> _LineTracker:
        return self

    def __next__(self) -> str:
        try:
            line = self.stream.readline(MAX_LINE_CHARS)
        except UnicodeDecodeError:
            self.count += 1
            raise
        if not line:
            raise StopIteration
        return self._counted(line, line.endswith("\n"))

    def _counted(self, line: str, complete: bool) -> str:
        self.count += 1
        self.last_complete = complete
        if len(line) >= MAX_LINE_CHARS and not complete:
            raise InputError(
                f"{self.name}: line {self.count} is longer than {MAX_LINE_CHARS:,} characters; "
                "this is not a recipient file (check the delimiter and line endings)"
            )
        return line


class _DecodingLines(_LineTracker):
    """Reads byte lines and decodes each one, so a decoding error names its exact line.

    (io.TextIOWrapper decodes 8 KiB chunks ahead of the line being parsed: its errors point
    dozens of lines too early.) The incremental decoder carries a BOM and any multi-byte
    state across lines.
    """

    def __init__(self, binary: IO[bytes], codec: str, name: str):
        super().__init__(io.StringIO(), name)
        self.binary = binary
        self.decode = codecs.getincrementaldecoder(codec)("strict").decode

    def __next__(self) -> str:
        raw = self.binary.readline(MAX_LINE_CHARS)
        if not raw:
            self.decode(b"", True)  # a multi-byte sequence cut off at the end raises here
            raise StopIteration
        complete = raw.endswith(b"\n")
        try:
            line = self.decode(raw)
        except UnicodeDecodeError:
            self.count += 1
            raise
        return self._counted(line, complete)


def _next_row(
    reader: Iterator[list[str]], tracker: _LineTracker, fmt: CsvFormat
) -> list[str] | None:
    start = tracker.count + 1
    try:
        return next(reader)
    except StopIteration:
        return None
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{tracker.name}: line {max(tracker.count, 1)}: cannot decode as {fmt.encoding} "
            f"(byte 0x{bytes(exc.object[exc.start : exc.start + 1]).hex()}); "
            "set the job's format.encoding "
            "(e.g. latin-1, cp1252)"
        ) from None
    except csv.Error as exc:
        raise InputError(
            f"{tracker.name}: line {start}: broken CSV structure ({exc}); check quoting, the "
            "delimiter, or whether the file was cut off"
        ) from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(f"{tracker.name}: the gzip data is broken or cut off ({exc})") from None


def _data_rows(
    reader: Iterator[list[str]], tracker: _LineTracker, fmt: CsvFormat, width: int
) -> Iterator[tuple[int, list[str]]]:
    while True:
        start = tracker.count + 1
        row = _next_row(reader, tracker, fmt)
        if row is None:
            return
        if not row or row == [""]:
            continue  # blank line
        if len(row) < width and not tracker.last_complete:
            raise InputError(
                f"{tracker.name}: line {start}: the last row is incomplete ({len(row)} of "
                f"{width} fields, no line end); the file looks truncated"
            )
        yield start, row
