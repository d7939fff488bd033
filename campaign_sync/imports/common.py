"""What every import type shares: the run's context, rejected rows, column resolution,
checking rows on their way into the backend's staging table, and the removal guard.

The caller owns the transaction: everything here runs inside one, so a failure at any
point (a limit, a broken line, a crash) leaves the store exactly as it was. A dry run is
the same work rolled back, so its counts are exactly a real run's.
"""

from __future__ import annotations

import csv
import gc
import operator
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import tzinfo
from functools import cached_property
from pathlib import Path
from typing import Any

from .. import store
from ..config.model import FIELD_NAME, FILE_FIELDS, REQUIRED_FIELDS, JobConfig, Limit
from ..core import addresses, workdir
from ..core.dates import latest_allowed, parse_date
from ..core.erasure import ErasedCheck
from ..csvio.read import CsvRows
from ..errors import InputError, LimitExceeded
from ..store.base import Store

# Defaults when a job sets no limit: a mostly broken file or a "sync" that empties a list
# must not go through silently. --force (removals) or an explicit limit overrides.
DEFAULT_MAX_REJECTS = Limit(10, percent=True)
DEFAULT_MAX_REMOVALS = Limit(10, percent=True)
FIRST_REJECTS = 10


@dataclass
class MergeContext:
    store: Store
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
    # Whether an address was erased (`forget`); None while the store holds no erasure.
    erased: ErasedCheck | None = None

    @property
    def conn(self) -> Any:
        """The store's connection, for the backend's SQL."""
        return self.store.conn

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


def erased_check(store: Store) -> ErasedCheck | None:
    """The check of erased addresses for an import into `store`; None (nothing to check,
    nothing to hash) while the store holds no erasure."""
    sql = store.sql("erasure")
    secret = sql.secret(store.conn)
    hashes = sql.erased_hashes(store.conn) if secret else []
    return ErasedCheck(secret, hashes) if hashes else None


class ErasedEntries:
    """The rows of a file an erasure keeps out of an import: those whose address (the cell
    `cell` reads, made an address by `address_of`; None: it names no single address) was
    erased. They are neither staged nor rejected (a rejects file would hold them again):
    counted as rows, and as distinct addresses for suppressed_erased."""

    def __init__(
        self,
        check: ErasedCheck,
        cell: Callable[[list[str]], str],
        address_of: Callable[[str], str | None] = addresses.normalise,
    ) -> None:
        self.check, self.cell, self.address_of = check, cell, address_of
        self.rows = 0
        self.found: set[str] = set()

    def __call__(self, row: list[str]) -> bool:
        address = self.address_of(self.cell(row))
        if not address:
            return False
        return self.claim(address, self.check(address))

    def claim(self, address: str, erased: bool) -> bool:
        """Count the row of `address` if `erased`; whether it was."""
        if erased:
            self.rows += 1
            self.found.add(address)
        return erased


def stage_checked(
    ctx: MergeContext,
    src: CsvRows,
    counts: Counter[str],
    rejects: Rejects,
    check: Callable[[list[str]], tuple[Any, ...]],
    stage: Callable[[Iterable[tuple[Any, ...]]], int],
    erased: ErasedEntries | None = None,
) -> int:
    """Check each data row, stage the good ones, reject the rest.

    `check` turns a row's cells into the values to stage or raises RowRejected; `stage` is
    the backend's stage() of the import type, which keeps the last row of each key and
    returns the number of distinct keys. Rows that `erased` claims are left out (see
    ErasedEntries). Counts read, rejected and duplicates, and fails the run
    above max_rejects. Returns the number of distinct keys staged.
    """
    width = len(src.header)

    def checked_rows() -> Iterator[tuple[Any, ...]]:
        for line, row in src.rows:
            counts["read"] += 1
            if len(row) != width:
                rejects.add(line, row, src.width_problem(len(row)))
                continue
            if erased is not None and erased(row):
                continue
            try:
                yield check(row)
            except RowRejected as exc:
                rejects.add(line, row, str(exc))

    with rejects.collecting(), collector_paused():
        distinct = stage(checked_rows())
    check_rejects(ctx, counts, rejects)
    erased_rows = 0
    if erased is not None:
        counts["suppressed_erased"] = len(erased.found)
        erased_rows = erased.rows
    counts["duplicates"] = counts["read"] - rejects.count - distinct - erased_rows
    return distinct


@contextmanager
def collector_paused() -> Iterator[None]:
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
