"""The import backends side by side: the same files merged into an SQLite store and into a
PostgreSQL store give the same counts, the same refusals and the same rows, dates included.

Every step runs the engine (campaign_sync.imports) in one transaction per store, as the
runner does, with the same change time on both, then compares every table of the store.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from props import examples
from test_import_recipients import CONFIG as RECIPIENT_JOBS

from campaign_sync import config
from campaign_sync.core.schedule import zone
from campaign_sync.csvio.read import read_csv
from campaign_sync.errors import CampaignSyncError
from campaign_sync.imports import merge
from campaign_sync.imports.common import MergeContext
from campaign_sync.store.base import Store
from campaign_sync.store.open import open_store

if TYPE_CHECKING:
    from pgfixtures import PgSchema

# The recipient tests' jobs, and the list jobs they lack.
CONFIG = (
    RECIPIENT_JOBS
    + """\
  block-replace: {type: blocklist-import, mode: replace, max_removals: 1}
  unsub-add: {type: unsubscriber-import, mode: add-only}
  bounce: {type: bounce-import, max_rejects: 50%}
  block-lax: {type: blocklist-import, max_rejects: 50%}
  unsub-lax: {type: unsubscriber-import, max_rejects: 50%}
"""
)

# Every table's rows in a stable order, as comparable values (jsonb comes back as a dict).
TABLES = {
    "lists": "SELECT id, name FROM lists ORDER BY id",
    "recipients": "SELECT list_id, email, status, fields, doi_confirmed_at, created_at, "
    "updated_at FROM recipients ORDER BY list_id, email",
    "blocklist": "SELECT pattern, reason, created_at, modified_at FROM blocklist ORDER BY pattern",
    "unsubscribers": "SELECT email, list, unsubscribed_at, reason, changed_at FROM unsubscribers "
    "ORDER BY email, list",
    "bounces": "SELECT id, email, type, bounced_at, source, detail, changed_at FROM bounces "
    "ORDER BY id",
}


def tables(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows, fields as dicts (JSON text on SQLite, jsonb on PostgreSQL)."""
    found = {}
    for name, select in TABLES.items():
        rows = [tuple(row) for row in store.conn.execute(select).fetchall()]
        if name == "recipients":
            rows = [
                (*row[:3], json.loads(row[3]) if isinstance(row[3], str) else row[3], *row[4:])
                for row in rows
            ]
        found[name] = rows
    return found


class Pair:
    """The two stores, fed the same files with the same clock."""

    def __init__(self, tmp: Path, sqlite: Store, postgres: Store) -> None:
        path = tmp / "campaign-sync.yaml"
        path.write_text(CONFIG)
        (tmp / "var").mkdir()
        self.config = config.load(str(path))
        self.tmp, self.stores = tmp, (sqlite, postgres)
        self.step = 0

    def run(self, job: str, content: str | bytes, *, force: bool = False) -> dict[str, Any]:
        """Merge `content` with `job` into both stores; the outcome, the same on both."""
        self.step += 1
        now = f"2026-03-01T10:00:{self.step:02d}.000000+00:00"
        path = self.tmp / f"in-{self.step}.csv"
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        outcomes = [self._merge(store, job, path, now, force) for store in self.stores]
        assert outcomes[0] == outcomes[1], job
        assert tables(self.stores[0]) == tables(self.stores[1]), job
        return outcomes[0]

    def _merge(self, store: Store, job: str, path: Path, now: str, force: bool) -> dict[str, Any]:
        cfg = self.config
        ctx = MergeContext(
            store=store,
            job=cfg.jobs[job],
            tz=zone(cfg.timezone),
            work_dir=cfg.work_dir,
            run_id=None,
            force=force,
            now=now,
            configured_lists=frozenset(j.list for j in cfg.jobs.values() if j.list),
        )
        store.begin_write()
        try:
            with read_csv(path, ctx.job.format, label="in", names=ctx.job.column_labels) as src:
                counts, rejects = merge(ctx, src, "in")
        except CampaignSyncError as exc:
            store.rollback()
            # (Each run's rejects file has a name of its own.)
            error = re.sub(r"in \S+\.csv", "in REJECTS", str(exc))
            counts = dict(ctx.counts or {})
            return {"error": error, "counts": counts, "order": list(counts)}
        except BaseException:
            store.rollback()
            raise
        store.commit()
        # (The keys' order too: run documents show the counts as the import made them.)
        return {"counts": dict(counts), "order": list(counts), "rejected": rejects.count}


