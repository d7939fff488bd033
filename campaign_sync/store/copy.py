"""`store copy`: an SQLite store into an empty PostgreSQL store, proven complete.

How it stays safe:

* The source is read in one SQLite read transaction: every table comes from the same
  snapshot even if a job wrote meanwhile (jobs should still be stopped during a move, or the
  rows they write after the snapshot stay behind in the SQLite file).
* The target is written in one PostgreSQL transaction: creating the schema's tables, COPY of
  every table, the identity sequences moved past the copied ids, the clock floor in `meta`,
  and the verification. Any failure, a refusal or a mismatch rolls all of it back, so the
  target is left as it was: empty.
* "Empty" means the schema holds no tables at all, or a campaign-sync store whose every table
  (meta included) has no row. Anything else is refused before a row is written (exit 2).
* Proof: per table, the row count and a SHA-256 over a canonical text of every row in key
  order (see _Digest), computed on the SQLite side while copying and on the PostgreSQL side
  by reading the rows back inside the same transaction, before COMMIT. jsonb columns are
  compared by value: both sides' JSON is parsed and written again with sorted keys (jsonb
  reorders keys and spaces them its own way).

The tables and columns come from the SQLite store itself, so a table added by a later schema
step is copied (and checked against the target's columns) without a list to keep in step.

psycopg is reached only through store.postgres (its connection module hands out the driver).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import StoreError, StoreUnusable
from . import connect as connect_sqlite
from . import failure as sqlite_failure
from .base import is_url
from .postgres import NOW_SQL, connection, schema

if TYPE_CHECKING:
    import psycopg

# (what is being done, rows done, rows in all); called every PROGRESS_STEP rows and at the end.
Progress = Callable[[str, int, int], None]
PROGRESS_STEP = 5_000
_FETCH = 10_000  # rows per round trip when reading the copy back

# Columns that hold the store's own clock (not a partner's dates, which may lie anywhere,
# even in the future). Their newest value becomes meta.clock_floor: the PostgreSQL store's
# clock must never stamp a change earlier than what was copied, or a changes-only export
# whose watermark came from the old host would miss it.
CLOCK_COLUMNS: dict[str, tuple[str, ...]] = {
    "lists": ("created_at",),
    "recipients": ("created_at", "updated_at"),
    "blocklist": ("created_at", "modified_at"),
    "unsubscribers": ("changed_at",),
    "bounces": ("changed_at",),
    "jobs": ("first_seen",),
    "runs": ("started", "finished", "watermark"),
    "sends": ("created_at", "updated_at"),
    "erased": ("erased_at",),
    "erasure_secret": ("created_at",),
    "imported_files": ("imported_at",),
}
CLOCK_FLOOR_KEY = "clock_floor"
COPIED_AT_KEY = "copied_at"


@dataclass(frozen=True)
class Table:
    """One table as both sides hold it: columns in the source's order, the key to sort by."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    json_columns: frozenset[str] = frozenset()
    identity: str | None = None  # the id column whose sequence must move past the copy

    def select(self, *, pg: bool = False) -> str:
        """SELECT every column in key order (jsonb read as its text, so both sides parse)."""
        cols = ", ".join(
            f"{_quote(c)}::text" if pg and c in self.json_columns else _quote(c)
            for c in self.columns
        )
        order = ", ".join(_quote(c) for c in self.key)
        return f"SELECT {cols} FROM {_quote(self.name)} ORDER BY {order}"


@dataclass(frozen=True)
class TableCheck:
    """A table's proof: its row count and the SHA-256 of its canonical rows."""

    name: str
    rows: int
    sha256: str


@dataclass
class CopyReport:
    """What a finished (committed and verified) copy holds."""

    source: str
    target: str  # printable: never a password
    schema: str
    tables: list[TableCheck] = field(default_factory=list)
    clock_floor: str | None = None

    @property
    def rows(self) -> int:
        return sum(table.rows for table in self.tables)


class TargetNotEmpty(StoreUnusable):
    """The target already holds data: nothing is written (exit 2)."""


class CopyMismatch(StoreError):
    """The copy read back differs from the source: rolled back (exit 1)."""


def copy_store(
    source: str, url: str, schema_name: str, progress: Progress | None = None
) -> CopyReport:
    """Copy the SQLite store at `source` into the empty PostgreSQL store at `url`
    (`schema_name`), verify it, commit it; or raise with the target left as it was."""
    report = CopyReport(source, connection.display(url), schema_name)
    lite = _open_source(source)
    try:
        lite.execute("BEGIN")  # one snapshot for every table, held until the end
        tables, totals = _read_layout(lite, source)
        try:
            pg = connection.connect(url, schema_name)
        except StoreError as exc:
            raise _in_copy_words(exc) from None
        try:
            _copy_in_one_transaction(lite, pg, url, tables, totals, report, progress)
        finally:
            pg.close()
    finally:
        if lite.in_transaction:
            lite.execute("ROLLBACK")
        lite.close()
    return report


