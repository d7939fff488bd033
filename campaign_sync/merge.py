"""Merging a parsed CSV file into the store.

The caller owns the transaction: everything here runs inside one, so a failure at any
point (a limit, a broken line, a crash) leaves the store exactly as it was. A dry run is
the same work rolled back, so its counts are exactly a real run's.

Recipient files are checked a batch of rows at a time, staged into a temporary table and
then merged with a handful of set-based statements: memory stays bounded whatever the
file size, and SQLite does the sorting and joins instead of Python.
"""

from __future__ import annotations

import csv
import gc
import json
import operator
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import tzinfo
from functools import cached_property
from itertools import chain, compress
from pathlib import Path
from typing import Any

from . import store
from .config import FIELD_NAME, FILE_FIELDS, REQUIRED_FIELDS, RESERVED_FIELDS, JobConfig, Limit
from .core import addresses, workdir
from .core.dates import latest_allowed, parse_date, parse_dates
from .csvio.read import CsvRows
from .errors import InputError, LimitExceeded
from .statuses import unsubscription_wins

# Defaults when a job sets no limit: a mostly broken file or a "sync" that empties a list
# must not go through silently. --force (removals) or an explicit limit overrides.
DEFAULT_MAX_REJECTS = Limit(10, percent=True)
DEFAULT_MAX_REMOVALS = Limit(10, percent=True)
FIRST_REJECTS = 10
# SQLite page caches during an import, in KiB (see stage_raw).
MAIN_CACHE_KIB = 32 << 10
TEMP_CACHE_KIB = 16 << 10


@dataclass
class MergeContext:
    conn: sqlite3.Connection
    job: JobConfig
    tz: tzinfo
    work_dir: Path
    run_id: int | None
    force: bool = False
    now: str = field(default_factory=store.now)
    # What the run has seen once its rows are staged (set by check_rejects): a run that a
    # limit stops still reports its counts and its rejects file.
    counts: Counter[str] | None = None
    rejects: Rejects | None = None
    # The lists the configuration's jobs name (some perhaps not in the store yet).
    configured_lists: frozenset[str] = frozenset()

    @cached_property
    def latest(self) -> str:
        """The latest date a partner file may give this run (stored text; dates.CLOCK_SKEW)."""
        return latest_allowed(self.now)


class Rejects:
    """Rejected rows, written as they come to a private CSV: line, reason, original cells."""

    def __init__(self, ctx: MergeContext, header: list[str]):
        self.ctx = ctx
        self.header = header
        self.count = 0
        self.first: list[dict[str, Any]] = []
        self.path: Path | None = None
        self._file: Any = None
        self._writer: Any = None

    def add(self, line: int, row: list[str], reason: str) -> None:
        self.count += 1
        if len(self.first) < FIRST_REJECTS:
            self.first.append({"line": line, "reason": reason, "row": row})
        if self._writer is None:
            self.path = workdir.rejects_file(self.ctx.work_dir, self.ctx.job.name, self.ctx.run_id)
            self._file = open(self.path, "w", encoding="utf-8", newline="")  # noqa: SIM115
            self._writer = csv.writer(self._file, delimiter=self.ctx.job.format.delimiter)
            self._writer.writerow(["line", "reason", *self.header])
        self._writer.writerow([line, reason, *row])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    @contextmanager
    def collecting(self) -> Iterator[Rejects]:
        """Close the file after staging; drop it if the file as a whole turned out broken
        (the run fails naming the line, and half a rejects file would only mislead)."""
        try:
            yield self
        except InputError:
            self.close()
            if self.path is not None:
                workdir.remove_quietly(self.path)
                self.path = None
            raise
        finally:
            self.close()


