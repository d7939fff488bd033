"""Writing our CSV files in the job's dialect, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path
from typing import IO

from .config import CsvFormat

# Cells starting like this would run as a formula in a spreadsheet.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell: str) -> str:
    """Prefix a formula-like cell with ' so a spreadsheet shows it instead of running it."""
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


class CsvWriter:
    """Writes rows to an already created private file, gzip-compressed when asked."""

    def __init__(self, path: Path, fmt: CsvFormat, *, compress: bool):
        raw: IO[bytes] = open(path, "r+b")  # noqa: SIM115 - closed in close()
        raw.truncate(0)
        self._binary: IO[bytes] = (
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6) if compress else raw
        )
        self._raw = raw
        self._text = io.TextIOWrapper(
            self._binary, encoding=fmt.encoding, errors="replace", newline=""
        )
        self._writer = csv.writer(
            self._text,
            delimiter=fmt.delimiter,
            quotechar=fmt.quotechar,
            lineterminator="\r\n",
            quoting=csv.QUOTE_MINIMAL,
        )
        self.rows = 0

    def write(self, cells: list[str]) -> None:
        self._writer.writerow([neutralise(cell) for cell in cells])
        self.rows += 1

    def write_header(self, names: list[str]) -> None:
        self._writer.writerow(names)

    def close(self) -> None:
        self._text.flush()
        self._text.detach()
        if self._binary is not self._raw:
            self._binary.close()
        self._raw.flush()
        self._raw.close()