@pytest.fixture
def pair(tmp_path: Path, pg_schema: PgSchema) -> Iterator[Pair]:
    lite = open_store(str(tmp_path / "store.db"))
    pg = open_store(pg_schema.url, schema=pg_schema.name)
    try:
        yield Pair(tmp_path, lite, pg)
    finally:
        lite.close()
        pg.close()


def counts(outcome: dict[str, Any], *names: str) -> dict[str, int]:
    return {name: outcome["counts"][name] for name in names}


def test_recipient_imports_in_every_mode_agree(pair: Pair) -> None:
    pair.run("block", "pattern,reason\n*@spam.de,spam\n")
    first = pair.run(
        "rec",
        "email,first_name,city,doi_confirmed_at\n"
        "a@x.de,Anna,Berlin,2025-01-01\nb@spam.de,Spam,X,\nA@X.DE,Änne,Köln,\n"
        'c@x.de,"Carla ""C""",Essen,\nbad,Bad,,\nd@x.de,Tab\there,Back\\slash,\n',
    )
    assert counts(first, "inserted", "duplicates", "suppressed_blocklisted", "rejected") == dict(
        inserted=3, duplicates=1, suppressed_blocklisted=1, rejected=1
    )
    again = pair.run("rec", "email,first_name\na@x.de,Änne\nc@x.de,Carl\ne@x.de,Eve\n")
    assert counts(again, "inserted", "updated", "unchanged") == dict(
        inserted=1, updated=1, unchanged=1
    )
    pair.run("rec-add", "email,first_name,zip\na@x.de,Other,1\nf@x.de,Fay,2\n")
    pair.run("rec-update", "email,zip\na@x.de,3\ng@x.de,4\n")
    pair.run("rec", "email,doi_confirmed_at\na@x.de,2025-01-01\nc@x.de,2025-02-01\n")


def test_unsubscriptions_and_re_subscription_agree(pair: Pair) -> None:
    pair.run("rec", "email,doi_confirmed_at\nu@x.de,2025-01-01\nv@x.de,\nw@x.de,\n")
    pair.run("rec-other", "email\nu@x.de\nv@x.de\n")
    done = pair.run(
        "unsub-lax",
        "email,list,date,reason\nu@x.de,news,2025-02-01,asked\nv@x.de,,2025-02-01,\n"
        "w@x.de,nowhere,,\nU@x.de,news,2025-01-15,later row\n",
    )
    assert done["counts"]["unsubscribed"] == 3  # u in news, v in news and other
    # Never re-subscribe, unless a newer double opt-in says so (and not from the future).
    back = pair.run(
        "rec",
        "email,doi_confirmed_at\nu@x.de,2025-01-10\nv@x.de,2025-03-01\nn@x.de,\n",
    )
    assert counts(back, "suppressed_unsubscribed", "updated", "inserted") == dict(
        suppressed_unsubscribed=1, updated=1, inserted=1
    )
    pair.run("unsub", "email,list,date,reason\nu@x.de,news,2025-01-01,\nu@x.de,news,2025-05-01,\n")
    pair.run("unsub-add", "email,list,date\nu@x.de,news,2025-06-01\nz@x.de,other,\n")
    pair.run("unsub", "email,list\nn@x.de,\n")
    pair.run("rec", "email\nn@x.de\nfresh@x.de\n")


def test_replace_guard_and_empty_files_agree(pair: Pair) -> None:
    pair.run("rec", "email\na@x.de\nb@x.de\nc@x.de\nd@x.de\n")
    refused = pair.run("rec-replace", "email\na@x.de\n")
    assert "max_removals" in refused["error"] and refused["counts"]["removed"] == 3
    assert "max_rejects" in pair.run("rec-replace", "email\nbad\n")["error"]
    done = pair.run("rec-replace", "email,first_name\na@x.de,A\nb@x.de,B\ne@x.de,E\n")
    assert counts(done, "removed", "inserted", "updated") == dict(removed=2, inserted=1, updated=2)
    # A removed member comes back as a new one, dated anew.
    back = pair.run("rec", "email\nc@x.de\n")
    assert back["counts"]["inserted"] == 1
    assert "no valid data rows" in pair.run("rec-replace", "email\n")["error"]
    pair.run("rec-replace", "email\n", force=True)