def resolve_columns(src: CsvRows, job: JobConfig, name: str) -> dict[str, int]:
    """Map field names to column positions, matching headers case- and space-insensitively.

    A file without a header line has the job's list of column fields. With `columns`
    configured, only mapped headers are used. Without it, every header is a field name: for
    recipients each must look like one; for the other files only their fields are picked
    and any other column is ignored. A field the job has a default for may be missing.
    """
    if not src.header_line:
        return {field: index for index, field in enumerate(job.column_fields) if field}
    header, known = src.header, FILE_FIELDS.get(job.type)
    mapping = {key.strip().lower(): target for key, target in job.columns.items()}
    positions: dict[str, int] = {}
    for index, raw in enumerate(header):
        key = raw.strip().lower()
        if mapping:
            target = mapping.get(key)
            if target is None:
                continue  # unmapped columns are ignored
        else:
            target = key
            if known is not None and target not in known:
                continue
            if not FIELD_NAME.match(target):
                raise InputError(
                    f"{name}: column {index + 1} '{raw}' is not a field name; map it in the "
                    f"job's columns (e.g. columns: {{'{raw}': some_field}})"
                )
        if target in positions:
            raise InputError(
                f"{name}: two columns give the field '{target}' (columns {positions[target] + 1} "
                f"and {index + 1}); rename or unmap one of them"
            )
        positions[target] = index
    for key in REQUIRED_FIELDS[job.type]:
        if key not in positions and key not in job.defaults:
            raise InputError(_no_column(src, job, key, name))
    return positions


def _no_column(src: CsvRows, job: JobConfig, field_name: str, name: str) -> str:
    """Why a file has no column for a field it needs: what the job maps, what the file has."""
    where = f"{name}: line {src.header_line}: "
    header = ", ".join(src.header)[:200]
    mapped = [key for key, target in job.columns.items() if target == field_name]
    if mapped:
        return where + (
            f"no column '{mapped[0]}', which the job's columns map to '{field_name}' (header: "
            f"{header}); correct the header's name in columns, or the file"
        )
    example = "E-Mail" if field_name == "email" else field_name.capitalize()
    default = ""
    if field_name != REQUIRED_FIELDS[job.type][0]:  # (the row's key has no default)
        default = f", or give every row one with defaults: {{{field_name}: …}}"
    return where + (
        f"no '{field_name}' column (header: {header}); map yours in the job's columns, "
        f"e.g. columns: {{{example}: {field_name}}}{default}"
    )


def cell(at: int | None, default: str | None) -> Callable[[list[str]], str] | None:
    """How to read a field from a row: its cell, or the job's default where the cell is empty
    or the file has no such column (`at` None); None when there is neither."""
    if at is None:
        return None if default is None else (lambda row: default)
    if default is None:
        return operator.itemgetter(at)
    return lambda row: row[at] if row[at].strip() else default


def check_limit(count: int, total: int, limit: Limit, what: str, hint: str) -> None:
    if count > limit.allowed(total):
        raise LimitExceeded(f"{count} of {total} {what}, more than the limit {limit}; {hint}")


def check_rejects(ctx: MergeContext, counts: Counter[str], rejects: Rejects) -> None:
    """Fail the run (nothing applied) when more rows were rejected than max_rejects allows."""
    counts["rejected"] = rejects.count
    ctx.counts, ctx.rejects = counts, rejects
    check_limit(
        rejects.count,
        counts["read"],
        ctx.job.max_rejects or DEFAULT_MAX_REJECTS,
        "rows were rejected",
        f"nothing was applied (max_rejects; the reasons are in {rejects.path})",
    )


class RowRejected(ValueError):
    """A row that cannot be used; the message is its reason in the rejects file."""


def stage_checked(
    ctx: MergeContext,
    src: CsvRows,
    counts: Counter[str],
    rejects: Rejects,
    check: Callable[[list[str]], tuple[Any, ...]],
    table: tuple[str, list[str], list[str]],
) -> int:
    """Check each data row, stage the good ones into `incoming`, reject the rest.

    `check` turns a row's cells into the values to stage or raises RowRejected; `table` is
    stage()'s (columns, key, names). Counts read, rejected and duplicates, and fails the run
    above max_rejects. Returns the number of distinct keys staged.
    """
    width = len(src.header)

    def checked_rows() -> Iterator[tuple[Any, ...]]:
        for line, row in src.rows:
            counts["read"] += 1
            if len(row) != width:
                rejects.add(line, row, src.width_problem(len(row)))
                continue
            try:
                yield check(row)
            except RowRejected as exc:
                rejects.add(line, row, str(exc))

    with rejects.collecting():
        distinct = stage(ctx.conn, *table, checked_rows())
    check_rejects(ctx, counts, rejects)
    counts["duplicates"] = counts["read"] - rejects.count - distinct
    return distinct


