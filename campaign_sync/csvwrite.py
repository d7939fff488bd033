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
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO

from .config import CsvFormat
from .errors import InputError

# Cells starting like this would run as a formula in a spreadsheet.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

# Separators inside a packed chunk. ASCII unit / record separators never occur in addresses,
# timestamps or statuses; a row whose free-text cells might hold control characters is sent
# as a JSON array behind JSON_ROW instead (see export.py).
CELL_SEP = "\x1f"
ROW_SEP = "\x1e"
JSON_ROW = "\x1d"

LINE_END = "\r\n"

Rows = Sequence[Sequence[str]]


def neutralise(cell: str) -> str:
    """Prefix a formula-like cell with ' so a spreadsheet shows it instead of running it."""
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


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
    """Writes rows to an already created private file, gzip-compressed when asked.

    Text is encoded strictly: a character the job's encoding cannot represent fails the
    export with the row and column named, rather than sending the partner a silently
    altered address or name (a ``?`` in place of ``ł``).
    """

    def __init__(self, path: Path, fmt: CsvFormat, *, compress: bool):
        self.path = path
        raw: IO[bytes] = open(path, "r+b")  # noqa: SIM115 - closed in close()
        raw.truncate(0)
        self._raw = raw
        # No file name in the gzip header: ours is a staging name the partner must not see.
        self._binary: IO[bytes] = (
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=6) if compress else raw
        )
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
        self._quote_chars = sorted(set(fmt.delimiter + fmt.quotechar + "\n\r" + JSON_ROW))
        starts = re.escape("".join(FORMULA_STARTS))
        self._formula = re.compile(f"[{CELL_SEP}{ROW_SEP}][{starts}]")
        self.header: list[str] = []
        self.rows = 0

    # -- writing -------------------------------------------------------------------------

    def write_header(self, names: list[str]) -> None:
        self.header = list(names)
        self._emit(self._format(names), lambda: [names], header=True)

    def write(self, cells: Sequence[object]) -> None:
        self.write_many([cells])

    def write_many(self, rows: Iterable[Sequence[object]]) -> None:
        """Write rows of cells (None is empty), neutralising formula-like cells."""
        batch = [[neutralise(_text(cell)) for cell in row] for row in rows]
        self._emit("".join(self._format(cells) for cells in batch), lambda: batch)
        self.rows += len(batch)

    def write_packed(self, packed: str, count: int) -> None:
        """Write `count` rows packed by SQLite.

        Rows are joined by ROW_SEP; each is its cells joined by CELL_SEP, or JSON_ROW and a
        JSON array of its cells.
        """
        if not count:
            return
        if len(self.header) == 1 and _has_empty_line(packed):
            lines = packed.split(ROW_SEP)  # a lone empty cell must be written as ""
            out = "".join(self._format_packed(line) for line in lines)
        else:
            out = self._join_fast(packed)
        self._emit(out, lambda: [self._unpack(line) for line in packed.split(ROW_SEP)])
        self.rows += count

    def close(self) -> None:
        self._binary.write(self._encoder.encode("", final=True))
        if self._binary is not self._raw:
            self._binary.close()
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
        return self._format([neutralise(cell) for cell in self._unpack(line)])

    def _join_fast(self, text: str) -> str:
        """Turn a packed chunk into CSV, formatting only the lines that need care."""
        pieces: list[str] = []
        done = 0  # text[:done] is in pieces
        for start in self._lines_needing_care(text):
            if start < done:
                continue  # a second finding in a line already formatted
            end = text.find(ROW_SEP, start)
            end = len(text) if end < 0 else end
            pieces.append(self._plain(text[done:start]))
            pieces.append(self._format_packed(text[start:end]).removesuffix(LINE_END))
            done = end
        pieces.append(self._plain(text[done:]))
        pieces.append(LINE_END)
        return "".join(pieces)

    def _lines_needing_care(self, text: str) -> list[int]:
        """Sorted start offsets of lines with a character to quote or a formula-like cell.

        Characters to quote are rare: str.find (memchr) per character, one line at a time, is
        several times faster than a regex over the whole chunk. A formula start is a pair
        (separator, character), which one regex with a single-class prefix finds quickest.
        """
        found: set[int] = set()
        for char in self._quote_chars:
            position = text.find(char)
            while position >= 0:
                start = text.rfind(ROW_SEP, 0, position) + 1
                found.add(start)
                end = text.find(ROW_SEP, position)
                position = -1 if end < 0 else text.find(char, end)
        for match in self._formula.finditer(text):
            found.add(text.rfind(ROW_SEP, 0, match.start() + 1) + 1)
        if text.startswith(FORMULA_STARTS):
            found.add(0)
        return sorted(found)

    def _plain(self, text: str) -> str:
        return text.replace(CELL_SEP, self._delimiter).replace(ROW_SEP, LINE_END)

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
