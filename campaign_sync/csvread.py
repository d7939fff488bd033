"""Reading partner CSV files in the job's dialect.

Reading fails the whole file (InputError naming the line) when its structure is broken:
undecodable bytes, an unterminated quote, a truncated last row, an absurdly long line.
Row-level problems are not decided here; the caller validates each row.
"""

from __future__ import annotations

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
    stream = io.TextIOWrapper(binary, encoding=_text_encoding(fmt.encoding), newline="")
    try:
        tracker = _LineTracker(stream, name)
        reader = csv.reader(tracker, delimiter=fmt.delimiter, quotechar=fmt.quotechar, strict=True)
        header = _next_row(reader, tracker, fmt)
        if header is None:
            raise InputError(f"{name}: the file is empty (no header line)")
        yield CsvRows(header, _data_rows(reader, tracker, fmt, len(header)))
    finally:
        stream.close()


class _LineTracker:
    """Feeds lines to csv.reader, bounding their length and remembering the last one."""

    def __init__(self, stream: io.TextIOWrapper, name: str):
        self.stream = stream
        self.name = name
        self.count = 0
        self.last_complete = True

    def __iter__(self) -> _LineTracker:
        return self

    def __next__(self) -> str:
        line = self.stream.readline(MAX_LINE_CHARS)
        if not line:
            raise StopIteration
        self.count += 1
        self.last_complete = line.endswith("\n")
        if len(line) >= MAX_LINE_CHARS and not self.last_complete:
            raise InputError(
                f"{self.name}: line {self.count} is longer than {MAX_LINE_CHARS:,} characters; "
                "this is not a recipient file (check the delimiter and line endings)"
            )
        return line


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
            f"{tracker.name}: line {tracker.count + 1}: cannot decode as {fmt.encoding} "
            f"(byte 0x{exc.object[exc.start]:02x}); set the job's format.encoding "
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