def stage(
    conn: sqlite3.Connection, columns: str, key: list[str], names: list[str], rows: Iterable[Any]
) -> int:
    """Stage `rows` into the temp table `incoming`, keeping the last row of each key.

    `columns` is the table's column definitions, `key` the column(s) identifying an entry,
    `names` the columns each row of `rows` gives. Returns the number of distinct keys.
    """
    stage_raw(conn, columns, names, rows)
    return cluster(conn, columns, key, names)


def stage_raw(
    conn: sqlite3.Connection, columns: str, names: list[str], rows: Iterable[Any]
) -> None:
    """Append the rows as they come to `incoming_raw` (cheap), for cluster() to sort once."""
    # Page caches for the import, measured on 1M rows: the temp database's default (2 MB)
    # made staging spill to disk and 2x slower; 16 MiB does not. With the store's 64 MiB
    # main cache plus the sorter the process peaked at 192 MB; 32 MiB for main brings the
    # peak to ~115 MB at the same CPU time. (The connection is the run's own.)
    conn.execute(f"PRAGMA main.cache_size = -{MAIN_CACHE_KIB}")
    conn.execute(f"PRAGMA temp.cache_size = -{TEMP_CACHE_KIB}")
    for table in ("incoming", "incoming_raw"):
        conn.execute(f"DROP TABLE IF EXISTS temp.{table}")
    conn.execute(f"CREATE TEMP TABLE incoming_raw ({columns})")
    marks = ", ".join("?" * len(names))
    with _collector_paused():
        conn.executemany(f"INSERT INTO incoming_raw ({', '.join(names)}) VALUES ({marks})", rows)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cycle collector while rows stream through: they are millions of
    short-lived objects without cycles, and its passes over them found nothing but cost
    ~6% of a million-row import."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def cluster(
    conn: sqlite3.Connection,
    columns: str,
    key: list[str],
    names: list[str],
    *,
    action: str = "NULL",
    joins: str = "",
    params: dict[str, Any] | None = None,
) -> int:
    """Sort `incoming_raw` into `incoming`, clustered on the key; returns its row count.

    One sorted pass instead of a million random B-tree inserts (~2x faster), and the
    statements after it walk `incoming` in the order of the store's own primary keys.
    `action` (SQL over the raw row `i` and `joins`) decides each row's action in the same
    pass.
    """
    conn.execute(
        f"CREATE TEMP TABLE incoming ({columns}, action TEXT, PRIMARY KEY ({', '.join(key)})) "
        "WITHOUT ROWID"
    )
    # Sorted by key and then file order, INSERT OR REPLACE keeps the last row of a key.
    # (Sorting the raw rows before the join, for key-order lookups, measured 1.5x more CPU
    # than looking up in file order and sorting the result.)
    listed = ", ".join(names)
    conn.execute(
        f"INSERT OR REPLACE INTO incoming ({listed}, action) "
        f"SELECT {', '.join('i.' + name for name in names)}, {action} "
        f"FROM incoming_raw AS i {joins} "
        f"ORDER BY {', '.join('i.' + name for name in key)}, i.rowid",
        params or {},
    )
    conn.execute("DROP TABLE temp.incoming_raw")
    return int(conn.execute("SELECT count(*) FROM incoming").fetchone()[0])


def tally(conn: sqlite3.Connection, counts: Counter[str]) -> None:
    """Add the staged rows' decided actions to the counts."""
    for action, number in conn.execute("SELECT action, count(*) FROM incoming GROUP BY action"):
        counts[action] += number


def restrict_to_mode(conn: sqlite3.Connection, mode: str) -> None:
    """add-only leaves existing entries alone; update-only ignores new ones."""
    if mode == "add-only":
        conn.execute("UPDATE incoming SET action = 'ignored' WHERE action = 'updated'")
    elif mode == "update-only":
        conn.execute("UPDATE incoming SET action = 'ignored' WHERE action = 'inserted'")


