"""Reading partner files: dialects and encodings, and whole-file failures naming the line."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from props import examples

from campaign_sync.config.model import CsvFormat
from campaign_sync.csvio.read import read_csv
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


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_a_cr_inside_quotes_is_text_and_a_line_end_in_any_encoding(
    tmp_path: Path, encoding: str
) -> None:
    # The cell keeps its CR, and line numbers count it like an editor does; a batch boundary
    # (2,048 rows) lies between the two short rows, so both ways of numbering (per batch and
    # within one) are compared.
    lines = ["email,note", 'a@x.de,"one\rtwo"', "short", *(["b@x.de,x"] * 2100), "short"]
    data = ("\n".join(lines) + "\n").encode(encoding)
    found = rows(tmp_path, data, encoding=encoding)
    assert found[1] == (2, ["a@x.de", "one\rtwo"])
    assert [line for line, cells in found[1:] if cells == ["short"]] == [4, 2105]


MIXED = (
    b"email;note\r"  # classic Mac
    b'a@x.de;"mac\rcell"\r'
    b"b@x.de;unix\n"
    b'c@x.de;"windows\r\ncell"\r\n'
    b"\r"  # a blank line
    b'd@x.de;"unix\ncell"\n'
    b"e@x.de;last"
)
MIXED_ROWS = [
    ["email", "note"],
    (2, ["a@x.de", "mac\rcell"]),
    (4, ["b@x.de", "unix"]),
    (5, ["c@x.de", "windows\r\ncell"]),
    (8, ["d@x.de", "unix\ncell"]),
    (10, ["e@x.de", "last"]),
]


@pytest.mark.parametrize(
    ("name", "encoding"),
    [("f.csv", "utf-8"), ("f.csv", "latin-1"), ("f.csv", "utf-16"), ("f.csv.gz", "utf-8")],
)
def test_lf_crlf_and_bare_cr_mixed_in_one_file(tmp_path: Path, name: str, encoding: str) -> None:
    data = MIXED.decode().encode(encoding)
    assert rows(tmp_path, data, name, delimiter=";", encoding=encoding) == MIXED_ROWS


@pytest.mark.parametrize("block", [1, 2, 3, 7, 1 << 18])
def test_bare_cr_file_across_block_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    from campaign_sync.csvio import read as csvread

    monkeypatch.setattr(csvread, "BLOCK_BYTES", block)
    assert rows(tmp_path, MIXED, delimiter=";") == MIXED_ROWS
    mac = b"email,n\r" + b"".join(b"a%d@x.de,%d\r" % (i, i) for i in range(3000))
    found = rows(tmp_path, mac)
    assert (len(found), found[1], found[-1]) == (
        3001,
        (2, ["a0@x.de", "0"]),
        (3001, ["a2999@x.de", "2999"]),
    )


@pytest.mark.parametrize("end", [b"\r", b"\n", b"\r\n"])
def test_file_problems_name_the_right_line_whatever_the_line_end(
    tmp_path: Path, end: bytes
) -> None:
    def file(*lines: bytes) -> bytes:
        return end.join(lines)

    quoted = b'a@x.de,"two' + end + b'lines"'
    assert failure(tmp_path, file(b"email,n", quoted, b'b@x.de,"open', b"c@x.de,x", b"")) == (
        "f.csv: line 4: a quote opened in this row is never closed; check the quoting (a quote "
        "inside a quoted field is written twice), or whether the file was cut off"
    )
    assert failure(tmp_path, file(b"email,n,m", quoted + b",1", b"", b"b@x.de,1")) == (
        "f.csv: line 5: the last row is incomplete (2 of 3 fields, no line end); "
        "the file looks truncated"
    )
    assert failure(tmp_path, file(b"email,n", quoted, b"b@x.de,\xff", b"")).startswith(
        "f.csv: line 4: cannot decode as utf-8 (byte 0xff)"
    )


def test_no_message_repeats_the_csv_modules_wording(tmp_path: Path) -> None:
    # A CR in the middle of a line ended the csv module's patience ("new-line character seen
    # in unquoted field - do you need to open the file in universal-newline mode?"); now it
    # is a line end. Text after a closing quote is explained in our words.
    assert rows(tmp_path, b"email,n\na@x.de,1\rb@x.de,2\n") == [
        ["email", "n"],
        (2, ["a@x.de", "1"]),
        (3, ["b@x.de", "2"]),
    ]
    assert failure(tmp_path, b'email;n\r\na@x.de;"Jo" Doe\r\n', delimiter=";") == (
        "f.csv: line 2: text comes after the closing quote of a field instead of the "
        "delimiter ';'; a quote inside a quoted field is written twice (\"\")"
    )


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


CUT_OFF = (
    "f.csv: line 3: cannot decode as utf-8: the file ends in the middle of a character "
    "(byte 0xc3); it looks truncated, or set the job's format.encoding (e.g. latin-1, cp1252)"
)


def test_multibyte_sequence_cut_at_the_end(tmp_path: Path) -> None:
    assert failure(tmp_path, b"email\na@x.de\nb@x.de\xc3") == CUT_OFF
    # A cut-off row is truncated either way; its missing fields are what it shows first.
    assert failure(tmp_path, b"email,n\na@x.de\nb@x.de\xc3").startswith(
        "f.csv: line 3: the last row is incomplete (1 of 2 fields, no line end)"
    )


@pytest.mark.parametrize(("block", "size"), [(1, 2), (1, 1), (2, 5), (1 << 18, 2048)])
def test_a_character_cut_off_in_an_open_quote_is_named_at_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int, size: int
) -> None:
    # Once found by test_blocks_read_like_lines: the short row on line 2 has its line end, so
    # it is no truncated last row; line 3 opens a quote and the file ends in the middle of
    # a character there. The block reader said "line 2: the last row is incomplete".
    from campaign_sync.csvio import read as csvread

    monkeypatch.setattr(csvread, "BLOCK_BYTES", block)
    content = b'email;a;b\na\n"\xc3'
    assert blockwise(tmp_path, content, size, delimiter=";") == CUT_OFF
    assert reference(content, 24, delimiter=";") == CUT_OFF


def test_unterminated_quote_names_the_line_it_opens(tmp_path: Path) -> None:
    message = failure(tmp_path, b'email,name\na@x.de,x\nb@x.de,"open\nc@x.de,y\n')
    assert message == (
        "f.csv: line 3: a quote opened in this row is never closed; check the quoting (a quote "
        "inside a quoted field is written twice), or whether the file was cut off"
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
    with pytest.raises(InputError) as caught, read_csv(path, CsvFormat()) as src:
        list(src.rows)
    assert re.fullmatch(
        r"f\.csv\.gz: line 1: the gzip data is broken or cut off at or after this line; "
        r"ask for the file again",
        str(caught.value),
    )


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf", b"\n\r\n\r", b"\xef\xbb\xbf\r\n"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    assert failure(tmp_path, content) == (
        "f.csv: the file is empty (not even a header line); check the partner's export"
    )


def test_blank_lines_before_the_header_are_passed_over(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(b"\xef\xbb\xbf\r\n\r\nemail\r\na@x.de\r\n")
    with read_csv(path, CsvFormat()) as src:
        assert (src.header, src.header_line, list(src.rows)) == (["email"], 3, [(4, ["a@x.de"])])


def test_a_file_without_header_line_is_all_data(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(b"a@x.de,Anna\r\n\r\nb@x.de\r\nc@x.de,Carla,x")
    names = ["email", "first_name"]
    with read_csv(path, CsvFormat(header=False), names=names) as src:
        assert (src.header, src.header_line) == (names, 0)
        found = list(src.rows)
        assert found == [(1, ["a@x.de", "Anna"]), (3, ["b@x.de"]), (4, ["c@x.de", "Carla", "x"])]
        assert src.width_problem(1) == "has 1 fields, the job's columns list 2"
    path.write_bytes(b"a@x.de,Anna\nb@x.de")
    with (
        pytest.raises(InputError, match="line 2: the last row is incomplete \\(1 of 2 fields"),
        read_csv(path, CsvFormat(header=False), names=names) as src,
    ):
        list(src.rows)
    path.write_bytes(b"")  # no rows, and no header to miss
    with read_csv(path, CsvFormat(header=False), names=names) as src:
        assert list(src.rows) == []


def test_absurdly_long_line(tmp_path: Path) -> None:
    message = failure(tmp_path, b"email\n" + b"x" * (1 << 21) + b"\n")
    assert message.startswith("f.csv: line 2 is longer than 1,048,576 characters")


# --------------------------------------------------------------------------- block reading

# The reader decodes a block of bytes at a time and locates lines only when it must. It has to
# give exactly what reading line by line gives: the same rows with the same line numbers, and
# the same failure naming the same line. The reference below is that line-by-line reader.


def reference(content: bytes, max_line: int, **fmt: str) -> object:
    """[header, (line, row), ...] or the InputError message, reading line by line."""
    import codecs
    import csv

    from campaign_sync.csvio import read as csvread

    form = CsvFormat(**fmt)
    name = "f.csv"
    codec = csvread._text_encoding(form.encoding)
    decode = codecs.getincrementaldecoder(codec)("strict").decode
    last = [""]

    def lines() -> Iterator[str]:
        """Each line with its line end: LF, CRLF or CR."""
        number = 0
        for raw in re.findall(rb"[^\r\n]*(?:\r\n?|\n)|[^\r\n]+\Z", content):
            number += 1
            if len(raw.rstrip(b"\r\n")) >= max_line:
                raise InputError(f"{name}: line {number} is longer than")
            try:
                line = decode(raw)
            except UnicodeDecodeError as exc:
                raise csvread._undecodable(name, number, form.encoding, exc) from None
            last[0] = line
            yield line
        try:
            decode(b"", True)
        except UnicodeDecodeError as exc:
            line = max(number, 1)
            raise csvread._undecodable(name, line, form.encoding, exc, at_end=True) from None

    out: list[object] = []
    try:
        reader = csv.reader(
            lines(), delimiter=form.delimiter, quotechar=form.quotechar, strict=True
        )
        header: list[str] | None = []
        while header == [] or header == [""]:  # blank lines before the header
            try:
                header = next(reader, None)
            except csv.Error as exc:
                raise csvread._broken(name, reader.line_num + 1, exc) from None
        if header is None:
            raise InputError(
                f"{name}: the file is empty (not even a header line); check the partner's export"
            )
        out.append(header)
        line_num = reader.line_num
        while True:
            start = line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise csvread._broken(name, start, exc) from None
            line_num = reader.line_num
            if not row or row == [""]:
                continue
            if len(row) < len(header) and not last[0].endswith(("\n", "\r")):
                raise InputError(
                    f"{name}: line {start}: the last row is incomplete ({len(row)} of "
                    f"{len(header)} fields, no line end); the file looks truncated"
                )
            out.append((start, row))
    except InputError as exc:
        return str(exc).split(" is longer than")[0] + (
            " is longer than" if " is longer than" in str(exc) else ""
        )
    return out


def blockwise(tmp_path: Path, content: bytes, size: int, **fmt: str) -> object:
    from campaign_sync.csvio import read as csvread

    path = tmp_path / "f.csv"
    path.write_bytes(content)
    try:
        with read_csv(path, CsvFormat(**fmt)) as src:
            out: list[object] = [src.header]
            for batch in src.batches(size):
                width = len(src.header)
                assert batch.uniform == all(len(row) == width for row in batch.rows)
                out.extend((batch.line(i), row) for i, row in enumerate(batch.rows))
            return out
    except InputError as exc:
        message = str(exc)
        cut = message.find(" is longer than")
        return message if cut < 0 else message[:cut] + " is longer than"
    finally:
        assert csvread.MAX_LINE_CHARS  # (patched by the test)


PIECES = [b"a", b"b@x.de", b",", b";", b'"', b"\n", b"\r\n", b"\r", b"\xc3\xa4", b"\xff", b"\xc3",
          b"\x0c", "\u2028".encode(), b"\xef\xbb\xbf", b" ", b'""', b"\n\n"]  # fmt: skip


@given(
    parts=st.lists(st.sampled_from(PIECES), max_size=60),
    header=st.sampled_from(
        [
            b"email,a\n",
            b"email\n",
            b"email;a;b\n",
            b"\xef\xbb\xbfemail,a\n",
            b"email;a\r",
            b"\r\nemail\r\n",
        ]
    ),
    block=st.integers(1, 40),
    size=st.integers(1, 5),
    delimiter=st.sampled_from([",", ";"]),
    encoding=st.sampled_from(["utf-8", "latin-1"]),
)
# Once failed: the block reader took the short row on line 2 for a truncated last row.
@example([b"a", b"\n", b'"', b"\xc3"], b"email;a;b\n", 1, 2, ";", "utf-8")
@settings(
    max_examples=examples(400),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_blocks_read_like_lines(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    parts: list[bytes],
    header: bytes,
    block: int,
    size: int,
    delimiter: str,
    encoding: str,
) -> None:
    from campaign_sync.csvio import read as csvread

    monkeypatch.setattr(csvread, "BLOCK_BYTES", block)
    monkeypatch.setattr(csvread, "MAX_LINE_CHARS", 24)
    content = header + b"".join(parts)
    fmt = {"delimiter": delimiter, "encoding": encoding}
    expected = reference(content, 24, **fmt)
    assert blockwise(tmp_path, content, size, **fmt) == expected
    assert rows(tmp_path, content, **fmt) == expected if isinstance(expected, list) else True


def test_batches_number_rows_spanning_lines(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(b'email,n\na@x.de,"1\n2"\n\nb@x.de,3\nc@x.de,4\nd@x.de\n')
    with read_csv(path, CsvFormat()) as src:
        batches = list(src.batches(3))
    assert [(b.uniform, [b.line(i) for i in range(len(b.rows))]) for b in batches] == [
        (True, [2, 5]),  # the blank line 4 is left out
        (False, [6, 7]),  # d@x.de has one field
    ]
