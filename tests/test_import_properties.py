"""Property tests: no input makes the importer crash, and random sequences of imports leave
the store exactly as a plain in-memory model of the documented semantics says."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from props import examples

from campaign_sync import config
from campaign_sync.ops import runner

CONFIG = """\
store: store.db
work_dir: var
timezone: UTC
jobs:
  upsert: {type: recipient-import, list: news, max_rejects: 100%}
  add-only: {type: recipient-import, list: news, mode: add-only, max_rejects: 100%}
  update-only: {type: recipient-import, list: news, mode: update-only, max_rejects: 100%}
  replace: {type: recipient-import, list: news, mode: replace, max_rejects: 100%}
  other: {type: recipient-import, list: other, max_rejects: 100%}
  block: {type: blocklist-import, max_rejects: 100%}
  unsub: {type: unsubscriber-import, max_rejects: 100%}
  bounce: {type: bounce-import, max_rejects: 100%}
  semi:
    type: recipient-import
    list: news
    format: {delimiter: ";", quotechar: "'", encoding: cp1252}
    max_rejects: 3
  plain:
    type: recipient-import
    list: news
    format: {header: false}
    columns: [email, ~, first_name]
    defaults: {source: p}
    max_rejects: 100%
  bounce-hard: {type: bounce-import, defaults: {type: hard}, max_rejects: 100%}
  unsub-news: {type: unsubscriber-import, defaults: {list: news}, max_rejects: 100%}
"""
JOBS = (
    "upsert",
    "block",
    "unsub",
    "bounce",
    "semi",
    "replace",
    "plain",
    "bounce-hard",
    "unsub-news",
)
# The csv, gzip, zlib and codec modules' own words: no message passes them on.
LIBRARY_WORDING = ("new-line character", "universal-newline", "unexpected end of data",
                   "expected after", "field larger than", "Error -", "end-of-stream",
                   "codec can't", "gzipped")  # fmt: skip

SETTINGS = settings(
    max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


class Store:
    """A throwaway config and store; imports run through the engine as the CLI runs them."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory()
        self.root = Path(self._tmp.name)
        (self.root / "c.yaml").write_text(CONFIG)
        self.config = config.load(str(self.root / "c.yaml"))
        self.files = 0

    def run(self, job: str, content: bytes, **options: Any) -> runner.RunResult:
        self.files += 1
        path = self.root / f"in{self.files}.csv"
        path.write_bytes(content)
        opts = runner.RunOptions(file=path, force=True, **options)
        return runner.run_job(self.config, job, "import", opts)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        if not (self.root / "store.db").exists():
            return []
        with sqlite3.connect(self.root / "store.db") as conn:
            return conn.execute(sql).fetchall()

    def close(self) -> None:
        self._tmp.cleanup()


def assert_handled(result: runner.RunResult) -> None:
    """Succeeded, or failed with a message for people; never an internal error."""
    assert result.status in ("succeeded", "failed"), result
    if result.status == "failed":
        assert result.error and not result.error.startswith("internal error"), result.error
        assert result.exit_code == 1
        assert not [words for words in LIBRARY_WORDING if words in result.error], result.error


# --------------------------------------------------------------------------- never a traceback


@SETTINGS
@given(content=st.binary(max_size=400), job=st.sampled_from(JOBS))
def test_arbitrary_bytes_never_crash(content: bytes, job: str) -> None:
    store = Store()
    try:
        assert_handled(store.run(job, content))
    finally:
        store.close()


CELL = st.one_of(
    st.sampled_from(["a@x.de", "B@X.DE ", "bad", "", "hard", "soft", "*@x.de", "2025-01-02"]),
    st.text(alphabet=st.sampled_from("a@.;,'\"\r\n \t\\*?éü€x-"), max_size=12),
    st.text(max_size=8),
)
HEADER_NAMES = ["email", "E-Mail", "pattern", "reason", "type", "date", "list",
                "doi_confirmed_at", "first_name", "Weird Header", "", "status"]  # fmt: skip
HEADERS = st.lists(st.sampled_from(HEADER_NAMES), min_size=1, max_size=5)