def test_blocklist_imports_agree(pair: Pair) -> None:
    # LIKE's own wildcards (% _) are literal in a pattern; ? is one character, * any text.
    members = "ann@spam.de bob@x.de x_y@z.de x%y@z.de xy@z.de xaby@z.de lit*@x.de litab@x.de"
    members += " a_b@z.de axb@z.de"
    pair.run("rec", "email\n" + "\n".join(members.split()) + "\n")
    first = pair.run(
        "block-lax",
        "pattern,reason\n*@SPAM.de,spam\nx?y@z.de,\nlit\\*@x.de,literal\na_b@z.de,\n"
        "bad pattern\\,\n",
    )
    assert first["counts"]["inserted"] == 4
    pair.run("block", "pattern\n*@spam.de\nnew@x.de\n")
    pair.run("block", "pattern,reason\n*@spam.de,other\n")
    refused = pair.run("block-replace", "pattern\nnew@x.de\n")
    assert "max_removals" in refused["error"]
    # Members a removed pattern blocked are touched (changes-only exports see them again).
    done = pair.run("block-replace", "pattern\nnew@x.de\n", force=True)
    assert done["counts"]["removed"] == 4


def test_bounce_imports_agree(pair: Pair) -> None:
    pair.run("rec", "email\na@x.de\nb@x.de\n")
    content = (
        "email,type,date\na@x.de,hard,2025-01-01T10:00:00Z\nA@x.de,hard,2025-01-01T10:00:00Z\n"
        "b@x.de,soft,\nb@x.de,soft,\nc@x.de,HARD,\nbad,hard,\nd@x.de,medium,\n"
    )
    first = pair.run("bounce", content)
    assert counts(first, "inserted", "duplicates", "rejected") == dict(
        inserted=4, duplicates=1, rejected=2
    )
    again = pair.run("bounce", content)
    assert counts(again, "inserted", "unchanged") == dict(inserted=3, unchanged=1)


def test_defaults_and_a_list_made_by_the_import_agree(pair: Pair) -> None:
    pair.run("rec-source", "email,first_name\na@x.de,Anna\nb@x.de,\n")
    pair.run("rec-source", "email,first_name,source,city\na@x.de,Anna,other, \n")
    pair.run("rec-semi", "E-Mail;Vorname;DOI\nb@x.de;Bernd;01.02.2025\n".encode("cp1252"))


def test_one_connection_runs_import_after_import(pair: Pair) -> None:
    # psycopg prepares a statement run five times on a connection; the staging tables are
    # made anew by every import, and their queries must keep their result types.
    for round_no in range(6):
        pair.run("rec", f"email,first_name\na@x.de,{round_no}\n")
        pair.run("block", f"pattern\nx{round_no}@spam.de\n")
        pair.run("unsub", f"email,list\nu{round_no}@x.de,news\n")
        pair.run("bounce", f"email,type\na@x.de,{'soft' if round_no % 2 else 'hard'}\n")


# --------------------------------------------------------------------------- random sequences

EMAILS = ["a@x.de", "A@X.DE ", "b@x.de", "c@y.de", "d@spam.de", "é@bücher.de", "bad"]
VALUES = ["", "Anna", "Änne", ' "quoted" ', "back\\slash", "tab\there", "1"]
DATES = ["", "2025-01-01", "2025-02-01T10:00:00Z", "2025-03-01", "2099-01-01", "soon"]
PATTERNS = ["*@spam.de", "c@y.de", "?@x.de", "*@bücher.de", "b*", "**", "bad\\"]