def guard_removals(ctx: MergeContext, members: int, removed: int, distinct: int, what: str) -> None:
    """Refuse a replace that empties or guts `what` (a list, the blocklist) without --force."""
    if ctx.force:
        return
    if distinct == 0 and members:
        raise LimitExceeded(
            f"the file has no valid data rows: replace would empty {what} ({members} entries); "
            "nothing was applied (use --force if that is intended)"
        )
    check_limit(
        removed,
        members,
        ctx.job.max_removals or DEFAULT_MAX_REMOVALS,
        f"entries of {what} would be removed",
        "nothing was applied (max_removals; use --force if that is intended)",
    )


def zero(counts: Counter[str], *names: str) -> None:
    """Report these counts even when nothing happened, so every run shows the same keys."""
    for name in ("read", "inserted", "updated", "unchanged", "rejected", "duplicates", *names):
        counts.setdefault(name, 0)


def email_problem(email: str) -> str | None:
    """Why a normalised address cannot be used, as a rejects-file reason; None if it can.

    The address check's own reasons ("missing @", "invalid local part (…)") are specific
    enough next to the original row in the rejects file.
    """
    if not email:
        return "empty email address"
    return addresses.check(email)


def dated(text: str, ctx: MergeContext, what: str) -> str | None:
    """A file's date cell as stored text, None if empty; RowRejected names the column."""
    if not text.strip():
        return None
    try:
        return parse_date(text, ctx.job.format.date_format, ctx.tz, ctx.latest)
    except (ValueError, OverflowError) as exc:
        raise RowRejected(f"{what}: {exc}") from None


# --------------------------------------------------------------------------- recipients


def merge_recipients(ctx: MergeContext, src: CsvRows, name: str) -> tuple[Counter[str], Rejects]:
    job, conn = ctx.job, ctx.conn
    assert job.list is not None
    columns = resolve_columns(src, job, name)
    reserved = sorted(set(columns) & set(RESERVED_FIELDS))
    if reserved:  # (configured columns cannot give one: a file's own header did)
        raise InputError(
            f"{name}: line {src.header_line}: '{reserved[0]}' is managed by campaign-sync, not "
            "by a file; list the headers to import in the job's columns to leave it out"
        )
    email_at = columns.pop("email")
    doi = cell(columns.pop("doi_confirmed_at", None), job.defaults.get("doi_confirmed_at"))
    counts: Counter[str] = Counter()
    rejects = Rejects(ctx, src.header)
    blocklist = load_blocklist(conn)
    stager = _RecipientStager(ctx, src, rejects, email_at, doi, columns)
    stager.blocklist = blocklist if len(blocklist) else None

    columns = "email TEXT NOT NULL, doi TEXT, blocked TEXT, fields TEXT NOT NULL"
    staged = ["email", *(["doi"] if doi is not None else [])]
    staged += [*(["blocked"] if stager.blocklist else []), "fields"]
    with rejects.collecting():
        stage_raw(conn, columns, staged, chain.from_iterable(stager.batches()))
    counts["read"] = stager.read
    check_rejects(ctx, counts, rejects)

    list_id = store.list_id(conn, job.list, create=True)
    assert list_id is not None
    params = {
        "list_id": list_id,
        "list": job.list,
        "mode": job.mode,
        "now": ctx.now,
        "latest": ctx.latest,
    }
    # An empty list has nothing to remove and nothing to compare with.
    direct = _can_insert_directly(conn, params)
    classify = _insert_directly if direct else _classify
    distinct = classify(conn, params, counts)
    counts["duplicates"] = counts["read"] - rejects.count - distinct
    if job.mode == "replace":
        members, removed = (0, 0) if direct else _members_and_removed(conn, list_id)
        counts["removed"] = removed
        guard_removals(ctx, members, removed, distinct, f"list '{job.list}'")
    if not direct:
        _apply(conn, params, counts, replace=job.mode == "replace")
    conn.execute("DROP TABLE IF EXISTS temp.incoming")
    conn.execute("DROP TABLE IF EXISTS temp.incoming_raw")
    zero(counts, "suppressed_unsubscribed", "suppressed_blocklisted")
    if job.mode in ("add-only", "update-only"):
        counts.setdefault("ignored", 0)
    return counts, rejects