# The store layer's messages name the config keys and "the job"; here the operator typed
# options and runs a copy.
_COPY_WORDS = (
    ("`store_schema`", "--schema"),
    ("`store`", "--to"),
    ("run the job again", "run store copy again"),
)


def _in_copy_words(exc: StoreError) -> StoreError:
    text = str(exc)
    for theirs, ours in _COPY_WORDS:
        text = text.replace(theirs, ours)
    return type(exc)(text)


def _open_source(source: str) -> sqlite3.Connection:
    if is_url(source):
        raise StoreUnusable(
            "the config's `store` is not an SQLite file; store copy copies an SQLite store "
            "into PostgreSQL (point --config at the SQLite installation's config)"
        )
    lite = connect_sqlite(source, create=False)
    found = lite.execute("PRAGMA user_version").fetchone()[0]
    if found != schema.SCHEMA_VERSION:
        lite.close()
        raise StoreUnusable(
            f"store {source} has schema version {found}, but this campaign-sync writes "
            f"PostgreSQL stores of version {schema.SCHEMA_VERSION}; use the campaign-sync "
            "release that matches both"
        )
    return lite


def _read_layout(lite: sqlite3.Connection, source: str) -> tuple[list[Table], dict[str, int]]:
    """The source's tables (parents before the tables that reference them) and row counts."""
    try:
        names = [
            row[0]
            for row in lite.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        tables = [_source_table(lite, name) for name in _parents_first(lite, names)]
        totals = {
            t.name: int(lite.execute(f"SELECT count(*) FROM {_quote(t.name)}").fetchone()[0])
            for t in tables
        }
    except sqlite3.Error as exc:
        raise sqlite_failure("cannot read the store", source, exc) from None
    return tables, totals


def _parents_first(lite: sqlite3.Connection, names: list[str]) -> list[str]:
    """`names` in their order, except that a table comes after the tables its foreign keys
    name (a cycle of foreign keys is left as it comes: no order would help it)."""
    parents = {
        name: sorted({row[2] for row in lite.execute(f"PRAGMA foreign_key_list({_quote(name)})")})
        for name in names
    }
    ordered: list[str] = []

    def visit(name: str, seen: frozenset[str]) -> None:
        if name in ordered or name in seen or name not in parents:
            return
        for parent in parents[name]:
            visit(parent, seen | {name})
        ordered.append(name)

    for name in names:
        visit(name, frozenset())
    return ordered


def _source_table(lite: sqlite3.Connection, name: str) -> Table:
    info = lite.execute(f"PRAGMA table_info({_quote(name)})").fetchall()
    columns = tuple(row[1] for row in info)
    key = tuple(row[1] for row in sorted((r for r in info if r[5]), key=lambda r: r[5]))
    return Table(name, columns, key or columns)


def _copy_in_one_transaction(
    lite: sqlite3.Connection,
    pg: psycopg.Connection[Any],
    url: str,
    tables: list[Table],
    totals: dict[str, int],
    report: CopyReport,
    progress: Progress | None,
) -> None:
    psycopg = connection.driver()
    doing = "cannot prepare the target"
    try:
        with pg.transaction():
            _prepare_target(pg, url, report.schema)
            tables = _match_target(pg, tables, report.target)
            ticker = _Ticker(progress, sum(totals.values()))
            expected = []
            for table in tables:
                doing = f"cannot copy table {table.name} into"
                expected.append(_copy_table(lite, pg, table, report.source, ticker))
            doing = "cannot finish the copy in"
            _move_identities(pg, tables)
            report.clock_floor = _record_meta(pg, lite, tables, report.source)
            ticker.restart("verifying")
            for table, want in zip(tables, expected, strict=True):
                doing = f"cannot verify table {table.name} in"
                report.tables.append(_verify_table(pg, table, want, ticker))
            doing = "cannot commit the copy to"
    except psycopg.Error as exc:
        raise _copy_failure(doing, url, exc, lost=pg.broken or pg.closed) from None


def _copy_failure(doing: str, url: str, exc: Exception, *, lost: bool) -> StoreError:
    """The one line for a PostgreSQL error during the copy; the target stays as it was
    (the server rolls back a transaction whose session ended, too)."""
    where = connection.display(url)
    state = getattr(exc, "sqlstate", None) or ""
    if lost:
        return StoreError(
            f"{doing} {where}: the connection to the server was lost (it restarted, or the "
            "network failed); nothing was written to the target; run store copy again"
        )
    if state[:2] in ("22", "23"):  # data exception, integrity violation: a row that won't fit
        return StoreError(
            f"{doing} {where}: a row does not fit the PostgreSQL table "
            f"({type(exc).__name__}, SQLSTATE {state}); nothing was written to the target"
        )
    found = _in_copy_words(connection.failure(doing, url, exc))
    return type(found)(f"{found}; nothing was written to the target")


def _prepare_target(pg: psycopg.Connection[Any], url: str, schema_name: str) -> None:
    """Serialise with other copies and migrations, create the store's tables where the
    schema is bare, and refuse (TargetNotEmpty) a schema that holds anything."""
    pg.execute("SET LOCAL lock_timeout = '30s'")  # a job holding a table: fail, don't hang
    pg.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{schema_name}/migrate",))
    where = f"{connection.display(url)} (schema {schema_name})"
    if not schema.exists(pg):
        foreign = _relations(pg)
        if foreign:
            raise TargetNotEmpty(
                f"target {where} is not empty: it holds {_names(foreign)}, which are not a "
                "campaign-sync store; choose another --schema"
            )
    try:
        schema.migrate(pg, url, schema_name)  # its steps become savepoints of this transaction
    except StoreError as exc:
        raise _in_copy_words(exc) from None
    relations = [name for name in _relations(pg, tables_only=True) if name != "schema_version"]
    pg.execute(f"LOCK TABLE {', '.join(map(_quote, relations))} IN EXCLUSIVE MODE")
    filled = [
        name for name in relations if _one(pg, f"SELECT EXISTS (SELECT 1 FROM {_quote(name)})")
    ]
    if filled:
        raise TargetNotEmpty(
            f"target {where} is not empty: {_names(filled)} already hold rows; store copy "
            "only fills an empty store (choose another --schema, or empty this one)"
        )


def _relations(pg: psycopg.Connection[Any], *, tables_only: bool = False) -> list[str]:
    kinds = ("r", "p") if tables_only else ("r", "p", "v", "m", "S", "f")
    rows = pg.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relkind = ANY(%s) ORDER BY c.relname",
        (list(kinds),),
    ).fetchall()
    return [str(row[0]) for row in rows]


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _one(pg: psycopg.Connection[Any], sql: str, params: Sequence[Any] = ()) -> Any:
    row = pg.execute(sql, params).fetchone()
    return row[0] if row else None


