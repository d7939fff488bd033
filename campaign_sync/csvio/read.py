"""Reading partner CSV files in the job's dialect.

Reading fails the whole file (InputError naming the line) when its structure is broken:
undecodable bytes, an unterminated quote, a truncated last row, an absurdly long line.
Row-level problems are not decided here; the caller validates each row.

A line ends in LF, CRLF or a bare CR (classic Mac exports), mixed as they come. Line numbers
count every line end, also one inside a quoted cell (which keeps it as text): the numbers an
editor shows. A file without a header line (format.header false) has the job's column names
as its header, and its first line is data row 1.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import operator
import re
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain, islice, repeat
from pathlib import Path
from typing import IO, Any, cast

from ..config.model import CsvFormat
from ..errors import InputError
from .packing import Stream, open_binary

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
    `header_line` is the header's line number, 0 when the file has none (then `header` holds
    the names of the job's columns).
    """

    def __init__(
        self, header: list[str], reader: Any, source: _Source, name: str, header_line: int = 1
    ) -> None:
        self.header = header
        self.header_line = header_line
        self._reader = reader
        self._source = source
        self._name = name
        # Told (rows so far, bytes of the file read so far) after each batch, for a bar.
        self.progress: Callable[[int, int | None], None] | None = None
        self.rows: Iterator[tuple[int, list[str]]] = self._numbered()

    def width_problem(self, fields: int) -> str:
        """Why a row of `fields` fields is rejected (it has not the header's width)."""
        width = len(self.header)
        if self.header_line:
            return f"has {fields} fields, the header has {width}"
        return f"has {fields} fields, the job's columns list {width}"

    def _numbered(self) -> Iterator[tuple[int, list[str]]]:
        for batch in self.batches():
            for index, row in enumerate(batch.rows):
                yield batch.line(index), row

    def batches(self, size: int = BATCH_ROWS) -> Iterator[RowBatch]:
        """The data rows, `size` at a time (the last batch may be shorter)."""
        reader, width = self._reader, len(self.header)
        done = 0
        while True:
            if self.progress is not None:
                self.progress(done, self._source.position())
            begin = reader.line_num
            rows: list[list[str]] = []
            try:
                rows.extend(islice(reader, size))  # keeps the rows read before an error
            except _BROKEN as exc:
                start = begin + _physical_lines(rows) + 1
                raise _broken(self._name, start, exc, self._source.packing) from None
            except InputError:
                # Line by line, the rows before the failing line were checked first: a
                # truncated last row is reported before a broken byte after it. Only the
                # lines of these rows count: the reader may have taken lines of the next
                # row already, and a row before those has its line end.
                if rows:
                    self._careful(rows, begin, begin + _physical_lines(rows), width)
                raise
            if not rows:
                return
            end = reader.line_num
            done += len(rows)
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
    their quoted fields (the only place a line end survives parsing): LF, CRLF or CR."""
    total = 0
    for row in rows:
        text = "\0".join(row)  # no line end spans two cells
        total += 1 + text.count("\n")
        if "\r" in text:
            total += text.count("\r") - text.count("\r\n")
    return total


def _text_encoding(encoding: str) -> str:
    # utf-8 files from spreadsheet programs often start with a BOM: accept it.
    return "utf-8-sig" if encoding.replace("_", "-").lower() in ("utf-8", "utf8") else encoding


@contextmanager
def read_csv(
    path: Path,
    fmt: CsvFormat,
    *,
    label: str | None = None,
    names: Iterable[str] = (),
    member: str | None = None,
) -> Iterator[CsvRows]:
    """Open `path` (gunzipped when it ends in .gz, its one member or `member` when it ends
    in .zip: see packing.py) and yield its header and rows.

    Blank lines before the header are passed over. A file without a header line
    (`fmt.header` false) takes `names` as its header: one per column.
    """
    name = label or path.name
    binary = open_binary(path, name, member)
    try:
        source = _Source(binary, fmt.encoding, name)
        reader = csv.reader(
            source.lines(), delimiter=fmt.delimiter, quotechar=fmt.quotechar, strict=True
        )
        if not fmt.header:
            yield CsvRows(list(names), reader, source, name, header_line=0)
            return
        found = _header(reader, name, source.packing)
        if found is None:
            raise InputError(
                f"{name}: the file is empty (not even a header line); check the partner's export"
            )
        yield CsvRows(found[0], reader, source, name, header_line=found[1])
    finally:
        binary.close()


class _Source:
    """The physical lines of a file, decoded, each with its line end.

    `unterminated` is the number of the last line if it has no line end (set once read).
    """

    def __init__(self, binary: Stream, encoding: str, name: str) -> None:
        self.binary = binary
        self.encoding = encoding
        self.name = name
        # What a broken stream is named in an error: the compressed data, or the file.
        self.packing = "zip" if hasattr(binary, "inflated") else "gzip"
        self.codec = _text_encoding(encoding)
        self.count = 0  # lines handed out so far
        # Bytes of the file itself (compressed, for a .gz or .zip) read so far: for a bar.
        self._raw: Any = getattr(binary, "fileobj", None) or binary
        self.unterminated: int | None = None

    def position(self) -> int | None:
        """Bytes of the file read so far (None if the file cannot tell)."""
        try:
            return int(self._raw.tell())
        except (OSError, ValueError):
            return None

    def lines(self) -> Iterator[str]:
        if _ascii_compatible(self.codec):
            return chain.from_iterable(self._blocks())
        # UTF-16 and friends cannot be split into lines as bytes; let io find the lines (an
        # undecodable byte is then reported at the line being read, which may be a little
        # early). newline="": LF, CRLF and CR end lines, as on the byte path, and stay.
        binary = cast(IO[bytes], self.binary)  # (a zip member is a BufferedIOBase too)
        text = io.TextIOWrapper(binary, encoding=self.codec, newline="")
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
            cut = _cut(buffer)
            if cut == 0:  # no line end yet
                if len(buffer) > MAX_LINE_CHARS:
                    yield from self._line_by_line(buffer, decoder.decode)  # too long
                carry = buffer
                continue
            carry = buffer[cut:]
            if cut > MAX_LINE_CHARS:
                yield from self._line_by_line(buffer[:cut], decoder.decode)
            else:
                yield from self._decoded(buffer[:cut], decoder.decode)
        if carry:
            if not carry.endswith(b"\r"):  # (a CR there ends the file's last line)
                self.unterminated = self.count + 1  # before the reader can see that line
            yield from self._line_by_line(carry, decoder.decode)
        try:
            decoder.decode(b"", True)  # a multi-byte sequence cut off at the very end
        except UnicodeDecodeError as exc:
            line = max(self.count, 1)
            raise _undecodable(self.name, line, self.encoding, exc, at_end=True) from None

    def _decoded(self, block: bytes, decode: Callable[..., str]) -> Iterator[list[str]]:
        try:
            text = decode(block)
        except UnicodeDecodeError as exc:
            # Hand out the good lines before the bad one, then fail at the bad one. The
            # decoder saw exc.object (a BOM already stripped): decode that part alike.
            seen, bad = exc.object, exc.start
            good = seen[: max(seen.rfind(b"\n", 0, bad), seen.rfind(b"\r", 0, bad)) + 1]
            lines = _split(good.decode("utf-8" if self.codec == "utf-8-sig" else self.codec))
            self.count += len(lines)
            yield lines
            raise _undecodable(self.name, self.count + 1, self.encoding, exc) from None
        lines = _split(text)
        self.count += len(lines)
        yield lines

    def _line_by_line(self, data: bytes, decode: Callable[..., str]) -> Iterator[list[str]]:
        """Lines one at a time, each checked for its length first (a line of MAX_LINE_CHARS
        bytes or more before its line end is no CSV row); `data` ends with a line end unless
        it is the file's end, and a CR at its end is no CRLF's first half."""
        start = 0
        while start < len(data):
            end = _line_end(data, start)
            self.count += 1
            if end < 0:
                raise _too_long(self.name, self.count)
            try:
                line = decode(data[start:end])
            except UnicodeDecodeError as exc:
                raise _undecodable(self.name, self.count, self.encoding, exc) from None
            yield [line]
            start = end

    def _text_lines(self, readline: Callable[[int], str]) -> Iterator[str]:
        while True:
            try:
                line = readline(MAX_LINE_CHARS + 1)  # room for a CRLF after the longest line
            except UnicodeDecodeError as exc:
                raise _undecodable(self.name, self.count + 1, self.encoding, exc) from None
            if not line:
                return
            self.count += 1
            content = line.rstrip("\r\n")
            if len(content) >= MAX_LINE_CHARS:
                raise _too_long(self.name, self.count)
            if len(content) == len(line):
                self.unterminated = self.count
            yield line


# A line and its line end, in text that may mix LF, CRLF and bare CR; a bare CR.
_LINE = re.compile(r"[^\r\n]*(?:\r\n?|\n)")
_BARE_CR = re.compile(r"\r(?!\n)")


def _split(text: str) -> list[str]:
    """Lines of text that ends with a line end, each with its own line end (only CR and LF
    end a line: str.splitlines would also cut at form feeds and other characters inside a
    cell). LF, CRLF and bare-CR text are split in one C call each; only text that mixes a
    bare CR with LFs goes through the regex. (LF text pays one scan for a CR, ~5 µs per
    block; CRLF text one scan for a bare CR, ~140 µs per 256 KiB.)"""
    if "\r" in text:
        if "\n" not in text:
            return list(map(operator.add, text.split("\r")[:-1], repeat("\r")))
        if _BARE_CR.search(text):
            return _LINE.findall(text)
    # LF, or CRLF: each piece keeps its CR.
    return list(map(operator.add, text.split("\n")[:-1], repeat("\n")))


def _cut(buffer: bytes) -> int:
    """Where the lines that surely end in `buffer` end: after its last LF, or after a later
    CR that is not its last byte (an LF may follow that one in the next read); 0 if none."""
    lf = buffer.rfind(b"\n")
    return max(lf, buffer.rfind(b"\r", lf + 1, len(buffer) - 1)) + 1


def _line_end(data: bytes, start: int) -> int:
    """Just past the line end of the line at `start` (its end of data if it has none), or -1
    when MAX_LINE_CHARS bytes or more come before its line end."""
    stop = start + MAX_LINE_CHARS
    lf = data.find(b"\n", start, stop)
    cr = data.find(b"\r", start, lf if lf >= 0 else stop)
    if cr >= 0:
        return cr + 2 if data[cr + 1 : cr + 2] == b"\n" else cr + 1
    if lf >= 0:
        return lf + 1
    return len(data) if len(data) < stop else -1


def _ascii_compatible(codec: str) -> bool:
    """Whether line ends and CSV punctuation are single ASCII bytes in this encoding."""
    probe = '\n,;"|\t'
    try:
        encoded = codecs.getincrementalencoder(codec)().encode(probe)
    except (UnicodeError, LookupError):
        return False
    # utf-8-sig puts its BOM in front; what matters is that the characters are bytes.
    return encoded.removeprefix(codecs.BOM_UTF8) == probe.encode("ascii")


def _undecodable(
    name: str, line: int, encoding: str, exc: UnicodeDecodeError, *, at_end: bool = False
) -> InputError:
    """A byte that is no text in the encoding; `at_end`: a character the file's end cut off."""
    byte = bytes(exc.object[exc.start : exc.start + 1]).hex()
    if at_end:
        return InputError(
            f"{name}: line {line}: cannot decode as {encoding}: the file ends in the middle of "
            f"a character (byte 0x{byte}); it looks truncated, or set the job's "
            "format.encoding (e.g. latin-1, cp1252)"
        )
    return InputError(
        f"{name}: line {line}: cannot decode as {encoding} (byte 0x{byte}); "
        "set the job's format.encoding (e.g. latin-1, cp1252)"
    )


