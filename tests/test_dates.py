"""Dates in partner files: a column parsed at once decides like parse_date cell by cell."""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

from hypothesis import example, given
from hypothesis import strategies as st

from campaign_sync.dates import parse_date, parse_dates

BERLIN = ZoneInfo("Europe/Berlin")

CELLS = st.one_of(
    st.sampled_from(
        [
            "",
            "  ",
            "2025-01-02",
            "2025-03-30T02:30",  # a local time that does not exist in Berlin
            "2025-10-26T02:30",  # … and one that exists twice
            "2025-01-02T03:04:05Z",
            "2025-01-02T03:04:05.123456+05:30",
            " 2025-06-01T12:00:00+02:00 ",
            "0001-01-01T00:00:00+01:00",  # before the first UTC moment: OverflowError
            "2025-02-30",
            "20250102T030405",  # ISO basic format (dateutil's careful path)
            "not a date",
        ]
    ),
    st.datetimes().map(lambda d: d.isoformat()),
    st.text(max_size=12),
)


def one_by_one(texts: list[str], fmt: str | None) -> tuple[list[str | None], list[tuple[int, str]]]:
    values: list[str | None] = []
    problems = []
    for index, text in enumerate(texts):
        value = None
        if text.strip():
            try:
                value = parse_date(text, fmt, BERLIN)
            except (ValueError, OverflowError) as exc:
                problems.append((index, str(exc)))
        values.append(value)
    return values, problems


@given(st.lists(CELLS, max_size=6), st.sampled_from([None, "%Y-%m-%d"]))
@example(["2025-01-02T03:04:05Z", "", "2025-06-01T12:00"], None)  # all in C
@example(["2025-01-02T03:04:05Z", "0001-01-01T00:00:00+01:00"], None)
def test_a_column_parses_like_each_cell(texts: list[str], fmt: str | None) -> None:
    assert parse_dates(texts, fmt, BERLIN) == one_by_one(texts, fmt)


def test_stored_form() -> None:
    values, problems = parse_dates(["2025-01-02T03:04Z", "2025-07-01"], None, BERLIN)
    assert problems == []
    assert values == ["2025-01-02T03:04:00.000000+00:00", "2025-06-30T22:00:00.000000+00:00"]
    assert datetime.datetime.fromisoformat(values[1] or "").tzinfo == datetime.timezone.utc