def _can_insert_directly(conn: sqlite3.Connection, params: dict[str, Any]) -> bool:
    """Whether every staged address that is not blocklisted is simply inserted: the list has
    no record at all (not even a removed one), the mode inserts, and no staged address is
    unsubscribed (whose row might then be suppressed and another row of it not)."""
    if params["mode"] == "update-only":
        return False
    return not conn.execute(
        """SELECT EXISTS (SELECT 1 FROM recipients WHERE list_id = :list_id)
               OR EXISTS (SELECT 1 FROM incoming_raw AS i JOIN unsubscribers AS u
                          ON u.email = i.email AND u.list IN ('', :list))""",
        params,
    ).fetchone()[0]


def _insert_directly(conn: sqlite3.Connection, params: dict[str, Any], counts: Counter[str]) -> int:
    """The first import into a list: sorted once, straight from the stage into the store.

    Duplicates (sorted by address, then file order) update the row just inserted, so the
    last one wins; a blocklisted address has the same verdict in all its rows. Counts
    come from the result. Returns the number of distinct addresses.
    """
    conn.execute(
        """
        INSERT INTO recipients
            (list_id, email, status, fields, doi_confirmed_at, created_at, updated_at)
        SELECT :list_id, email, 'active', fields, doi, :now, :now FROM incoming_raw
        WHERE blocked IS NULL ORDER BY email, rowid
        ON CONFLICT (list_id, email) DO UPDATE SET
            fields = excluded.fields, doi_confirmed_at = excluded.doi_confirmed_at
        """,
        params,
    )
    inserted, blocked = conn.execute(
        """SELECT (SELECT count(*) FROM recipients WHERE list_id = :list_id),
                  (SELECT count(DISTINCT email) FROM incoming_raw WHERE blocked IS NOT NULL)""",
        params,
    ).fetchone()
    counts["inserted"] += inserted
    counts["suppressed_blocklisted"] += blocked
    return int(inserted + blocked)


_PAYLOAD = ("doi", "blocked", "fields")


def _classify(conn: sqlite3.Connection, params: dict[str, Any], counts: Counter[str]) -> int:
    """Decide each distinct address's action into `incoming`, in address order; count them.

    The stage is grouped by address (the last row of each, by rowid, wins) before it is
    joined to the store, so the lookups walk the store's B-tree in key order instead of
    jumping around it in file order. Returns the number of distinct addresses.
    """
    conn.execute("DROP TABLE IF EXISTS temp.incoming")
    conn.execute(
        "CREATE TEMP TABLE incoming "
        "(email TEXT NOT NULL, doi TEXT, blocked TEXT, fields TEXT, action TEXT)"
    )
    # Most rows of a regular re-import are unchanged and need nothing but their key and
    # their count: leaving their other cells out writes a fraction of the bytes.
    conn.execute(
        f"""
        INSERT INTO incoming
        SELECT email, {", ".join(f"iif(action = 'unchanged', NULL, {c})" for c in _PAYLOAD)},
            action
        FROM (SELECT i.email, i.doi, i.blocked, i.fields, {_action_sql("i.fields")} AS action
              FROM (SELECT max(rowid), email, doi, blocked, fields FROM incoming_raw
                    GROUP BY email) AS i
              LEFT JOIN recipients AS r ON r.list_id = :list_id AND r.email = i.email)
        """,
        params,
    )
    conn.execute("DROP TABLE temp.incoming_raw")
    before = sum(counts.values())
    tally(conn, counts)
    return sum(counts.values()) - before  # every distinct address has one action