def _too_long(name: str, line: int) -> InputError:
    return InputError(
        f"{name}: line {line} is longer than {MAX_LINE_CHARS:,} characters; "
        "this is not a recipient file (check the delimiter and line endings)"
    )


def _broken(name: str, start: int, exc: Exception, packing: str = "gzip") -> InputError:
    """The csv, gzip and zipfile modules' errors in our words, naming the line the row
    starts on."""
    if not isinstance(exc, csv.Error):  # (data is read ahead: the break may lie further on)
        return InputError(
            f"{name}: line {start}: the {packing} data is broken or cut off at or after this "
            "line; ask for the file again"
        )
    text = str(exc)
    stray = re.fullmatch(r"'(.)' expected after '(.)'", text, re.DOTALL)
    if "unexpected end of data" in text:
        what = (
            "a quote opened in this row is never closed; check the quoting (a quote inside "
            "a quoted field is written twice), or whether the file was cut off"
        )
    elif stray:
        delimiter, quote = stray.groups()
        what = (
            f"text comes after the closing quote of a field instead of the delimiter "
            f"{delimiter!r}; a quote inside a quoted field is written twice ({quote}{quote})"
        )
    elif "field larger than" in text:
        what = (
            f"a quoted field runs over {MAX_LINE_CHARS:,} characters, probably from a quote "
            "that is never closed; check the quoting"
        )
    else:
        what = "the CSV structure is broken in this row; check the quoting and the delimiter"
    return InputError(f"{name}: line {start}: {what}")


_BROKEN = (csv.Error, EOFError, zlib.error, gzip.BadGzipFile, zipfile.BadZipFile)


def _header(reader: Any, name: str, packing: str) -> tuple[list[str], int] | None:
    """The first row that is not blank and the line it starts on; None if there is none."""
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader, None)
        except _BROKEN as exc:
            raise _broken(name, start, exc, packing) from None
        if row is None:
            return None
        if row and row != [""]:
            return row, start
