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
import operator
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain, islice, repeat
from pathlib import Path
from typing import IO, Any

from .config import CsvFormat
from .errors import InputError

# One physical line longer than this is not a CSV row of recipients but a broken file.
MAX_LINE_CHARS = 1 << 20

csv.field_size_limit(MAX_LINE_CHARS)


# Bytes read at a time. Lines are cut at the last line end of each read and decoded a block
# at a time (one C call instead of one Python step per line).
BLOCK_BYTES = 1 << 18
# Rows handed to the caller at a time by CsvRows.batches().
BATCH_ROWS = 2048


@dataclass
class RowBatch:
    """Consecutive data rows and where they start: `first` + i for row i when `numbers` is
    None (every row one physical line), else numbers[i].

    `uniform` is set when every row has exactly the header's number of fields and none is
    blank; otherwise blank rows are already left out and the caller checks each row's width.
    """

    rows: list[list[str]]
    first: int
    numbers: list[int] | None
    uniform: bool

    def line(self, index: int) -> int:
        return self.numbers[index] if self.numbers is not None else self.first + index


class CsvRows:
    """The header of a file and its data rows, as (line number, cells) or in batches.

    Use one of `rows` and `batches()`: both read the same underlying reader.
    """

    def __init__(self, header: list[str], reader: Any, source: _Source, name: str) -> None:
        self.header = header
        self._reader = reader
        self._source = source
        self._name = name
        self.rows: Iterator[tuple[int, list[str]]] = self._numbered()

    def _numbered(self) -> Iterator[tuple[int, list[str]]]:
        for batch in self.batches():
            for index, row in enumerate(batch.rows):
                yield batch.line(index), row

    def batches(self, size: int = BATCH_ROWS) -> Iterator[RowBatch]:
        """The data rows, `size` at a time (the last batch may be shorter)."""
        reader, width = self._reader, len(self.header)
        while True:
            begin = reader.line_num
            rows: list[list[str]] = []
            try:
                rows.extend(islice(reader, size))  # keeps the rows read before an error
            except _BROKEN as exc:
                raise _broken(self._name, begin + _physical_lines(rows) + 1, exc) from None
            except InputError:
                # Line by line, the rows before the failing line were checked first: a
                # truncated last row is reported before a broken byte after it.
                if rows:
                    self._careful(rows, begin, reader.line_num, width)
                raise
            if not rows:
                return
            end = reader.line_num
            if end - begin == len(rows) and _all_width(rows, width):
                yield RowBatch(rows, begin + 1, None, True)
            else:
                yield self._careful(rows, begin, end, width)

    def _careful(self, rows: list[list[str]], begin: int, end: int, width: int) -> RowBatch:
        """A batch with blank rows, short or long rows, or rows spanning several lines."""
        kept: list[list[str]] = []
        numbers: list[int] = []
        line = begin + 1
        for row in rows:
            if row and row != [""]:  # else a blank line
                kept.append(row)
                numbers.append(line)
            line += _physical_lines((row,))
        last = rows[-1]
        if kept and kept[-1] is last and len(last) < width and end == self._source.unterminated:
            raise InputError(
                f"{self._name}: line {numbers[-1]}: the last row is incomplete ({len(last)} of "
                f"{width} fields, no line end); the file looks truncated"
            )
        uniform = _all_width(kept, width)
        return RowBatch(kept, begin + 1, numbers, uniform)


def _all_width(rows: list[list[str]], width: int) -> bool:
    """Whether every row has `width` fields (a blank row has 0, or 1 empty field)."""
    if not rows:
        return True
    lengths = set(map(len, rows))
    return lengths == {width} and (width != 1 or rows.count([""]) == 0)


def _physical_lines(rows: Iterable[list[str]]) -> int:
    """How many physical lines these parsed rows took: one each, plus the line ends inside
    their quoted fields (the only place a line end survives parsing)."""
    return sum(1 + sum(cell.count("\n") for cell in row) for row in rows)


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
        source = _Source(binary, fmt.encoding, name)
        reader = csv.reader(
            source.lines(), delimiter=fmt.delimiter, quotechar=fmt.quotechar, strict=True
        )
        header = _header(reader, name)
        if header is None:
            raise InputError(f"{name}: the file is empty (no header line)")
        yield CsvRows(header, reader, source, name)
    finally:
        binary.close()