@SETTINGS
@given(
    header=HEADERS,
    rows=st.lists(st.lists(CELL, min_size=0, max_size=6), max_size=8),
    job=st.sampled_from(JOBS),
    end=st.sampled_from(["\n", "\r\n", "\r"]),
    cut=st.integers(min_value=0, max_value=3),
)
def test_csv_shaped_input_never_crashes(
    header: list[str], rows: list[list[str]], job: str, end: str, cut: int
) -> None:
    buffer = io.StringIO()
    delimiter, quote = (";", "'") if job == "semi" else (",", '"')
    writer = csv.writer(buffer, delimiter=delimiter, quotechar=quote, lineterminator=end)
    writer.writerows([header, *rows])
    text = buffer.getvalue()
    content = text.encode("cp1252" if job == "semi" else "utf-8", errors="replace")
    store = Store()
    try:
        assert_handled(store.run(job, content[: len(content) - cut]))
    finally:
        store.close()


# --------------------------------------------------------------------------- the model

EMAILS = ["a@x.de", "b@x.de", "c@spam.de", "d@x.de", "e@x.de"]
DATES = ["2024-01-01", "2025-01-01", "2025-06-01"]
FIELDS = ["f1", "f2"]
NOW = "~now"  # sorts after every file date, as the run's own time does


def stored_date(day: str) -> str:
    return f"{day}T00:00:00.000000+00:00"


@dataclass
class Recipient:
    status: str
    fields: dict[str, str]
    doi: str | None


@dataclass
class Model:
    """The documented semantics, written as plainly as possible."""

    lists: dict[str, dict[str, Recipient]] = field(default_factory=lambda: {"news": {}})
    unsubscribed: dict[tuple[str, str], str] = field(default_factory=dict)
    blocked: set[str] = field(default_factory=set)

    def is_blocked(self, email: str) -> bool:
        return email in self.blocked or ("*@" + email.split("@")[1]) in self.blocked

    def is_unsubscribed(self, email: str, list_name: str, doi: str | None) -> bool:
        dates = [self.unsubscribed.get((email, lst)) for lst in ("", list_name)]
        return any(at is not None and (doi is None or doi <= at) for at in dates)

    def recipients(self, mode: str, rows: list[tuple[str, dict[str, str], str | None]],
                   list_name: str = "news") -> dict[str, int]:  # fmt: skip
        members = self.lists.setdefault(list_name, {})
        last = {email: (fields, doi) for email, fields, doi in rows}
        counts = dict.fromkeys(
            ("inserted", "updated", "unchanged", "ignored", "suppressed_unsubscribed",
             "suppressed_blocklisted", "removed"), 0)  # fmt: skip
        counts["duplicates"] = len(rows) - len(last)
        for email, (fields, doi) in last.items():
            old = members.get(email)
            if old is None or old.status == "removed":
                action = "inserted"
                if self.is_blocked(email):
                    action = "suppressed_blocklisted"
                elif self.is_unsubscribed(email, list_name, doi):
                    action = "suppressed_unsubscribed"
            elif old.status == "unsubscribed":
                unsub = self.is_unsubscribed(email, list_name, doi)
                action = "suppressed_unsubscribed" if unsub else "updated"
            else:
                changed = any(old.fields.get(k) != v for k, v in fields.items())
                action = "updated" if changed or (doi and doi != old.doi) else "unchanged"
            if (mode, action) in (("add-only", "updated"), ("update-only", "inserted")):
                action = "ignored"
            counts[action] += 1
            if action == "inserted":
                members[email] = Recipient("active", dict(fields), doi)
            elif action == "updated":
                assert old is not None
                members[email] = Recipient("active", {**old.fields, **fields}, doi or old.doi)
        if mode == "replace":
            for email, member in members.items():
                if member.status != "removed" and email not in last:
                    member.status = "removed"
                    counts["removed"] += 1
        return counts

    def unsubscribe(self, rows: list[tuple[str, str, str | None]]) -> None:
        last = {(email, list_name): day for email, list_name, day in rows}  # last row wins
        for key, day in last.items():
            if key not in self.unsubscribed:
                self.unsubscribed[key] = day or NOW
            elif day:
                self.unsubscribed[key] = max(self.unsubscribed[key], day)
        emails = {email for email, _, _ in rows}
        for list_name, members in self.lists.items():
            for email, member in members.items():
                if (
                    member.status == "active"
                    and email in emails
                    and any(
                        (email, lst) in self.unsubscribed
                        and (member.doi is None or member.doi <= self.unsubscribed[(email, lst)])
                        for lst in ("", list_name)
                    )
                ):
                    member.status = "unsubscribed"


