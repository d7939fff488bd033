"""Writing our CSV files in the job's dialect, safe to open in a spreadsheet.

Two ways in, one output format (RFC 4180 style, ``\\r\\n`` line ends, minimal quoting):

* :meth:`CsvWriter.write` takes a row of cells and formats it with the csv module — for the
  small exports (blocklist, unsubscribers, bounces) and any row that needs care;
* :meth:`CsvWriter.write_packed` takes a chunk of rows that SQLite already joined into one
  string: cells separated by :data:`CELL_SEP`, rows by :data:`ROW_SEP`. Python's csv writer
  and one tuple per row cost more than the whole SQLite query for a million recipients, so
  the hot path only searches the chunk for characters that need quoting and for cells that
  start like a formula (C-speed regex scans) and formats just those rows with the csv
  module; every other row becomes output by two ``str.replace`` calls over the whole chunk.

Both paths give byte-identical output for the same cells (tests/test_export.py checks it).

Columns named verbatim in the header (addresses, blocklist patterns) are not neutralised:
a prefixed ``'+1-1@example.com`` is another valid address, and a partner importing the
file back would get it instead of the real one. They are written as they are as long as
they look like an address (:data:`_NOT_ADDRESS`), which every checked address does.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from ..config.model import CsvFormat
from ..errors import InputError

# Cells starting like this would run as a formula in a spreadsheet.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

# What no checked address holds (white space, controls, brackets, commas, semicolons,
# colons, double quotes): a spreadsheet formula cannot call a function without them. A
# verbatim cell with one of these (a blocklist pattern can be any text) is neutralised.
_NOT_ADDRESS = re.compile(r'[\s\x00-\x1f\x7f-\x9f()\[\]<>,;:"]')

# Separators inside a packed chunk. ASCII unit / record separators never occur in addresses,
# timestamps or statuses; a row whose free-text cells might hold control characters is sent
# as a JSON array behind JSON_ROW instead (see export.py).
CELL_SEP = "\x1f"
ROW_SEP = "\x1e"
JSON_ROW = "\x1d"

LINE_END = "\r\n"

_CELL_SEP_BYTE = CELL_SEP.encode("ascii")
_ROW_SEP_BYTE = ROW_SEP.encode("ascii")
_LINE_END_BYTES = LINE_END.encode("ascii")
# For the formula scan: separators become S, formula starts F, every other byte '.'.
_FORMULA_CLASSES = bytes(
    ord("S")
    if chr(byte) in (CELL_SEP, ROW_SEP)
    else ord("F")
    if chr(byte) in FORMULA_STARTS
    else ord(".")
    for byte in range(256)
)

Rows = Sequence[Sequence[str]]


def neutralise(cell: str, *, address: bool = False) -> str:
    """Prefix a formula-like cell with ' so a spreadsheet shows it instead of running it;
    with `address`, a cell that looks like an address stays as it is."""
    if not cell.startswith(FORMULA_STARTS) or (address and not _NOT_ADDRESS.search(cell)):
        return cell
    return "'" + cell


def _has_empty_line(packed: str) -> bool:
    return (
        packed == ""
        or packed.startswith(ROW_SEP)
        or packed.endswith(ROW_SEP)
        or ROW_SEP + ROW_SEP in packed
    )


def _text(value: object) -> str:
    return "" if value is None else str(value)


class CsvWriter:
    """Writes rows to an already created private file, gzip-compressed when asked, or as the
    one member `zip_member` of a zip archive.

    Text is encoded strictly: a character the job's encoding cannot represent fails the
    export with the row and column named, rather than sending the partner a silently
    altered address or name (a ``?`` in place of ``ł``).
    """

    def __init__(
        self, path: Path, fmt: CsvFormat, *, compress: bool, zip_member: str | None = None
    ):
        self.path = path
        raw: IO[bytes] = open(path, "r+b")  # noqa: SIM115 - closed in close()
        raw.truncate(0)
        self._raw = raw
        self._archive: Any = None
        self._binary: gzip.GzipFile | IO[bytes] = raw
        if zip_member is not None:
            self._binary = self._open_member(zip_member)
        elif compress:
            # No file name in the gzip header: ours is a staging name the partner must not see.
            self._binary = gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=6)
        self._encoder = codecs.getincrementalencoder(fmt.encoding)("strict")
        self._encoding = fmt.encoding
        self._delimiter = fmt.delimiter
        self._buffer = io.StringIO()
        self._csv = csv.writer(
            self._buffer,
            delimiter=fmt.delimiter,
            quotechar=fmt.quotechar,
            lineterminator=LINE_END,
            quoting=csv.QUOTE_MINIMAL,
        )
        # What in a packed chunk the fast path must not just join: characters that force
        # quoting, a JSON row, or a cell that starts like a formula.
        quote_chars = set(fmt.delimiter + fmt.quotechar + "\n\r" + JSON_ROW)
        self._quote_bytes = sorted(char.encode("utf-8") for char in quote_chars)
        self._delimiter_bytes = fmt.delimiter.encode("utf-8")
        # A dialect that uses one of the packing separators itself (odd, but valid) cannot
        # take the fast path, whose joins would mistake it for one: each line goes through
        # the csv module instead.
        self._line_by_line = bool(quote_chars & {CELL_SEP, ROW_SEP})
        # UTF-8 bytes go out as they are once the header has started the file (and written
        # a utf-8-sig BOM); any other encoding is transcoded.
        self._utf8 = codecs.lookup(fmt.encoding).name in ("utf-8", "utf-8-sig")
        self._started = False
        self.header: list[str] = []
        self._verbatim: frozenset[int] = frozenset()  # positions written as they are
        self.rows = 0
        # Told (rows written so far, None) after each chunk, for a bar.
        self.progress: Callable[[int, int | None], None] | None = None

    # -- writing -------------------------------------------------------------------------

    def write_header(self, names: list[str], *, verbatim: Collection[str] = ()) -> None:
        """Start the file; the columns named in `verbatim` are never neutralised."""
        self.header = list(names)
        self._verbatim = frozenset(i for i, name in enumerate(names) if name in verbatim)
        self._emit(self._format(names), lambda: [names], header=True)
        self._started = True

    def write(self, cells: Sequence[object]) -> None:
        self.write_many([cells])

    def write_many(self, rows: Iterable[Sequence[object]]) -> None:
        """Write rows of cells (None is empty), neutralising formula-like cells."""
        batch = [self._neutralised([_text(cell) for cell in row]) for row in rows]
        self._emit("".join(self._format(cells) for cells in batch), lambda: batch)
        self.rows += len(batch)
        if self.progress is not None:
            self.progress(self.rows, None)

    def write_packed(self, packed: str, count: int) -> None:
        """Write `count` rows packed by SQLite.

        Rows are joined by ROW_SEP; each is its cells joined by CELL_SEP, or JSON_ROW and a
        JSON array of its cells.
        """
        if not count:
            return

        def rows() -> Rows:
            return [self._unpack(line) for line in packed.split(ROW_SEP)]

        if self._line_by_line or (len(self.header) == 1 and _has_empty_line(packed)):
            lines = packed.split(ROW_SEP)  # (a lone empty cell must be written as "")
            self._emit("".join(self._format_packed(line) for line in lines), rows)
        elif self._utf8 and self._started:
            self._binary.write(self._join_fast(packed))
        else:
            self._emit(self._join_fast(packed).decode("utf-8"), rows)
        self.rows += count
        if self.progress is not None:
            self.progress(self.rows, None)

    def _open_member(self, member: str) -> IO[bytes]:
        """The one member of a new zip archive, written as a stream (deflated; zip64 so that
        any size fits), stamped with the local time and read-only for others (0644)."""
        import time
        import zipfile

        self._archive = zipfile.ZipFile(self._raw, "w", compression=zipfile.ZIP_DEFLATED)
        info = zipfile.ZipInfo(member, date_time=time.localtime()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o100644 << 16
        stream: IO[bytes] = self._archive.open(info, "w", force_zip64=True)
        return stream

    def close(self) -> None:
        self._binary.write(self._encoder.encode("", final=True))
        if self._binary is not self._raw:
            self._binary.close()
        if self._archive is not None:
            self._archive.close()  # the central directory
        self._raw.flush()
        self._raw.close()

    # -- formatting ----------------------------------------------------------------------

    def _format(self, cells: Sequence[str]) -> str:
        self._buffer.seek(0)
        self._buffer.truncate()
        self._csv.writerow(cells)
        return self._buffer.getvalue()

    def _unpack(self, line: str) -> list[str]:
        if line.startswith(JSON_ROW):
            return [_text(cell) for cell in json.loads(line[1:])]
        return line.split(CELL_SEP)

    def _format_packed(self, line: str) -> str:
        return self._format(self._neutralised(self._unpack(line)))

    def _neutralised(self, cells: Sequence[str]) -> list[str]:
        verbatim = self._verbatim
        return [neutralise(cell, address=i in verbatim) for i, cell in enumerate(cells)]

    def _join_fast(self, text: str) -> bytes:
        """Turn a packed chunk into CSV (as UTF-8), formatting only the lines that need care.

        Bytes, not text: separators and the characters to look for are single bytes in
        UTF-8 (or whole byte sequences that cannot start inside another character), and
        bytes.translate and bytes.find scan them several times faster than a regex.
        """
        data = text.encode("utf-8")
        pieces: list[bytes] = []
        done = 0  # data[:done] is in pieces
        for start in self._lines_needing_care(data):
            if start < done:
                continue  # a second finding in a line already formatted
            end = data.find(_ROW_SEP_BYTE, start)
            end = len(data) if end < 0 else end
            pieces.append(self._plain(data[done:start]))
            line = self._format_packed(data[start:end].decode("utf-8"))
            pieces.append(line.removesuffix(LINE_END).encode("utf-8"))
            done = end
        pieces.append(self._plain(data[done:]))
        pieces.append(_LINE_END_BYTES)
        return b"".join(pieces)

    def _lines_needing_care(self, data: bytes) -> list[int]:
        """Sorted start offsets of lines with a character to quote or a formula-like cell.

        Characters to quote are rare: bytes.find (memchr) per character, one line at a
        time. A formula start is a separator followed by a formula character: translated
        to S and F (everything else to '.'), each is one find of b"SF".
        """
        found: set[int] = set()
        for char in self._quote_bytes:
            position = data.find(char)
            while position >= 0:
                found.add(data.rfind(_ROW_SEP_BYTE, 0, position) + 1)
                end = data.find(_ROW_SEP_BYTE, position)
                position = -1 if end < 0 else data.find(char, end)
        classes = data.translate(_FORMULA_CLASSES)
        position = classes.find(b"SF")
        while position >= 0:
            # The separator at `position` may itself end the line before.
            found.add(data.rfind(_ROW_SEP_BYTE, 0, position + 1) + 1)
            position = classes.find(b"SF", position + 2)
        if classes[:1] == b"F":
            found.add(0)
        return sorted(found)

    def _plain(self, data: bytes) -> bytes:
        return data.replace(_CELL_SEP_BYTE, self._delimiter_bytes).replace(
            _ROW_SEP_BYTE, _LINE_END_BYTES
        )

    # -- output --------------------------------------------------------------------------

    def _emit(self, text: str, rows: Callable[[], Rows], *, header: bool = False) -> None:
        try:
            data = self._encoder.encode(text)
        except UnicodeEncodeError as exc:
            raise self._encoding_error(exc, rows(), header) from None
        self._binary.write(data)

    def _encoding_error(self, exc: UnicodeEncodeError, rows: Rows, header: bool) -> InputError:
        """Name the first row and column the encoding cannot hold, and the character."""
        bad = exc.object[exc.start]
        what = f"'{bad}' (U+{ord(bad):04X})"
        for index, cells in enumerate(rows):
            for column, cell in enumerate(cells):
                try:
                    cell.encode(self._encoding)
                except UnicodeEncodeError:
                    name = self.header[column] if column < len(self.header) else column + 1
                    where = "the header" if header else f"data row {self.rows + index + 1}"
                    return InputError(
                        f"{where}, column {name}: {what} cannot be written in "
                        f"{self._encoding}; set the job's format.encoding to utf-8 "
                        "(or one that has this character)"
                    )
        return InputError(f"{what} cannot be written in {self._encoding}")