class _Source:
    """The physical lines of a file, decoded, each with its line end.

    `unterminated` is the number of the last line if it has no line end (set once read).
    """

    def __init__(self, binary: IO[bytes], encoding: str, name: str) -> None:
        self.binary = binary
        self.encoding = encoding
        self.name = name
        self.codec = _text_encoding(encoding)
        self.count = 0  # lines handed out so far
        self.unterminated: int | None = None

    def lines(self) -> Iterator[str]:
        if _ascii_compatible(self.codec):
            return chain.from_iterable(self._blocks())
        # UTF-16 and friends cannot be split into lines as bytes; let io find the lines (an
        # undecodable byte is then reported at the line being read, which may be a little
        # early). Only LF ends a line, as on the byte path: a CR inside a quoted cell must
        # not count as a line of its own (line numbers are counted by LFs).
        text = io.TextIOWrapper(self.binary, encoding=self.codec, newline="\n")
        return self._text_lines(text.readline)

    def _blocks(self) -> Iterator[list[str]]:
        """Lists of lines, a block of bytes at a time.

        A block is cut after its last line end, so no character is split, and decoded at
        once; only when that fails is the failing line located (the lines before it are
        still handed out first, so an earlier broken row is reported first, as it would be
        line by line). A block that may hold an overlong line is read line by line.
        """
        decoder = codecs.getincrementaldecoder(self.codec)("strict")
        read, carry = self.binary.read, b""
        while chunk := read(BLOCK_BYTES):
            buffer = carry + chunk if carry else chunk
            cut = buffer.rfind(b"\n") + 1
            if cut == 0:  # no line end yet
                if len(buffer) >= MAX_LINE_CHARS:
                    yield from self._line_by_line(buffer, decoder.decode)
                carry = buffer
                continue
            carry = buffer[cut:]
            if cut > MAX_LINE_CHARS:
                yield from self._line_by_line(buffer[:cut], decoder.decode)
            else:
                yield from self._decoded(buffer[:cut], decoder.decode)
        if carry:
            self.unterminated = self.count + 1  # before the reader can see that line
            yield from self._line_by_line(carry, decoder.decode)
        try:
            decoder.decode(b"", True)  # a multi-byte sequence cut off at the very end
        except UnicodeDecodeError as exc:
            raise _undecodable(self.name, max(self.count, 1), self.encoding, exc) from None

    def _decoded(self, block: bytes, decode: Callable[..., str]) -> Iterator[list[str]]:
        try:
            text = decode(block)
        except UnicodeDecodeError as exc:
            # Hand out the good lines before the bad one, then fail at the bad one. The
            # decoder saw exc.object (a BOM already stripped): decode that part alike.
            good = exc.object[: exc.object.rfind(b"\n", 0, exc.start) + 1]
            lines = _split(good.decode("utf-8" if self.codec == "utf-8-sig" else self.codec))
            self.count += len(lines)
            yield lines
            raise _undecodable(self.name, self.count + 1, self.encoding, exc) from None
        lines = _split(text)
        self.count += len(lines)
        yield lines

    def _line_by_line(self, data: bytes, decode: Callable[..., str]) -> Iterator[list[str]]:
        """Lines one at a time, each checked for its length (a line of MAX_LINE_CHARS bytes
        or more is no CSV row); `data` ends with a line end unless it is the file's end."""
        start = 0
        while start < len(data):
            end = data.find(b"\n", start, start + MAX_LINE_CHARS) + 1 or min(
                len(data), start + MAX_LINE_CHARS
            )
            raw = data[start:end]
            self.count += 1
            try:
                line = decode(raw)
            except UnicodeDecodeError as exc:
                raise _undecodable(self.name, self.count, self.encoding, exc) from None
            if len(raw) >= MAX_LINE_CHARS and raw[-1:] != b"\n":
                raise _too_long(self.name, self.count)
            yield [line]
            start = end

    def _text_lines(self, readline: Callable[[int], str]) -> Iterator[str]:
        while True:
            try:
                line = readline(MAX_LINE_CHARS)
            except UnicodeDecodeError as exc:
                raise _undecodable(self.name, self.count + 1, self.encoding, exc) from None
            if not line:
                return
            self.count += 1
            if len(line) >= MAX_LINE_CHARS and not line.endswith("\n"):
                raise _too_long(self.name, self.count)
            if not line.endswith(("\n", "\r")):
                self.unterminated = self.count
            yield line


def _split(text: str) -> list[str]:
    """Lines of text that ends with a line end, each with its "\n" (only "\n" ends a line:
    str.splitlines would also cut at form feeds and other characters inside a cell)."""
    return list(map(operator.add, text.split("\n")[:-1], repeat("\n")))


def _ascii_compatible(codec: str) -> bool:
    """Whether line ends and CSV punctuation are single ASCII bytes in this encoding."""
    probe = '\n,;"|\t'
    try:
        encoded = codecs.getincrementalencoder(codec)().encode(probe)
    except (UnicodeError, LookupError):
        return False
    # utf-8-sig puts its BOM in front; what matters is that the characters are bytes.
    return encoded.removeprefix(codecs.BOM_UTF8) == probe.encode("ascii")


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