def address() -> st.SearchStrategy[str]:
    return st.sampled_from(EMAILS).flatmap(lambda e: st.sampled_from([e, e.upper(), f" {e} "]))


RECIPIENT_FILE = st.tuples(
    st.sampled_from(["upsert", "add-only", "update-only", "replace"]),
    st.lists(st.sampled_from(FIELDS), unique=True),
    st.booleans(),  # has a doi column
    st.lists(
        st.tuples(address(), st.lists(st.sampled_from(["", "v", "w"]), min_size=2, max_size=2),
                  st.sampled_from(["", *DATES])),
        max_size=6,
    ),
)  # fmt: skip
UNSUB_FILE = st.lists(
    st.tuples(address(), st.sampled_from(["", "news", "other"]), st.sampled_from(["", *DATES])),
    max_size=4,
)
BLOCK_FILE = st.lists(st.sampled_from(["*@spam.de", "e@x.de", "*@X.DE"]), max_size=2)
STEP = st.one_of(
    st.tuples(st.just("recipients"), RECIPIENT_FILE),
    st.tuples(st.just("unsub"), UNSUB_FILE),
    st.tuples(st.just("block"), BLOCK_FILE),
)


def csv_bytes(header: list[str], rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    return buffer.getvalue().encode()


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(STEP, min_size=1, max_size=6), dry=st.booleans())
def test_random_imports_match_the_model(steps: list[Any], dry: bool) -> None:
    model, store = Model(), Store()
    try:
        for kind, spec in steps:
            if kind == "recipients":
                _recipient_step(model, store, spec, dry)
            elif kind == "unsub":
                rows = [[email, lst, day] for email, lst, day in spec]
                assert_ok(store.run("unsub", csv_bytes(["email", "list", "date"], rows)))
                model.unsubscribe(
                    [(e.strip().lower(), lst, stored_date(d) if d else None) for e, lst, d in spec]
                )
            else:
                assert_ok(store.run("block", csv_bytes(["pattern"], [[p] for p in spec])))
                model.blocked |= {p.lower() for p in spec}
            assert_same(model, store)
    finally:
        store.close()


def _recipient_step(model: Model, store: Store, spec: Any, dry: bool) -> None:
    mode, fields, with_doi, rows = spec
    header = ["email", *fields, *(["doi_confirmed_at"] if with_doi else [])]
    lines = [[e, *values[: len(fields)], *([day] if with_doi else [])] for e, values, day in rows]
    content = csv_bytes(header, lines)
    if dry:
        before = store.query("SELECT * FROM recipients ORDER BY 1, 2")
        rehearsal = store.run(mode, content, dry_run=True)
        assert_ok(rehearsal)
        assert store.query("SELECT * FROM recipients ORDER BY 1, 2") == before
    result = store.run(mode, content)
    assert_ok(result)
    expected = model.recipients(
        mode,
        [
            (e.strip().lower(), dict(zip(fields, values, strict=False)),
             stored_date(day) if with_doi and day else None)
            for e, values, day in rows
        ],
    )  # fmt: skip
    got = {key: result.counts.get(key, 0) for key in expected}
    assert got == expected
    if dry:
        assert rehearsal.counts == result.counts


def assert_ok(result: runner.RunResult) -> None:
    assert result.status == "succeeded", result.error


def assert_same(model: Model, store: Store) -> None:
    rows = store.query(
        "SELECT l.name, r.email, r.status, r.fields, r.doi_confirmed_at "
        "FROM recipients r JOIN lists l ON l.id = r.list_id"
    )
    got = {
        (lst, email): (status, json.loads(fields), doi) for lst, email, status, fields, doi in rows
    }
    want = {
        (lst, email): (r.status, r.fields, r.doi)
        for lst, members in model.lists.items()
        for email, r in members.items()
    }
    assert got == want
    unsubs = {
        (email, lst): (NOW if at.startswith("2026") else at)
        for email, lst, at in store.query("SELECT email, list, unsubscribed_at FROM unsubscribers")
    }
    assert unsubs == model.unsubscribed
