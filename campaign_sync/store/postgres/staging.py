"""Staging an import's checked rows in PostgreSQL temp tables, and what every import type
does with them: the last row of each key kept, actions decided, counted, restricted by mode.

The rows reach the server through COPY, as blocks of COPY's text format made a column at
a time (Python builds each block with a few C-level joins, no per-row driver call), into
`incoming_raw`, which numbers them in file order. One DISTINCT ON pass then keeps the last
row of each key in `incoming`. Both tables are dropped at the end of the transaction, which
the caller owns: a failure anywhere leaves nothing behind.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import TYPE_CHECKING, Any

from ...errors import InputError

if TYPE_CHECKING:
    import psycopg

# Rows per COPY block: ~1 MB of text for a typical recipient row, few enough Python objects
# at a time to keep the client's memory flat.
BLOCK_ROWS = 8192
_NULL = "\\N"
# What COPY's text format escapes inside a value (a backslash and the row/column separators).
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_SPECIAL = ("\\", "\t", "\n", "\r")
# A JSON \u0000 escape: preceded by an even number of backslashes (none, or escaped ones).
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def stage(
    conn: psycopg.Connection[Any],
    columns: str,
    key: list[str],
    names: list[str],
    rows: Iterable[Sequence[Any]],
) -> int:
    """Stage `rows` into the temp table `incoming`, keeping the last row of each key.

    `columns` is the table's column definitions, `key` the column(s) identifying an entry,
    `names` the columns each row of `rows` gives. Returns the number of distinct keys.
    """
    stage_raw(conn, columns, names, rows)
    return cluster(conn, columns, key, names)


def stage_raw(
    conn: psycopg.Connection[Any], columns: str, names: list[str], rows: Iterable[Sequence[Any]]
) -> None:
    """COPY the rows, in file order, into `incoming_raw` (its `n` counts them from 1)."""
    drop(conn)
    conn.execute(
        f"CREATE TEMP TABLE incoming_raw (n bigint GENERATED ALWAYS AS IDENTITY, {columns}) "
        "ON COMMIT DROP"
    )
    with conn.cursor().copy(f"COPY incoming_raw ({', '.join(names)}) FROM STDIN") as copy:
        for block in text_blocks(rows):
            copy.write(block)
    # Temp tables are never analysed automatically; the merges' join plans need the figures.
    conn.execute("ANALYZE incoming_raw")


def text_blocks(rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    """The rows as COPY text-format blocks: tab-separated, NULL as \\N, values escaped."""
    source = iter(rows)
    while chunk := list(islice(source, BLOCK_ROWS)):
        columns = [_column(values) for values in zip(*chunk, strict=True)]
        yield "\n".join(map("\t".join, zip(*columns, strict=True))) + "\n"


def _column(values: tuple[Any, ...]) -> Sequence[str]:
    """One column of a block as COPY text. Plain text columns without a character to escape,
    the common case, go through as they are (the check is one scan of their joined text)."""
    if all(type(value) is str for value in values):
        texts: Sequence[str] = values
        nulls = False
    else:
        texts = [_NULL if value is None else str(value) for value in values]
        nulls = True
    joined = "".join(texts)
    if "\x00" in joined or "u0000" in joined:
        _check_holdable(values)
    if not any(char in joined for char in _SPECIAL):
        return texts
    if not nulls:
        return [text.translate(_ESCAPES) for text in texts]
    return [
        text if value is None else text.translate(_ESCAPES)
        for value, text in zip(values, texts, strict=True)
    ]


def _check_holdable(values: Iterable[Any]) -> None:
    """PostgreSQL cannot store a NUL character in text, nor its escape \\u0000 in jsonb
    (SQLite can): the file is refused in words of its own, nothing applied."""
    for value in values:
        if isinstance(value, str) and ("\x00" in value or _JSON_NUL.search(value)):
            raise InputError(
                "the file holds a NUL character (\\0) in a value, which a PostgreSQL store "
                "cannot hold; nothing was applied; remove it from the file"
            )


def cluster(conn: psycopg.Connection[Any], columns: str, key: list[str], names: list[str]) -> int:
    """Keep the last staged row of each key in `incoming` (its `action` NULL, for the import
    type to decide); returns how many keys there are."""
    # `action` has the same type (collation included) in every import's `incoming`: psycopg
    # prepares a statement run often on a connection, and a prepared query whose result
    # type changed fails ("cached plan must not change result type").
    conn.execute(f'CREATE TEMP TABLE incoming ({columns}, action text COLLATE "C") ON COMMIT DROP')
    listed, keys = ", ".join(names), ", ".join(key)
    cursor = conn.execute(
        f"INSERT INTO incoming ({listed}) SELECT DISTINCT ON ({keys}) {listed} "
        f"FROM incoming_raw ORDER BY {keys}, n DESC"
    )
    conn.execute("DROP TABLE incoming_raw")
    conn.execute("ANALYZE incoming")
    return cursor.rowcount


def tally(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """How many staged rows have each decided action (in the order SQLite reports them)."""
    found = conn.execute("SELECT action, count(*) FROM incoming GROUP BY action ORDER BY action")
    return {action: int(number) for action, number in found}


def restrict_to_mode(conn: psycopg.Connection[Any], mode: str) -> None:
    """add-only leaves existing entries alone; update-only ignores new ones."""
    if mode == "add-only":
        conn.execute("UPDATE incoming SET action = 'ignored' WHERE action = 'updated'")
    elif mode == "update-only":
        conn.execute("UPDATE incoming SET action = 'ignored' WHERE action = 'inserted'")


def drop(conn: psycopg.Connection[Any]) -> None:
    """Drop the staging tables now (the transaction's end would too)."""
    # Looked up first: DROP … IF EXISTS of a missing table sends the client a notice.
    found = conn.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = pg_my_temp_schema() "
        "AND relname IN ('incoming', 'incoming_raw')"
    ).fetchall()
    if found:
        conn.execute("DROP TABLE " + ", ".join(f"pg_temp.{name}" for (name,) in found))
