"""Dates in partner files: a column parsed at once decides like parse_date cell by cell, and a
formatted date reads back as the moment it was written from."""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from campaign_sync.core.dates import (
    date_formatter,
    format_date,
    latest_allowed,
    parse_date,
    parse_dates,
)

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


# A run that started at noon on 1 June 2025 (UTC) takes dates up to 12:05.
LATEST = latest_allowed("2025-06-01T12:00:00.000000+00:00")


def one_by_one(
    texts: list[str], fmt: str | None, latest: str | None = None
) -> tuple[list[str | None], list[tuple[int, str]]]:
    values: list[str | None] = []
    problems = []
    for index, text in enumerate(texts):
        value = None
        if text.strip():
            try:
                value = parse_date(text, fmt, BERLIN, latest)
            except (ValueError, OverflowError) as exc:
                problems.append((index, str(exc)))
        values.append(value)
    return values, problems


@given(
    st.lists(CELLS, max_size=6),
    st.sampled_from([None, "%Y-%m-%d"]),
    st.sampled_from([None, LATEST]),
)
@example(["2025-01-02T03:04:05Z", "", "2025-06-01T12:00"], None, None)  # all in C
@example(["2025-01-02T03:04:05Z", "0001-01-01T00:00:00+01:00"], None, None)
@example(["2025-06-01T12:05Z", "2025-06-01T12:05:00.000001Z", "2099-01-01"], None, LATEST)
@example(["2099-01-01", "not a date"], None, LATEST)  # the careful path, cell by cell
def test_a_column_parses_like_each_cell(
    texts: list[str], fmt: str | None, latest: str | None
) -> None:
    assert parse_dates(texts, fmt, BERLIN, latest) == one_by_one(texts, fmt, latest)


@pytest.mark.parametrize("fmt", [None, "%d.%m.%Y %H:%M:%S"])
def test_a_date_more_than_the_clock_skew_ahead_is_refused(fmt: str | None) -> None:
    """Five minutes after the run started is the limit, in either kind of column."""
    spell = "2025-06-01T{}+02:00" if fmt is None else "01.06.2025 {}"  # Berlin: UTC+2
    limit, beyond = spell.format("14:05:00"), spell.format("14:05:01")
    assert parse_dates([limit, beyond], fmt, BERLIN, LATEST) == (
        ["2025-06-01T12:05:00.000000+00:00", None],
        [(1, f"'{beyond}' is in the future (more than 5 minutes after this run)")],
    )
    with pytest.raises(ValueError, match=r"^'01\.01\.2099' is in the future \(more than 5 "):
        parse_date(" 01.01.2099 ", "%d.%m.%Y", BERLIN, LATEST)


def test_stored_form() -> None:
    values, problems = parse_dates(["2025-01-02T03:04Z", "2025-07-01"], None, BERLIN)
    assert problems == []
    assert values == ["2025-01-02T03:04:00.000000+00:00", "2025-06-30T22:00:00.000000+00:00"]
    assert datetime.datetime.fromisoformat(values[1] or "").tzinfo == datetime.timezone.utc


def test_format_date_writes_in_the_zone_that_imports_read_in() -> None:
    # Local midnight in Berlin is the evening before in UTC, by one hour in winter, two in summer.
    assert format_date("2024-04-30T22:00:00.000000+00:00", "%d.%m.%Y", BERLIN) == "01.05.2024"
    assert format_date("2023-12-31T23:00:00.000000+00:00", "%d.%m.%Y", BERLIN) == "01.01.2024"
    # Around the switches to summer time (31 March 2024) and back (27 October 2024).
    fmt = "%d.%m.%Y %H:%M"
    assert format_date("2024-03-31T00:59:00.000000+00:00", fmt, BERLIN) == "31.03.2024 01:59"
    assert format_date("2024-03-31T01:00:00.000000+00:00", fmt, BERLIN) == "31.03.2024 03:00"
    assert format_date("2024-10-27T00:30:00.000000+00:00", fmt, BERLIN) == "27.10.2024 02:30"
    assert format_date("2024-10-27T01:30:00.000000+00:00", fmt, BERLIN) == "27.10.2024 02:30"
    assert format_date("2024-10-27T02:30:00.000000+00:00", fmt, BERLIN) == "27.10.2024 03:30"
    # A stored value without an offset (not written by campaign-sync) is taken as UTC.
    assert format_date("2024-04-30T22:00:00", "%d.%m.%Y", BERLIN) == "01.05.2024"


@given(
    st.datetimes(datetime.datetime(1900, 1, 1), datetime.datetime(2100, 12, 31)),
    st.sampled_from(["%d.%m.%Y", "%d.%m.%Y %H:%M", "%Y-%m-%d %H:%M:%S"]),
)
@example(datetime.datetime(2024, 3, 31, 2, 30), "%d.%m.%Y %H:%M")  # does not exist in Berlin
@example(datetime.datetime(2024, 10, 27, 2, 30), "%d.%m.%Y %H:%M")  # exists twice
def test_a_formatted_date_reads_back_as_the_same_moment(
    moment: datetime.datetime, fmt: str
) -> None:
    text = moment.strftime(fmt)
    stored = parse_date(text, fmt, BERLIN)
    again = format_date(stored, fmt, BERLIN)
    assert parse_date(again, fmt, BERLIN) == stored
    local = moment.replace(second=moment.second if "%S" in fmt else 0, microsecond=0)
    if "%H" not in fmt:
        local = local.replace(hour=0, minute=0)
    there_and_back = local.replace(tzinfo=BERLIN).astimezone(datetime.timezone.utc)
    exists = there_and_back.astimezone(BERLIN).replace(tzinfo=None) == local
    assert (again == text) == exists  # the same text, unless that local time never was


def test_date_formatter_passes_blank_cells_through_and_caches() -> None:
    formatted = date_formatter("%d.%m.%Y", BERLIN)
    assert formatted(None) is None
    assert formatted("") == ""
    assert formatted("2024-04-30T22:00:00.000000+00:00") == "01.05.2024"
    assert formatted("2024-04-30T22:00:00.000000+00:00") == "01.05.2024"
    assert formatted.cache_info().hits == 1  # type: ignore[attr-defined]