def _match_target(pg: psycopg.Connection[Any], tables: list[Table], where: str) -> list[Table]:
    """The source's tables with the target's column types attached (jsonb, identity); a
    table or column the target lacks is StoreUnusable: the two schemas differ."""
    rows = pg.execute(
        "SELECT table_name, column_name, data_type, is_identity FROM information_schema.columns"
        " WHERE table_schema = current_schema()"
    ).fetchall()
    target: dict[str, dict[str, tuple[str, str]]] = {}
    for table_name, column, data_type, is_identity in rows:
        target.setdefault(table_name, {})[column] = (data_type, is_identity)
    matched = []
    for table in tables:
        columns = target.get(table.name, {})
        missing = [c for c in table.columns if c not in columns]
        if missing:
            raise StoreUnusable(
                f"target {where} has no {'column' if columns else 'table'} "
                f"{table.name}{'.' + missing[0] if columns else ''} that the SQLite store has; "
                "the two schemas differ"
            )
        json_columns = frozenset(c for c in table.columns if columns[c][0] == "jsonb")
        identity = next((c for c in table.columns if columns[c][1] == "YES"), None)
        matched.append(Table(table.name, table.columns, table.key, json_columns, identity))
    return matched


class _Ticker:
    """Counts rows for the progress callback, calling it every PROGRESS_STEP rows."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress = progress
        self.total = total
        self.what = "copying"
        self.done = 0

    def restart(self, what: str) -> None:
        self.what, self.done = what, 0
        self.tick(0)

    def tick(self, rows: int) -> None:
        self.done += rows
        if self.progress is not None:
            self.progress(self.what, self.done, self.total)

    def counted(self, rows: Iterable[Any]) -> Iterator[Any]:
        """`rows` as they come, ticking every PROGRESS_STEP rows and at the end."""
        pending = 0
        for row in rows:
            yield row
            pending += 1
            if pending == PROGRESS_STEP:
                self.tick(pending)
                pending = 0
        self.tick(pending)


# One encoder for every row: json.dumps with options builds a new encoder per call, which
# costs more than the encoding itself at a million rows.
_CANONICAL_JSON = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))
_JSON = json.JSONDecoder()


class _Digest:
    """Row count and SHA-256 over each row's canonical text: the repr of the tuple of its
    values in column order (ints, str and None read the same from either driver), each JSON
    column replaced by its value re-written compact with sorted keys; one row a line."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.json_at = [i for i, c in enumerate(table.columns) if c in table.json_columns]
        self.hash = hashlib.sha256()
        self.rows = 0

    def add(self, row: Sequence[Any]) -> None:
        if self.json_at:
            values = list(row)
            for i in self.json_at:
                if values[i] is not None:
                    values[i] = _CANONICAL_JSON.encode(self._parse(values[i], row))
            row = tuple(values)
        self.hash.update(repr(tuple(row)).encode("utf-8", "backslashreplace") + b"\n")
        self.rows += 1

    def _parse(self, value: Any, row: Sequence[Any]) -> Any:
        try:
            return _JSON.decode(value)
        except (TypeError, ValueError):
            key = {c: row[self.table.columns.index(c)] for c in self.table.key}
            raise StoreError(
                f"table {self.table.name}: the row {key} holds a value that is not JSON where "
                "the target wants JSON; correct it in the SQLite store and copy again "
                "(nothing was written to the target)"
            ) from None

    def check(self) -> TableCheck:
        return TableCheck(self.table.name, self.rows, self.hash.hexdigest())