def _recipient_file(draw: st.DrawFn) -> tuple[str, str]:
    job = draw(st.sampled_from(["rec", "rec-add", "rec-update", "rec-replace", "rec-lax"]))
    names = draw(st.lists(st.sampled_from(["first_name", "city"]), unique=True))
    doi = draw(st.booleans())
    rows = [
        [draw(st.sampled_from(EMAILS)), *(draw(st.sampled_from(VALUES)) for _ in names),
         *([draw(st.sampled_from(DATES))] if doi else [])]
        for _ in range(draw(st.integers(0, 6)))
    ]  # fmt: skip
    return job, _csv([["email", *names, *(["doi_confirmed_at"] if doi else [])], *rows])


def _csv(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


@st.composite
def steps(draw: st.DrawFn) -> tuple[str, str, bool]:
    kind = draw(st.sampled_from(["recipients", "recipients", "block", "unsub", "bounce"]))
    force = draw(st.booleans())
    if kind == "recipients":
        return (*_recipient_file(draw), force)
    if kind == "block":
        job = draw(st.sampled_from(["block-lax", "block-replace"]))
        rows = draw(st.lists(st.sampled_from(PATTERNS), max_size=4))
        reasons = [draw(st.sampled_from(["", "spam", "x"])) for _ in rows]
        return (
            job,
            _csv([["pattern", "reason"], *map(list, zip(rows, reasons, strict=True))]),
            force,
        )
    if kind == "unsub":
        job = draw(st.sampled_from(["unsub-lax", "unsub-add"]))
        rows = [
            [draw(st.sampled_from(EMAILS)), draw(st.sampled_from(["", "news", "other"])),
             draw(st.sampled_from(DATES))]
            for _ in range(draw(st.integers(0, 4)))
        ]  # fmt: skip
        return job, _csv([["email", "list", "date"], *rows]), force
    rows = [
        [draw(st.sampled_from(EMAILS)), draw(st.sampled_from(["hard", "soft", "x"])),
         draw(st.sampled_from(DATES))]
        for _ in range(draw(st.integers(0, 4)))
    ]  # fmt: skip
    return "bounce", _csv([["email", "type", "date"], *rows]), force


@pytest.fixture
def pg_store(pg_schema: PgSchema) -> Iterator[Store]:
    """One PostgreSQL store for all examples of a property (emptied before each)."""
    store = open_store(pg_schema.url, schema=pg_schema.name)
    try:
        yield store
    finally:
        store.close()


@settings(
    max_examples=examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=st.lists(steps(), min_size=1, max_size=6))
def test_random_import_sequences_agree(
    tmp_path_factory: pytest.TempPathFactory, pg_store: Store, sequence: list[tuple[str, str, bool]]
) -> None:
    tmp = tmp_path_factory.mktemp("seq")
    tables = ", ".join(TABLES)
    pg_store.conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    lite = open_store(str(tmp / "store.db"))
    try:
        pair = Pair(tmp, lite, pg_store)
        for job, content, force in sequence:
            pair.run(job, content, force=force)
    finally:
        lite.close()


# Any text but NUL (which PostgreSQL cannot hold: test_import_pg.py), as a file's cells.
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8)


@settings(
    max_examples=examples(30),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    cells=st.lists(st.tuples(st.sampled_from(EMAILS), TEXT, TEXT), min_size=1, max_size=5),
    reason=TEXT,
)
def test_any_text_in_cells_agrees(
    tmp_path_factory: pytest.TempPathFactory,
    pg_store: Store,
    cells: list[tuple[str, str, str]],
    reason: str,
) -> None:
    # Tabs, line breaks, backslashes, quotes and \\N-like text go through COPY's escaping and
    # JSON's, and come out as SQLite stores them.
    tmp = tmp_path_factory.mktemp("text")
    pg_store.conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    lite = open_store(str(tmp / "store.db"))
    try:
        pair = Pair(tmp, lite, pg_store)
        rows = [[email, first, city] for email, first, city in cells]
        pair.run("rec-lax", _csv([["email", "first_name", "city"], *rows]))
        pair.run(
            "rec-lax", _csv([["email", "city"], *([email, first] for email, first, _ in cells)])
        )
        pair.run("block-lax", _csv([["pattern", "reason"], ["*@spam.de", reason]]))
        pair.run("unsub-lax", _csv([["email", "list", "reason"], [cells[0][0], "", reason]]))
    finally:
        lite.close()
