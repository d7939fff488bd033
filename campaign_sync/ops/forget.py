"""`forget`: erase addresses for good, keeping only a keyed hash that keeps them out.

What one erasure does, in this order:

1. Every address is checked before anything is touched: one that is not an address stops
   the command (exit 2) with nothing erased.
2. In one store transaction: every row that holds an address is deleted (recipients of
   every list, unsubscribers, bounces, dispatch sends, the blocklist pattern that is exactly
   the address), the run history's texts are redacted (a dispatch's warnings name the
   recipients it could not mail), the keyed hash of each address is kept in `erased` (the
   store's secret made on first use), and the erasure is recorded as a run of FORGET_JOB
   with counts only. The rejects files' new contents are written beside them meanwhile.
3. After the commit, each rejects file that held an address is replaced by its new
   version (atomically, owner-only), and the backend scrubs what the deletions left in
   its files (SQLite: WAL checkpointed and truncated; PostgreSQL: VACUUM).

A failure before the commit changes nothing; one after it (a rejects file that cannot be
replaced) is reported, and running the same forget again finishes the job: erasing is
idempotent. A dry run counts the same things in a transaction it rolls back.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..config.model import FORGET_JOB, Config
from ..core import addresses, workdir
from ..core.erasure import Hasher, finder, new_secret, redactor
from ..errors import CampaignSyncError, StoreNotCreated, UsageError
from ..store.base import Store
from ..store.erasure import WHERE_BY_TABLE
from ..store.open import open_store

REJECTS_FOLDER = "rejects"
SHOWN = 80  # characters of a bad entry quoted in the error
_HEADER_DELIMITERS = (",", ";", "\t")


@dataclass
class RejectsChange:
    """One rejects file that holds an erased address: how many of its rows do."""

    path: Path
    lines: int
    replacement: Path | None = None  # the new contents, until they take the file's place


@dataclass
class ForgetReport:
    """What an erasure removed (or, dry, would remove): counts only, never an address."""

    addresses: int
    dry_run: bool
    tables: dict[str, int] = field(default_factory=dict)
    run_texts: int = 0  # run records whose texts named an address
    rejects: list[RejectsChange] = field(default_factory=list)
    suppressed: int = 0  # addresses newly kept out of imports (hashes added)
    run_id: int | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def rejects_lines(self) -> int:
        return sum(change.lines for change in self.rejects)

    def counts(self) -> dict[str, int]:
        """The counts as the run records them and `forget --json` shows them."""
        return {
            "addresses": self.addresses,
            **self.tables,
            "run_texts": self.run_texts,
            "rejects_files": len(self.rejects),
            "rejects_lines": self.rejects_lines,
            "suppressed": self.suppressed,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "run_id": self.run_id,
            "counts": self.counts(),
            "rejects_files": [
                {"path": str(change.path), "lines": change.lines} for change in self.rejects
            ],
            "warnings": self.warnings,
        }


# --------------------------------------------------------------------------- input


def read_addresses(given: Sequence[str], file: Path | None) -> list[str]:
    """The addresses to erase, normalised as imports store them, each once, in order.

    `file` holds one address a line (blank lines and lines starting with # are skipped),
    or is a CSV file whose first line names an `email` column (`,` `;` or tab between
    columns). UsageError (exit 2) names the first entry that is not an address.
    """
    entries = [("", raw) for raw in given]
    if file is not None:
        entries += list(_file_entries(file))
    if not entries:
        raise UsageError("give the addresses to erase (ADDRESS... or --file PATH)")
    wanted: dict[str, None] = {}
    for where, raw in entries:
        address = addresses.normalise(raw)
        problem = addresses.check(address) if address else "empty"
        if problem:
            shown = raw.strip()[:SHOWN]
            raise UsageError(f"{where}'{shown}' is not an address: {problem}; nothing was erased")
        wanted[address] = None
    return list(wanted)


def _file_entries(path: Path) -> Iterator[tuple[str, str]]:
    """(where, text) of each entry of an addresses file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"--file {path}: {exc.strerror or 'cannot read it'}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"--file {path}: not UTF-8 text (byte {exc.start + 1}); save it as UTF-8"
        ) from None
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    column = None if first is None else _email_column(lines[first])
    if column is None:
        for number, line in enumerate(lines, 1):
            if line.strip() and not line.lstrip().startswith("#"):
                yield f"{path}: line {number}: ", line
        return
    assert first is not None
    delimiter, index = column
    reader = csv.reader(io.StringIO("\n".join(lines[first + 1 :])), delimiter=delimiter)
    for row in reader:
        number = first + 1 + reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        yield f"{path}: line {number}: ", row[index] if index < len(row) else ""


