"""Reading partner files: dialects and encodings, and whole-file failures naming the line."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from campaign_sync.config import CsvFormat
from campaign_sync.csvread import read_csv
from campaign_sync.errors import InputError


def rows(tmp_path: Path, content: bytes, name: str = "f.csv", **fmt: str) -> list[object]:
    path = tmp_path / name
    path.write_bytes(gzip.compress(content) if name.endswith(".gz") else content)
    with read_csv(path, CsvFormat(**fmt)) as src:
        return [src.header, *src.rows]


def failure(tmp_path: Path, content: bytes, name: str = "f.csv", **fmt: str) -> str:
    with pytest.raises(InputError) as caught:
        rows(tmp_path, content, name, **fmt)
    return str(caught.value)


@pytest.mark.parametrize(
    ("encoding", "data"),
    [
        ("utf-8", "email,name\nä@x.de,Jörg\n".encode()),
        ("utf-8", b"\xef\xbb\xbf" + "email,name\nä@x.de,Jörg\n".encode()),  # BOM
        ("UTF8", b"\xef\xbb\xbf" + "email,name\nä@x.de,Jörg\n".encode()),
        ("latin-1", "email,name\nä@x.de,Jörg\n".encode("latin-1")),
        ("cp1252", "email,name\nä@x.de,Jörg\n".encode("cp1252")),
        ("utf-16", "email,name\nä@x.de,Jörg\n".encode("utf-16")),
    ],
)
def test_encodings(tmp_path: Path, encoding: str, data: bytes) -> None:
    assert rows(tmp_path, data, encoding=encoding) == [["email", "name"], (2, ["ä@x.de", "Jörg"])]


def test_cp1252_specials(tmp_path: Path) -> None:
    data = "email,name\na@x.de,€ – ‚x‘\n".encode("cp1252")
    assert rows(tmp_path, data, encoding="cp1252")[1] == (2, ["a@x.de", "€ – ‚x‘"])


def test_crlf_lf_quoted_newlines_and_blank_lines(tmp_path: Path) -> None:
    data = b'email;note\r\na@x.de;"two\r\nlines; and ""quotes"""\r\n\r\nb@x.de;x\nc@x.de;y'
    assert rows(tmp_path, data, delimiter=";") == [
        ["email", "note"],
        (2, ["a@x.de", 'two\r\nlines; and "quotes"']),
        (5, ["b@x.de", "x"]),
        (6, ["c@x.de", "y"]),
    ]


def test_tab_delimiter_and_other_quotechar(tmp_path: Path) -> None:
    data = b"email\tname\na@x.de\t'O''Neil\tx'\n"
    assert rows(tmp_path, data, delimiter="\t", quotechar="'")[1] == (2, ["a@x.de", "O'Neil\tx"])


def test_gzip(tmp_path: Path) -> None:
    assert rows(tmp_path, b"email\na@x.de\n", name="f.csv.gz")[1] == (2, ["a@x.de"])


def test_undecodable_byte_names_its_exact_line(tmp_path: Path) -> None:
    body = b"".join(b"a%d@x.de\n" % n for n in range(5000))  # far beyond any read-ahead
    message = failure(tmp_path, b"email\n" + body + b"b\xff@x.de\n")
    assert message == (
        "f.csv: line 5002: cannot decode as utf-8 (byte 0xff); set the job's "
        "format.encoding (e.g. latin-1, cp1252)"
    )


def test_multibyte_sequence_cut_at_the_end(tmp_path: Path) -> None:
    message = failure(tmp_path, b"email\na@x.de\nb\xc3")
    assert message.startswith("f.csv: line 3: cannot decode as utf-8 (byte 0xc3)")


def test_unterminated_quote_names_the_line_it_opens(tmp_path: Path) -> None:
    message = failure(tmp_path, b'email,name\na@x.de,x\nb@x.de,"open\nc@x.de,y\n')
    assert message == (
        "f.csv: line 3: broken CSV structure (unexpected end of data); check quoting, the "
        "delimiter, or whether the file was cut off"
    )


def test_truncated_last_row(tmp_path: Path) -> None:
    message = failure(tmp_path, b"email,a,b\nx@x.de,1,2\ny@x.de,1")
    assert message == (
        "f.csv: line 3: the last row is incomplete (2 of 3 fields, no line end); "
        "the file looks truncated"
    )
    # A complete last row without a line end is fine.
    assert rows(tmp_path, b"email,a\nx@x.de,1")[1] == (2, ["x@x.de", "1"])


def test_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "f.csv.gz"
    path.write_bytes(gzip.compress(b"email\n" + b"a@x.de\n" * 10000)[:-20])
    with (
        pytest.raises(InputError, match="the gzip data is broken or cut off"),
        read_csv(path, CsvFormat()) as src,
    ):
        list(src.rows)


def test_empty_file(tmp_path: Path) -> None:
    assert failure(tmp_path, b"") == "f.csv: the file is empty (no header line)"


def test_absurdly_long_line(tmp_path: Path) -> None:
    message = failure(tmp_path, b"email\n" + b"x" * (1 << 21) + b"\n")
    assert message.startswith("f.csv: line 2 is longer than 1,048,576 characters")
