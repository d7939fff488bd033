"""recipient-import: a list's members from a partner file.

Recipient files are checked a batch of rows at a time, staged into a temporary table and
then merged with a handful of set-based statements (the store backend's recipients
module): memory stays bounded whatever the file size, and the database does the sorting
and joins instead of Python.
"""

from __future__ import annotations

import json
import operator
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, compress
from typing import Any

from ..config.model import FIELD_NAME, RESERVED_FIELDS
from ..core import addresses
from ..core.dates import parse_dates
from ..csvio.read import CsvRows
from ..errors import InputError
from .common import (
    ErasedEntries,
    MergeContext,
    Rejects,
    cell,
    check_rejects,
    collector_paused,
    guard_removals,
    resolve_columns,
    zero,
)


def merge_recipients(ctx: MergeContext, src: CsvRows, name: str) -> tuple[Counter[str], Rejects]:
    job, conn, sql = ctx.job, ctx.conn, ctx.store.sql("recipients")
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
    blocklist = addresses.Blocklist(sql.blocklist_patterns(conn))
    stager = _RecipientStager(ctx, src, rejects, email_at, doi, columns)
    stager.blocklist = blocklist if len(blocklist) else None
    stager.erased = ErasedEntries(ctx.erased, stager.email) if ctx.erased else None

    staged = ["email", *(["doi"] if doi is not None else [])]
    staged += [*(["blocked"] if stager.blocklist else []), "fields"]
    with rejects.collecting(), collector_paused():
        sql.stage(conn, staged, chain.from_iterable(stager.batches()))
    counts["read"] = stager.read
    check_rejects(ctx, counts, rejects)
    erased = stager.erased.rows if stager.erased else 0
    if stager.erased:
        counts["suppressed_erased"] = len(stager.erased.found)

    params = {
        "list_id": sql.list_id(conn, job.list, ctx.now),
        "list": job.list,
        "mode": job.mode,
        "now": ctx.now,
        "latest": ctx.latest,
    }
    # An empty list has nothing to remove and nothing to compare with.
    direct = sql.can_insert_directly(conn, params)
    if direct:
        inserted, blocked = sql.insert_directly(conn, params)
        counts["inserted"] += inserted
        counts["suppressed_blocklisted"] += blocked
        distinct = inserted + blocked
    else:
        decided = sql.classify(conn, params)
        counts.update(decided)
        distinct = sum(decided.values())  # every distinct address has one action
    counts["duplicates"] = counts["read"] - rejects.count - distinct - erased
    if job.mode == "replace":
        members, removed = (0, 0) if direct else sql.members_and_removed(conn, params["list_id"])
        counts["removed"] = removed
        guard_removals(ctx, members, removed, distinct, f"list '{job.list}'")
    if not direct:
        sql.apply(conn, params, counts, replace=job.mode == "replace")
    sql.drop(conn)
    zero(counts, "suppressed_unsubscribed", "suppressed_blocklisted")
    if job.mode in ("add-only", "update-only"):
        counts.setdefault("ignored", 0)
    return counts, rejects


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
        self.erased: ErasedEntries | None = None
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
            left_out = self.left_out(emails, found)
            if left_out:
                keep = [True] * len(good)
                for i in left_out:
                    keep[i] = False
                staged = compress(staged, keep)
                problems += [(positions[i] if positions is not None else i, r) for i, r in found]
            for i, reason in sorted(problems):
                self.rejects.add(batch.line(i), rows[i], reason)
            yield staged

    def left_out(self, emails: list[str], found: list[tuple[int, str]]) -> list[int]:
        """The rows of a batch not to stage: those whose address was erased (neither staged
        nor rejected: counted in `erased`) and the rejected ones (`found`, which loses the
        erased ones)."""
        if self.erased is None:
            return [i for i, _ in found]
        flags = self.erased.check.flags(emails)
        gone = [i for i in compress(range(len(emails)), flags) if emails[i]]
        for i in gone:
            self.erased.claim(emails[i], True)
        if gone:
            claimed = set(gone)
            found[:] = [(i, reason) for i, reason in found if i not in claimed]
        return gone + [i for i, _ in found]

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