def _email_column(line: str) -> tuple[str, int] | None:
    """(delimiter, index) of the `email` column if `line` is a CSV header naming one."""
    for delimiter in _HEADER_DELIMITERS:
        names = [name.strip().lower() for name in next(csv.reader([line], delimiter=delimiter))]
        if "email" in names:
            return delimiter, names.index("email")
    return None


# --------------------------------------------------------------------------- the erasure


def forget(config: Config, wanted: list[str], *, dry_run: bool) -> ForgetReport:
    """Erase the (normalised, valid) addresses `wanted`; or, dry, count what would go."""
    report = ForgetReport(len(wanted), dry_run)
    try:
        store = open_store(config.store, schema=config.store_schema, create=not dry_run)
    except StoreNotCreated:  # (dry runs only) nothing is held, everything would be new
        report.tables = {table: 0 for table in WHERE_BY_TABLE}
        report.suppressed = len(wanted)
        report.rejects = _rejects_changes(config.work_dir, wanted, write=False)
        return report
    try:
        if dry_run:
            _count(store, wanted, report, config.work_dir)
        else:
            _erase(store, wanted, report, config.work_dir)
    finally:
        store.close()
    return report


def _staged(wanted: Iterable[str]) -> Iterator[tuple[str, str]]:
    """The (value, kind) pairs that find an address's rows (see campaign_sync.store.erasure)."""
    for address in wanted:
        yield address, "email"
        yield addresses.ascii_form(address), "email"
        yield addresses.as_pattern(address), "pattern"


def _count(store: Store, wanted: list[str], report: ForgetReport, work_dir: Path) -> None:
    sql = store.sql("erasure")
    try:
        sql.prepare(store.conn)  # (the staged addresses stay in memory here too)
        sql.begin_read(store.conn)
        try:
            sql.stage(store.conn, _staged(wanted))
            report.tables = sql.held(store.conn)
            report.run_texts = len(_redacted_runs(sql, store.conn, wanted))
            secret = sql.secret(store.conn)
            if secret is None:  # no erasure yet: every address would be new
                report.suppressed = len(wanted)
            else:
                hasher = Hasher(secret)
                report.suppressed = sql.new_hashes(store.conn, [hasher(a) for a in wanted])
        finally:
            store.rollback()
    except store.errors as exc:
        raise store.failure("cannot read the store", exc) from None
    report.rejects = _rejects_changes(work_dir, wanted, write=False)


def _erase(store: Store, wanted: list[str], report: ForgetReport, work_dir: Path) -> None:
    sql, conn = store.sql("erasure"), store.conn
    try:
        try:
            sql.prepare(conn)
            store.begin_write()
            started = store.now()
            secret = sql.secret(conn) or sql.create_secret(conn, new_secret(), started)
            sql.stage(conn, _staged(wanted))
            report.tables = sql.erase(conn)
            sql.drop(conn)
            runs = _redacted_runs(sql, conn, wanted)
            for run_id, texts in runs:
                sql.redact_run(conn, run_id, texts)
            report.run_texts = len(runs)
            hasher = Hasher(secret)
            report.suppressed = sql.add_hashes(conn, [hasher(a) for a in wanted], started)
            report.rejects = _rejects_changes(work_dir, wanted, write=True)
            summary = (json.dumps(report.counts()), f"erased {len(wanted)} addresses")
            report.run_id = store.sql("runs").record_finished(
                conn, FORGET_JOB, "forget", (started, store.now()), summary
            )
            store.commit()
        except BaseException:
            store.rollback()
            _discard(report.rejects)
            raise
    except store.errors as exc:
        raise store.failure("cannot erase the addresses in the store", exc) from None
    _replace_rejects(report.rejects)
    touched = [table for table, rows in report.tables.items() if rows]
    touched += ["runs"] if report.run_texts else []
    report.warnings += sql.scrub(conn, touched)


