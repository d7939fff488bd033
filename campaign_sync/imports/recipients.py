"""recipient-import: a list's members from a partner file.

Recipient files are checked a batch of rows at a time, staged into a temporary table and
then merged with a handful of set-based statements: memory stays bounded whatever the
file size, and SQLite does the sorting and joins instead of Python.
"""

from __future__ import annotations

import json
import operator
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, compress
from typing import Any

from .. import store
from ..config.model import FIELD_NAME, RESERVED_FIELDS
from ..core import addresses
from ..core.dates import parse_dates
from ..csvio.read import CsvRows
from ..errors import InputError
from ..store.statuses import unsubscription_wins
from .common import (
    MergeContext,
    Rejects,
    cell,
    check_rejects,
    guard_removals,
    resolve_columns,
    stage_raw,
    tally,
    zero,
)


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

    layout = "email TEXT NOT NULL, doi TEXT, blocked TEXT, fields TEXT NOT NULL"
    staged = ["email", *(["doi"] if doi is not None else [])]
    staged += [*(["blocked"] if stager.blocklist else []), "fields"]
    with rejects.collecting():
        stage_raw(conn, layout, staged, chain.from_iterable(stager.batches()))
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