class _RecipientStager:
    """The rows of a recipient file as tuples to stage: (email, [doi], [blocked], fields).

    The hot loop of a million-row import, done a batch of rows at a time with C calls over
    whole columns (map, itemgetter, one regex call per address) instead of Python steps
    per row; a row that a check rejects goes to the rejects file, in file order, and is
    left out. `fields` is the row's JSON object, spelled exactly as SQLite's json_object()
    would (the unchanged check compares the text first): made with a %-template when no
    cell of the batch needs trimming or escaping, the common case, else by json.dumps.
    The job's defaults fill empty cells and give fields the file has no column for.
    """

    def __init__(
        self,
        ctx: MergeContext,
        src: CsvRows,
        rejects: Rejects,
        email_at: int,
        doi: Callable[[list[str]], str] | None,
        fields: dict[str, int],
    ) -> None:
        self.ctx, self.src, self.rejects = ctx, src, rejects
        self.email = operator.itemgetter(email_at)
        self.doi = doi
        defaults = {k: v for k, v in ctx.job.defaults.items() if k != "doi_confirmed_at"}
        self.names = [*fields, *(name for name in defaults if name not in fields)]
        assert all(FIELD_NAME.match(name) for name in self.names)
        positions = list(fields.values())
        self.pick: Callable[[list[str]], tuple[str, ...]] = (
            operator.itemgetter(*positions)
            if len(positions) > 1
            else lambda row: tuple(row[index] for index in positions)
        )
        if defaults:  # (a Python step per cell, only for jobs with defaults)
            getters = [cell(fields.get(name), defaults.get(name)) for name in self.names]
            self.pick = lambda row: tuple(get(row) for get in getters)  # type: ignore[misc]
        self.template = "{" + ",".join(f'"{name}":"%s"' for name in self.names) + "}"
        self.blocklist: addresses.Blocklist | None = None
        self.read = 0

    def batches(self) -> Iterator[Iterator[tuple[Any, ...]]]:
        width = len(self.src.header)
        for batch in self.src.batches():
            rows = batch.rows
            self.read += len(rows)
            problems: list[tuple[int, str]] = []
            if batch.uniform:
                positions: list[int] | None = None
                good = rows
            else:
                positions = [i for i, row in enumerate(rows) if len(row) == width]
                problems += [
                    (i, self.src.width_problem(len(row)))
                    for i, row in enumerate(rows)
                    if len(row) != width
                ]
                good = [rows[i] for i in positions]
            emails = addresses.normalise_all(list(map(self.email, good)))
            found = [
                (i, "empty email address" if not emails[i] else reason)
                for i, reason in addresses.check_all(emails)
            ]
            columns: list[Any] = [emails]
            if self.doi is not None:
                dois, bad = parse_dates(
                    list(map(self.doi, good)),
                    self.ctx.job.format.date_format,
                    self.ctx.tz,
                    self.ctx.latest,
                )
                rejected = {i for i, _ in found}
                found += [(i, f"doi_confirmed_at: {r}") for i, r in bad if i not in rejected]
                columns.append(dois)
            if self.blocklist is not None:
                columns.append(list(map(self.blocklist.matches, emails)))
            columns.append(self.fields(good))
            staged: Iterator[tuple[Any, ...]] = zip(*columns, strict=True)
            if found:
                keep = [True] * len(good)
                for i, _ in found:
                    keep[i] = False
                staged = compress(staged, keep)
                problems += [(positions[i] if positions is not None else i, r) for i, r in found]
            for i, reason in sorted(problems):
                self.rejects.add(batch.line(i), rows[i], reason)
            yield staged

    def fields(self, rows: list[list[str]]) -> list[str]:
        """Each row's fields as a JSON object text, the cells trimmed like str.strip."""
        if not self.names:
            return ["{}"] * len(rows)
        texts = list(map(self.template.__mod__, map(self.pick, rows)))
        joined = "".join(texts)
        # The template is right when no cell holds a quote, a backslash or a control
        # character (JSON escapes), or starts or ends with white space (trimmed): spaces
        # next to a quote show those; every other white space is not printable.
        if (
            joined.count('"') == 4 * len(self.names) * len(texts)
            and joined.isprintable()
            and "\\" not in joined
            and '" ' not in joined
            and ' "' not in joined
        ):
            return texts
        names, strip = self.names, str.strip
        return [
            _json_object(zip(names, map(strip, cells), strict=True))
            for cells in map(self.pick, rows)
        ]


def _json_object(pairs: Iterable[tuple[str, str]]) -> str:
    """A JSON object as SQLite's json_object() spells it: no spaces, non-ASCII as it is,
    the same escapes (tests/test_import_recipients.py compares them)."""
    return json.dumps(dict(pairs), ensure_ascii=False, separators=(",", ":"))


# Never re-subscribe: an unsubscription from this list or all lists suppresses the row,
# unless the row carries a double opt-in confirmation newer than it (and not in the future).
_UNSUBSCRIBED = f"""EXISTS (
    SELECT 1 FROM unsubscribers AS u
    WHERE u.email = i.email AND u.list IN ('', :list)
      AND {unsubscription_wins("i.doi", "u.unsubscribed_at", ":latest")})"""