def _copy_table(
    lite: sqlite3.Connection,
    pg: psycopg.Connection[Any],
    table: Table,
    source: str,
    ticker: _Ticker,
) -> TableCheck:
    """COPY the table's rows in key order, digesting each as it goes."""
    digest = _Digest(table)
    columns = ", ".join(map(_quote, table.columns))
    with (
        pg.cursor() as cursor,
        cursor.copy(f"COPY {_quote(table.name)} ({columns}) FROM STDIN") as copy,
    ):
        for row in ticker.counted(_source_rows(lite, table, source)):
            digest.add(row)
            copy.write_row(row)
    return digest.check()


def _source_rows(lite: sqlite3.Connection, table: Table, source: str) -> Iterator[Any]:
    try:
        yield from lite.execute(table.select())
    except sqlite3.Error as exc:
        raise sqlite_failure(f"cannot read table {table.name} of the store", source, exc) from None


def _move_identities(pg: psycopg.Connection[Any], tables: list[Table]) -> None:
    """Identity sequences continue after the copied ids (ids were copied as they were)."""
    for table in tables:
        if table.identity is None:
            continue
        name, column = _quote(table.name), _quote(table.identity)
        pg.execute(
            f"SELECT setval(pg_get_serial_sequence(%s, %s), coalesce(max({column}), 0) + 1,"
            f" false) FROM {name}",
            (name, table.identity),
        )


def _record_meta(
    pg: psycopg.Connection[Any], lite: sqlite3.Connection, tables: list[Table], source: str
) -> str | None:
    """Write the clock floor (newest store-clock timestamp copied) and when the copy ran,
    by the server's clock: the PostgreSQL store's clock from now on."""
    floor = _clock_floor(lite, tables, source)
    pg.execute(f"INSERT INTO meta (key, value) VALUES (%s, {NOW_SQL})", (COPIED_AT_KEY,))
    if floor is not None:
        pg.execute("INSERT INTO meta (key, value) VALUES (%s, %s)", (CLOCK_FLOOR_KEY, floor))
    return floor


def _clock_floor(lite: sqlite3.Connection, tables: list[Table], source: str) -> str | None:
    parts = [
        f"SELECT max({_quote(column)}) AS t FROM {_quote(table.name)}"
        for table in tables
        for column in CLOCK_COLUMNS.get(table.name, ())
        if column in table.columns
    ]
    if not parts:
        return None
    try:
        row = lite.execute(f"SELECT max(t) FROM ({' UNION ALL '.join(parts)})").fetchone()
    except sqlite3.Error as exc:
        raise sqlite_failure("cannot read the store", source, exc) from None
    return str(row[0]) if row and row[0] is not None else None


def _verify_table(
    pg: psycopg.Connection[Any], table: Table, want: TableCheck, ticker: _Ticker
) -> TableCheck:
    """Read the table back from the target in key order and compare with the source's."""
    digest = _Digest(table)
    with pg.cursor(name=f"verify_{table.name}") as cursor:
        cursor.itersize = _FETCH
        cursor.execute(table.select(pg=True))
        for row in ticker.counted(cursor):
            digest.add(row)
    got = digest.check()
    if got != want:
        what = (
            f"{want.rows} rows in the SQLite store, {got.rows} in the target"
            if got.rows != want.rows
            else f"the same {got.rows} rows by count, but their contents differ (checksums)"
        )
        raise CopyMismatch(
            f"copy not verified: table {table.name} has {what}; nothing was committed, the "
            "target stays as it was"
        )
    return got


def _quote(identifier: str) -> str:
    """A table or column name as an SQL identifier (the same quoting on both sides)."""
    return '"' + identifier.replace('"', '""') + '"'