def _redacted_runs(sql: Any, conn: Any, wanted: list[str]) -> list[tuple[int, tuple[Any, ...]]]:
    """(id, new texts) of every run whose error, message, warnings or file path names one
    of the addresses."""
    redact = redactor(wanted)
    changed = []
    for run_id, error, message, warnings, file_path in sql.run_texts(conn):
        found = 0
        texts: list[Any] = []
        for text in (error, message, file_path):
            new, hits = redact(text) if text else (text, 0)
            texts.append(new)
            found += hits
        items = []
        for item in json.loads(warnings or "[]"):
            new, hits = redact(str(item))
            items.append(new)
            found += hits
        if found:
            error, message, file_path = texts
            changed.append((int(run_id), (error, message, json.dumps(items), file_path)))
    return changed


# --------------------------------------------------------------------------- rejects files


def _rejects_changes(work_dir: Path, wanted: list[str], *, write: bool) -> list[RejectsChange]:
    """The rejects files that hold one of the addresses, with how many rows do; with
    `write`, each one's new contents (without those rows) in a file beside it."""
    holds = finder(wanted)
    changes: list[RejectsChange] = []
    try:
        for path in workdir.private_files(work_dir, REJECTS_FOLDER):
            change = _scan(path, holds, write)
            if change is not None:
                changes.append(change)
    except BaseException:
        _discard(changes)
        raise
    return changes


def _scan(path: Path, holds: Any, write: bool) -> RejectsChange | None:
    """Count the records of `path` that hold an address; with `write`, and some do, copy
    the others into its replacement (a second pass: most files hold none)."""
    change = RejectsChange(path, 0)
    try:
        change.lines = _pass(path, holds, None)
        if change.lines and write:
            change.replacement, target = workdir.replacement(path)
            with target:
                _pass(path, holds, target)
                target.flush()
                os.fsync(target.fileno())
    except OSError as exc:
        _discard([change])
        raise CampaignSyncError(
            f"cannot rewrite the rejects file {path}: {exc.strerror}; nothing was erased"
        ) from None
    return change if change.lines else None


def _pass(path: Path, holds: Any, target: IO[str] | None) -> int:
    """How many records of `path` hold an address, writing the others to `target`."""
    source = workdir.open_private(path)
    if source is None:
        return 0  # not a regular file of ours: never read, never replaced
    found = 0
    with source:
        for record in _records(source):
            if holds(record):
                found += 1
            elif target is not None:
                target.write(record)
    return found


def _records(source: IO[str]) -> Iterator[str]:
    """The CSV records of a rejects file, line ends included: a line break inside quotes
    (an odd number of quote characters so far) continues the record."""
    pending = ""
    for line in source:
        pending += line
        if pending.count('"') % 2 == 0:
            yield pending
            pending = ""
    if pending:
        yield pending


def _discard(changes: Iterable[RejectsChange]) -> None:
    for change in changes:
        if change.replacement is not None:
            with suppress(FileNotFoundError):
                change.replacement.unlink()
            change.replacement = None


def _replace_rejects(changes: list[RejectsChange]) -> None:
    """Put each file's new contents in its place."""
    for change in changes:
        try:
            assert change.replacement is not None
            os.replace(change.replacement, change.path)
            change.replacement = None
        except OSError as exc:
            _discard(changes)
            raise CampaignSyncError(
                f"the addresses were erased from the store, but the rejects file "
                f"{change.path} could not be rewritten ({exc.strerror}); run the same forget "
                "again to finish"
            ) from None