def _action_sql(fields: str) -> str:
    """Per staged row `i` against its recipient `r`: what the import does with it.

    A removed member comes back as a new one; a blocklisted address is never added; an
    unsubscribed one is neither added nor re-activated; rows equal to the record (comparing
    the text first: re-imports of the same layout skip the JSON patch) are unchanged.
    """
    return f"""CASE
        WHEN r.status IS NULL OR r.status = 'removed' THEN CASE
            WHEN i.blocked IS NOT NULL THEN 'suppressed_blocklisted'
            WHEN {_UNSUBSCRIBED} THEN 'suppressed_unsubscribed'
            WHEN :mode = 'update-only' THEN 'ignored'
            ELSE 'inserted' END
        WHEN r.status = 'unsubscribed' THEN CASE
            WHEN {_UNSUBSCRIBED} THEN 'suppressed_unsubscribed'
            WHEN :mode = 'add-only' THEN 'ignored'
            ELSE 'updated' END
        WHEN (i.doi IS NULL OR i.doi IS r.doi_confirmed_at)
             AND (r.fields = {fields} OR json_patch(r.fields, {fields}) = r.fields)
            THEN 'unchanged'
        WHEN :mode = 'add-only' THEN 'ignored'
        ELSE 'updated' END"""


def _members_and_removed(conn: sqlite3.Connection, list_id: int) -> tuple[int, int]:
    """How many members the list has, and how many of them the file leaves out."""
    members, removed = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE email NOT IN (SELECT email FROM incoming)) "
        "FROM recipients WHERE list_id = ? AND status != 'removed'",
        (list_id,),
    ).fetchone()
    return int(members), int(removed)


def _apply(
    conn: sqlite3.Connection, params: dict[str, Any], counts: Counter[str], *, replace: bool
) -> None:
    """Write the decided actions to the store (statements with nothing to do are skipped)."""
    if counts["inserted"]:
        conn.execute(
            """
            INSERT INTO recipients
                (list_id, email, status, fields, doi_confirmed_at, created_at, updated_at)
            SELECT :list_id, email, 'active', fields, doi, :now, :now FROM incoming
            WHERE action = 'inserted'
            ON CONFLICT (list_id, email) DO UPDATE SET
                status = 'active', fields = excluded.fields,
                doi_confirmed_at = excluded.doi_confirmed_at,
                created_at = excluded.created_at, updated_at = excluded.updated_at
            """,
            params,
        )
    if counts["updated"]:
        conn.execute(
            """
            UPDATE recipients SET
                fields = json_patch(recipients.fields, incoming.fields),
                doi_confirmed_at = coalesce(incoming.doi, recipients.doi_confirmed_at),
                status = 'active', updated_at = :now
            FROM incoming
            WHERE recipients.list_id = :list_id AND recipients.email = incoming.email
              AND incoming.action = 'updated'
            """,
            params,
        )
    if replace and counts["removed"]:
        conn.execute(
            "UPDATE recipients SET status = 'removed', updated_at = :now "
            "WHERE list_id = :list_id AND status != 'removed' "
            "AND email NOT IN (SELECT email FROM incoming)",
            params,
        )


def load_blocklist(conn: sqlite3.Connection) -> addresses.Blocklist:
    return addresses.Blocklist(row[0] for row in conn.execute("SELECT pattern FROM blocklist"))


# --------------------------------------------------------------------------- dispatching


def merge(ctx: MergeContext, src: CsvRows, name: str) -> tuple[Counter[str], Rejects]:
    """Merge a file into the store according to the job's type."""
    from .merge_blocklist import merge_blocklist
    from .merge_bounces import merge_bounces
    from .merge_unsubscribers import merge_unsubscribers

    mergers = {
        "recipient-import": merge_recipients,
        "blocklist-import": merge_blocklist,
        "unsubscriber-import": merge_unsubscribers,
        "bounce-import": merge_bounces,
    }
    if ctx.job.type not in mergers:
        raise InputError(f"{ctx.job.type} jobs cannot import files")
    return mergers[ctx.job.type](ctx, src, name)
