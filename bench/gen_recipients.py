"""Generate a realistic recipient CSV for the import benchmark, deterministically.

    python bench/gen_recipients.py OUT.csv --rows 1000000 [--seed 1] [--delimiter ,]

Ten columns, about 80 bytes a row, unique addresses, UTF-8 with LF line ends.  The same seed
gives the same bytes, and the first N rows of a bigger file equal a file of N rows, so runs of
different sizes are comparable.  Rows are made a block at a time with ``Random.choices`` (one
C call per column per block, not one per cell) and written as they are made, so memory stays
constant however many rows are asked for.  ``-`` writes to stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import random
import sys
from collections.abc import Iterator
from typing import TextIO

BLOCK = 10_000  # rows per block: big enough to amortise calls, small enough for the cache

HEADER = (
    "email",
    "first_name",
    "last_name",
    "salutation",
    "city",
    "zip",
    "country",
    "birthday",
    "customer_id",
    "doi_confirmed_at",
)

# (first name, salutation); German-market names, some with umlauts, to exercise UTF-8.
FIRST_NAMES = [
    ("Anna", "Frau"), ("Maria", "Frau"), ("Julia", "Frau"), ("Laura", "Frau"), ("Lea", "Frau"),
    ("Sophie", "Frau"), ("Katrin", "Frau"), ("Sabine", "Frau"), ("Petra", "Frau"),
    ("Jana", "Frau"), ("Emma", "Frau"), ("Mia", "Frau"), ("Hannah", "Frau"), ("Zoë", "Frau"),
    ("Jörg", "Herr"), ("Jürgen", "Herr"), ("Thomas", "Herr"), ("Michael", "Herr"),
    ("Stefan", "Herr"), ("Andreas", "Herr"), ("Lukas", "Herr"), ("Felix", "Herr"),
    ("Jonas", "Herr"), ("Paul", "Herr"), ("Tim", "Herr"), ("Jan", "Herr"), ("Max", "Herr"),
    ("Ben", "Herr"), ("Alex", ""), ("Kim", ""), ("Robin", ""), ("Chris", ""),
]  # fmt: skip
LAST_NAMES = [
    "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker",
    "Schulz", "Hoffmann", "Schäfer", "Koch", "Bauer", "Richter", "Klein", "Wolf", "Schröder",
    "Neumann", "Schwarz", "Zimmermann", "Braun", "Krüger", "Hofmann", "Hartmann", "Lange",
    "Schmitt", "Werner", "Krause", "Meier", "Lehmann", "Yılmaz", "Nowak", "Kowalski", "Rossi",
]  # fmt: skip
# (city, zip prefix, country)
CITIES = [
    ("Berlin", "10", "DE"), ("Hamburg", "20", "DE"), ("München", "80", "DE"),
    ("Köln", "50", "DE"), ("Frankfurt", "60", "DE"), ("Stuttgart", "70", "DE"),
    ("Leipzig", "04", "DE"), ("Dresden", "01", "DE"), ("Essen", "45", "DE"),
    ("Bremen", "28", "DE"), ("Hannover", "30", "DE"), ("Nürnberg", "90", "DE"),
    ("Wien", "1", "AT"), ("Graz", "8", "AT"), ("Zürich", "8", "CH"), ("Basel", "4", "CH"),
]  # fmt: skip
# Weighted like a real German list (per mille): the big mailbox providers first, a long tail,
# and the odd internationalized domain (which takes the address check's slow path).
DOMAINS = [
    ("gmail.com", 200), ("web.de", 180), ("gmx.de", 160), ("t-online.de", 100),
    ("outlook.com", 60), ("yahoo.de", 50), ("hotmail.de", 40), ("icloud.com", 40),
    ("freenet.de", 30), ("gmx.at", 25), ("bluewin.ch", 20), ("posteo.de", 20), ("mail.de", 20),
    ("aol.com", 10), ("firma-beispiel.de", 14), ("example.org", 10), ("müller-bau.de", 1),
]  # fmt: skip
STYLES = (0, 1, 2, 3)
STYLE_WEIGHTS = (50, 20, 10, 20)

# Turn names into plausible local parts: ASCII, lower case, umlauts transliterated.
_TRANSLIT = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "ë": "e", "ı": "i"})


def _ascii(name: str) -> str:
    return name.lower().translate(_TRANSLIT)


def _local_part(first: str, last: str, number: int, style: int) -> str:
    """A local part ending in ``number``.

    Names never contain digits, so the trailing digits are exactly ``number``: distinct numbers
    give distinct local parts whatever the names and style, which makes every address unique
    (also after lower-casing, as the numbers are the row numbers).
    """
    if style == 0:
        return f"{first}.{last}{number}"
    if style == 1:
        return f"{first[0]}{last}{number}"
    if style == 2:
        return f"{first}_{last[:3]}{number}"
    return f"{last}.{first[0]}{number}"


def _dates(first_year: int, last_year: int) -> list[str]:
    """Every YYYY-MM-DD of these years, precomputed so rows just index into the list."""
    day = dt.date(first_year, 1, 1)
    end = dt.date(last_year, 12, 31)
    out = []
    while day <= end:
        out.append(day.isoformat())
        day += dt.timedelta(days=1)
    return out


BIRTHDAYS = _dates(1945, 2006)
DOI_DAYS = _dates(2019, 2025)
MINUTES = [f"T{h:02d}:{m:02d}Z" for h in range(24) for m in range(60)]


def _block(rng: random.Random, start: int, delimiter: str) -> list[str]:
    """CSV lines (with newline) for rows start .. start + BLOCK - 1."""
    firsts = rng.choices(FIRST_NAMES, k=BLOCK)
    lasts = rng.choices(LAST_NAMES, k=BLOCK)
    cities = rng.choices(CITIES, k=BLOCK)
    domains = rng.choices(_DOMAIN_NAMES, cum_weights=_DOMAIN_CUM, k=BLOCK)
    styles = rng.choices(STYLES, weights=STYLE_WEIGHTS, k=BLOCK)
    lines = []
    for offset in range(BLOCK):
        row = start + offset
        first, salutation = firsts[offset]
        last = lasts[offset]
        city, zip_prefix, country = cities[offset]
        # One call gives all the small random choices of a row, as separate bit fields:
        # 0-9 spelling, 10-26 zip, 27-28 + 29-43 birthday, 44 + 46-57 + 58-68 double opt-in.
        bits = rng.getrandbits(69)
        email = f"{_local_part(_ASCII[first], _ASCII[last], row, styles[offset])}@{domains[offset]}"
        if bits & 0x1F == 0:  # ~3 %: written with capitals, as people type them
            email = email.title()
        elif bits & 0x3FF == 1:  # ~0.1 %: stray whitespace from a spreadsheet
            email = f" {email} "
        digits = (5 if country == "DE" else 4) - len(zip_prefix)
        zip_code = f"{zip_prefix}{(bits >> 10 & 0x1FFFF) % 10**digits:0{digits}d}"
        birthday = ""
        if bits >> 27 & 0x3 == 0:  # ~25 % known: most lists never ask
            birthday = BIRTHDAYS[(bits >> 29 & 0x7FFF) % len(BIRTHDAYS)]
        doi = ""
        if bits >> 44 & 0x1:  # ~50 % confirmed double opt-in
            doi = DOI_DAYS[(bits >> 46 & 0xFFF) % len(DOI_DAYS)] + MINUTES[(bits >> 58) % 1440]
        cells = (
            email, first, last, salutation, city, zip_code, country, birthday,
            str(100_000 + row), doi,
        )  # fmt: skip
        lines.append(delimiter.join(cells) + "\n")
    return lines


_DOMAIN_NAMES = [name for name, _ in DOMAINS]
_DOMAIN_CUM = list(itertools.accumulate(weight for _, weight in DOMAINS))
_ASCII = {name: _ascii(name) for name, _ in FIRST_NAMES} | {
    name: _ascii(name) for name in LAST_NAMES
}


def generate(rows: int, seed: int, delimiter: str = ",") -> Iterator[str]:
    """Yield the file as chunks of text: the header, then blocks of rows.

    Every block is drawn in full and only the last one is cut, so the random stream -- and with
    it every row -- does not depend on ``rows``: a small file is the head of a big one.
    """
    _check_no_quoting_needed(delimiter)
    rng = random.Random(seed)
    yield delimiter.join(HEADER) + "\n"
    for start in range(0, rows, BLOCK):
        yield "".join(_block(rng, start, delimiter)[: rows - start])


def _check_no_quoting_needed(delimiter: str) -> None:
    """The word lists are plain text; refuse a delimiter that would need CSV quoting."""
    words = [w for pair in FIRST_NAMES for w in pair] + LAST_NAMES + _DOMAIN_NAMES
    words += [w for triple in CITIES for w in triple] + list(BIRTHDAYS[0] + MINUTES[0])
    if len(delimiter) != 1 or delimiter in '"\r\n @.' or any(delimiter in w for w in words):
        raise SystemExit(f"unsuitable delimiter {delimiter!r}: it would need CSV quoting")


def write(out: TextIO, rows: int, seed: int, delimiter: str) -> None:
    for chunk in generate(rows, seed, delimiter):
        out.write(chunk)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the CSV file to write, or - for stdout")
    parser.add_argument("--rows", type=int, required=True, help="data rows (header not counted)")
    parser.add_argument("--seed", type=int, default=1, help="same seed, same file (default 1)")
    parser.add_argument("--delimiter", default=",", help="cell separator (default ,)")
    args = parser.parse_args(argv)
    if args.rows < 0:
        parser.error("--rows must not be negative")
    if args.out == "-":
        write(sys.stdout, args.rows, args.seed, args.delimiter)
        return
    # newline="" keeps LF on every platform; a big buffer means few system calls.
    with open(args.out, "w", encoding="utf-8", newline="", buffering=1 << 20) as out:
        write(out, args.rows, args.seed, args.delimiter)


if __name__ == "__main__":
    main()
