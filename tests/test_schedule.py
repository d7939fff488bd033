"""Schedule grammar, run times (month ends, weekdays, DST) and the overdue test."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from props import examples

from campaign_sync.core.schedule import (
    LAST_DAY,
    Schedule,
    ScheduleError,
    default_grace,
    is_overdue,
    parse,
    zone,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
UTC = timezone.utc
GRAMMAR = "'hourly :MM', 'daily HH:MM', 'weekly mon[,thu] HH:MM' or 'monthly 1..28|last HH:MM'"


def at(tz, *fields: int, fold: int = 0) -> datetime:
    return datetime(*fields, tzinfo=tz, fold=fold)


def utc(moment: datetime) -> datetime:
    """Compare instants in UTC: same-zone comparison in Python ignores `fold`."""
    return moment.astimezone(UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat()


# --------------------------------------------------------------------------- grammar


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hourly :15", Schedule("hourly :15", "hourly", 15)),
        ("hourly :00", Schedule("hourly :00", "hourly", 0)),
        ("daily 02:30", Schedule("daily 02:30", "daily", 30, 2)),
        ("daily 00:00", Schedule("daily 00:00", "daily", 0, 0)),
        ("daily 23:59", Schedule("daily 23:59", "daily", 59, 23)),
        ("weekly mon 06:00", Schedule("weekly mon 06:00", "weekly", 0, 6, (0,))),
        ("weekly thu,mon 06:00", Schedule("weekly mon,thu 06:00", "weekly", 0, 6, (0, 3))),
        ("weekly sun,sat 21:05", Schedule("weekly sat,sun 21:05", "weekly", 5, 21, (5, 6))),
        ("monthly 1 04:00", Schedule("monthly 1 04:00", "monthly", 0, 4, monthday=1)),
        ("monthly 28 04:00", Schedule("monthly 28 04:00", "monthly", 0, 4, monthday=28)),
        ("monthly 01 04:00", Schedule("monthly 1 04:00", "monthly", 0, 4, monthday=1)),
        ("monthly last 23:30", Schedule("monthly last 23:30", "monthly", 30, 23, monthday=-1)),
        # Forgiving about case and spacing: same meaning, normalised text.
        ("  Daily   02:30 ", Schedule("daily 02:30", "daily", 30, 2)),
        ("WEEKLY Mon, Thu 06:00", Schedule("weekly mon,thu 06:00", "weekly", 0, 6, (0, 3))),
        ("monthly LAST 23:30", Schedule("monthly last 23:30", "monthly", 30, 23, monthday=-1)),
    ],
)
def test_accepted(text: str, expected: Schedule) -> None:
    assert parse(text) == expected
    assert str(parse(text)) == expected.text
    assert parse(expected.text) == expected  # the normalised text parses to the same schedule


def test_last_day_constant() -> None:
    assert parse("monthly last 00:00").monthday == LAST_DAY


def test_schedule_is_frozen() -> None:
    schedule = parse("daily 02:30")
    with pytest.raises(AttributeError):
        schedule.hour = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("every day", "unknown kind 'every' (hourly, daily, weekly or monthly)"),
        ("daily", "'daily' takes 'HH:MM'"),
        ("daily 02:30 03:30", "'daily' takes 'HH:MM'"),
        ("daily 2:30", "'2:30' is not a time HH:MM (00:00 to 23:59)"),
        ("daily 24:00", "'24:00' is not a time HH:MM (00:00 to 23:59)"),
        ("daily 02:60", "'02:60' is not a time HH:MM (00:00 to 23:59)"),
        ("daily 0230", "'0230' is not a time HH:MM (00:00 to 23:59)"),
        ("hourly", "'hourly' takes ':MM'"),
        ("hourly 15", "'15' is not a minute :MM (:00 to :59)"),
        ("hourly :60", "':60' is not a minute :MM (:00 to :59)"),
        ("hourly :5", "':5' is not a minute :MM (:00 to :59)"),
        ("weekly 06:00", "'weekly' takes 'mon[,thu] HH:MM'"),
        ("weekly monday 06:00", "'monday' is not a weekday (mon, tue, wed, thu, fri, sat, sun)"),
        ("weekly mon,,thu 06:00", "'' is not a weekday (mon, tue, wed, thu, fri, sat, sun)"),
        ("weekly mon,mon 06:00", "weekday 'mon' is listed twice"),
        ("weekly mon 6:00", "'6:00' is not a time HH:MM (00:00 to 23:59)"),
        ("monthly 04:00", "'monthly' takes '1..28|last HH:MM'"),
        ("monthly 29 04:00", "day 29 does not occur in every month: use 1..28 or 'last'"),
        ("monthly 31 04:00", "day 31 does not occur in every month: use 1..28 or 'last'"),
        ("monthly 0 04:00", "'0' is not a day of the month (1..28 or 'last')"),
        ("monthly 32 04:00", "'32' is not a day of the month (1..28 or 'last')"),
        ("monthly first 04:00", "'first' is not a day of the month (1..28 or 'last')"),
    ],
)
def test_rejected(text: str, problem: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse(text)
    expected = f"'{text.strip()}' is not a valid schedule: {problem}; use {GRAMMAR}"
    assert str(caught.value) == expected


def test_rejected_empty_and_not_text() -> None:
    with pytest.raises(ScheduleError, match=r"^the schedule is empty; use 'hourly :MM'"):
        parse("   ")
    with pytest.raises(ScheduleError, match=r"^a schedule must be text, not int; use 'hourly"):
        parse(42)  # type: ignore[arg-type]


def test_schedule_error_is_a_value_error() -> None:
    assert issubclass(ScheduleError, ValueError)


# --------------------------------------------------------------------------- run times


@pytest.mark.parametrize(
    ("text", "moment", "expected_next", "expected_previous"),
    [
        # hourly: strictly after, at-or-before, across midnight
        ("hourly :15", at(BERLIN, 2026, 5, 4, 10, 0), "2026-05-04T10:15:00+02:00",
         "2026-05-04T09:15:00+02:00"),
        ("hourly :15", at(BERLIN, 2026, 5, 4, 10, 15), "2026-05-04T11:15:00+02:00",
         "2026-05-04T10:15:00+02:00"),
        ("hourly :00", at(BERLIN, 2026, 12, 31, 23, 30), "2027-01-01T00:00:00+01:00",
         "2026-12-31T23:00:00+01:00"),
        # daily
        ("daily 02:30", at(BERLIN, 2026, 5, 4, 2, 29, 59), "2026-05-04T02:30:00+02:00",
         "2026-05-03T02:30:00+02:00"),
        ("daily 02:30", at(BERLIN, 2026, 5, 4, 2, 30), "2026-05-05T02:30:00+02:00",
         "2026-05-04T02:30:00+02:00"),
        # weekly with two days: 2026-11-26 is a Thursday
        ("weekly mon,thu 06:00", at(BERLIN, 2026, 11, 26, 5, 0), "2026-11-26T06:00:00+01:00",
         "2026-11-23T06:00:00+01:00"),
        ("weekly mon,thu 06:00", at(BERLIN, 2026, 11, 26, 7, 0), "2026-11-30T06:00:00+01:00",
         "2026-11-26T06:00:00+01:00"),
        ("weekly sun 23:00", at(BERLIN, 2026, 11, 30, 0, 0), "2026-12-06T23:00:00+01:00",
         "2026-11-29T23:00:00+01:00"),
        # monthly on a day, across the year end
        ("monthly 1 04:00", at(BERLIN, 2026, 12, 15), "2027-01-01T04:00:00+01:00",
         "2026-12-01T04:00:00+01:00"),
        ("monthly 28 04:00", at(BERLIN, 2025, 2, 28, 4, 0), "2025-03-28T04:00:00+01:00",
         "2025-02-28T04:00:00+01:00"),
        # monthly last: February in a leap year and in a common year, 30- and 31-day months
        ("monthly last 23:30", at(BERLIN, 2024, 2, 28, 23, 30), "2024-02-29T23:30:00+01:00",
         "2024-01-31T23:30:00+01:00"),
        ("monthly last 23:30", at(BERLIN, 2025, 2, 27, 12), "2025-02-28T23:30:00+01:00",
         "2025-01-31T23:30:00+01:00"),
        ("monthly last 23:30", at(BERLIN, 2025, 3, 1), "2025-03-31T23:30:00+02:00",
         "2025-02-28T23:30:00+01:00"),
        ("monthly last 23:30", at(BERLIN, 2100, 2, 1), "2100-02-28T23:30:00+01:00",
         "2100-01-31T23:30:00+01:00"),
        ("monthly last 00:00", at(BERLIN, 2026, 4, 30, 0, 0), "2026-05-31T00:00:00+02:00",
         "2026-04-30T00:00:00+02:00"),
    ],
)  # fmt: skip
def test_next_and_previous(
    text: str, moment: datetime, expected_next: str, expected_previous: str
) -> None:
    schedule = parse(text)
    assert iso(schedule.next_after(moment, BERLIN)) == expected_next
    assert iso(schedule.previous_at_or_before(moment, BERLIN)) == expected_previous


def test_results_are_in_the_given_zone_whatever_the_moment_zone() -> None:
    moment = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)  # 14:00 in Berlin, 08:00 in New York
    schedule = parse("daily 10:00")
    assert iso(schedule.next_after(moment, BERLIN)) == "2026-07-02T10:00:00+02:00"
    assert iso(schedule.next_after(moment, NEW_YORK)) == "2026-07-01T10:00:00-04:00"
    assert schedule.next_after(moment, NEW_YORK).tzinfo is NEW_YORK


def test_naive_moment_is_refused() -> None:
    with pytest.raises(ValueError, match="has no time zone"):
        parse("daily 02:30").next_after(datetime(2026, 1, 1), BERLIN)


# --------------------------------------------------------------------------- DST


def test_spring_forward_nonexistent_time_runs_at_end_of_gap_berlin() -> None:
    # 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that day.
    schedule = parse("daily 02:30")
    run = schedule.next_after(at(BERLIN, 2026, 3, 28, 12), BERLIN)
    assert iso(run) == "2026-03-29T03:00:00+02:00"
    assert iso(utc(run)) == "2026-03-29T01:00:00+00:00"
    assert iso(schedule.next_after(run, BERLIN)) == "2026-03-30T02:30:00+02:00"
    just_before_the_jump = datetime(2026, 3, 29, 0, 59, 59, tzinfo=UTC)  # 01:59:59 CET
    assert iso(schedule.previous_at_or_before(just_before_the_jump, BERLIN)) == (
        "2026-03-28T02:30:00+01:00"
    )
    assert schedule.previous_at_or_before(run, BERLIN) == run


def test_fall_back_repeated_time_runs_once_at_first_occurrence_berlin() -> None:
    # 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
    schedule = parse("daily 02:30")
    run = schedule.next_after(at(BERLIN, 2026, 10, 24, 12), BERLIN)
    assert iso(run) == "2026-10-25T02:30:00+02:00"
    second_0230 = at(BERLIN, 2026, 10, 25, 2, 30, fold=1)
    assert iso(utc(second_0230)) == "2026-10-25T01:30:00+00:00"
    assert iso(schedule.next_after(run, BERLIN)) == "2026-10-26T02:30:00+01:00"
    assert iso(schedule.next_after(second_0230, BERLIN)) == "2026-10-26T02:30:00+01:00"
    assert utc(schedule.previous_at_or_before(second_0230, BERLIN)) == utc(run)


def test_hourly_across_dst_runs_every_real_hour_berlin() -> None:
    schedule = parse("hourly :15")

    def runs(start: datetime, count: int) -> list[str]:
        found, moment = [], start
        for _ in range(count):
            moment = schedule.next_after(moment, BERLIN)
            found.append(iso(moment))
        return found

    # Spring forward: no 02:15 that day, and 01:15 CET to 03:15 CEST is one real hour.
    assert runs(at(BERLIN, 2026, 3, 29, 0, 30), 3) == [
        "2026-03-29T01:15:00+01:00",
        "2026-03-29T03:15:00+02:00",
        "2026-03-29T04:15:00+02:00",
    ]
    # Fall back: 02:15 runs twice, once per real hour.
    assert runs(at(BERLIN, 2026, 10, 25, 0, 30), 4) == [
        "2026-10-25T01:15:00+02:00",
        "2026-10-25T02:15:00+02:00",
        "2026-10-25T02:15:00+01:00",
        "2026-10-25T03:15:00+01:00",
    ]
    # Previous from inside the repeated hour picks the right occurrence.
    second = at(BERLIN, 2026, 10, 25, 2, 20, fold=1)
    assert iso(schedule.previous_at_or_before(second, BERLIN)) == "2026-10-25T02:15:00+01:00"
    first = at(BERLIN, 2026, 10, 25, 2, 20, fold=0)
    assert iso(schedule.previous_at_or_before(first, BERLIN)) == "2026-10-25T02:15:00+02:00"


def test_dst_new_york() -> None:
    # 2026-03-08: 02:00 EST becomes 03:00 EDT. 2026-11-01: 02:00 EDT becomes 01:00 EST.
    daily = parse("daily 02:15")
    assert iso(daily.next_after(at(NEW_YORK, 2026, 3, 7, 12), NEW_YORK)) == (
        "2026-03-08T03:00:00-04:00"
    )
    repeated = parse("daily 01:30")
    run = repeated.next_after(at(NEW_YORK, 2026, 10, 31, 12), NEW_YORK)
    assert iso(run) == "2026-11-01T01:30:00-04:00"
    assert iso(repeated.next_after(run, NEW_YORK)) == "2026-11-02T01:30:00-05:00"
    hourly = parse("hourly :45")
    moment, found = at(NEW_YORK, 2026, 11, 1, 0, 50), []
    for _ in range(3):
        moment = hourly.next_after(moment, NEW_YORK)
        found.append(iso(moment))
    assert found == [
        "2026-11-01T01:45:00-04:00",
        "2026-11-01T01:45:00-05:00",
        "2026-11-01T02:45:00-05:00",
    ]
    # A weekly run on the spring-forward Sunday moves to the end of the gap too.
    weekly = parse("weekly sun 02:30")
    assert iso(weekly.previous_at_or_before(at(NEW_YORK, 2026, 3, 9), NEW_YORK)) == (
        "2026-03-08T03:00:00-04:00"
    )


def test_monthly_last_on_a_dst_day() -> None:
    # 2024-03-31 is the last day of March and the EU spring-forward day.
    schedule = parse("monthly last 02:30")
    assert iso(schedule.next_after(at(BERLIN, 2024, 3, 15), BERLIN)) == (
        "2024-03-31T03:00:00+02:00"
    )


def test_a_skipped_day_runs_at_the_end_of_the_gap() -> None:
    apia = ZoneInfo("Pacific/Apia")  # skipped 2011-12-30 entirely
    schedule = parse("daily 02:30")
    assert iso(schedule.next_after(at(apia, 2011, 12, 29, 12), apia)) == (
        "2011-12-31T00:00:00+14:00"
    )


def test_local_zone_with_dateutil_tzfile() -> None:
    from dateutil.tz import gettz

    berlin = gettz("Europe/Berlin")
    run = parse("daily 02:30").next_after(datetime(2026, 3, 28, 12, tzinfo=UTC), berlin)
    assert iso(utc(run)) == "2026-03-29T01:00:00+00:00"


def test_zone() -> None:
    assert zone("Europe/Berlin") is BERLIN
    local = zone(None)
    assert datetime(2026, 1, 1, tzinfo=local).utcoffset() is not None


# --------------------------------------------------------------------------- properties

SCHEDULES = st.one_of(
    st.builds(lambda m: f"hourly :{m:02d}", st.integers(0, 59)),
    st.builds(lambda h, m: f"daily {h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59)),
    st.builds(
        lambda days, h, m: f"weekly {','.join(days)} {h:02d}:{m:02d}",
        st.lists(st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]),
                 min_size=1, max_size=7, unique=True),
        st.integers(0, 23),
        st.integers(0, 59),
    ),
    st.builds(
        lambda d, h, m: f"monthly {d} {h:02d}:{m:02d}",
        st.sampled_from([*range(1, 29), "last"]),
        st.integers(0, 23),
        st.integers(0, 59),
    ),
)  # fmt: skip
ZONES = st.sampled_from([BERLIN, NEW_YORK, UTC, ZoneInfo("Australia/Lord_Howe")])
MOMENTS = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2060, 1, 1), timezones=st.just(UTC)
)


@settings(max_examples=examples(300), deadline=None)
@given(SCHEDULES, ZONES, MOMENTS)
def test_next_and_previous_bracket_the_moment(text: str, tz, moment: datetime) -> None:
    schedule = parse(text)
    following = schedule.next_after(moment, tz)
    previous = schedule.previous_at_or_before(moment, tz)
    assert utc(previous) <= moment < utc(following)
    # next_after(t) is itself a scheduled time, and nothing is scheduled between the two.
    assert utc(schedule.previous_at_or_before(following, tz)) == utc(following)
    assert utc(schedule.next_after(previous, tz)) == utc(following)
    assert following.tzinfo is tz and previous.tzinfo is tz
    assert following - previous <= timedelta(days=32)


# --------------------------------------------------------------------------- overdue

DAILY = parse("daily 02:30")
GRACE = timedelta(hours=1)


def overdue(last: datetime | None, now: datetime, since: datetime | None = None) -> bool:
    return is_overdue(DAILY, last, since, now, BERLIN, GRACE)


def test_not_overdue_within_grace() -> None:
    yesterday = at(BERLIN, 2026, 5, 3, 2, 30, 5)
    assert not overdue(yesterday, at(BERLIN, 2026, 5, 4, 3, 29))


def test_overdue_after_grace_without_success() -> None:
    yesterday = at(BERLIN, 2026, 5, 3, 2, 30, 5)
    assert overdue(yesterday, at(BERLIN, 2026, 5, 4, 3, 31))


def test_not_overdue_after_a_successful_run_for_the_slot() -> None:
    assert not overdue(at(BERLIN, 2026, 5, 4, 2, 30, 1), at(BERLIN, 2026, 5, 4, 9))
    assert not overdue(at(BERLIN, 2026, 5, 4, 2, 30, 0), at(BERLIN, 2026, 5, 4, 9))


def test_a_run_started_before_the_slot_does_not_answer_it() -> None:
    assert overdue(at(BERLIN, 2026, 5, 4, 2, 29), at(BERLIN, 2026, 5, 4, 9))


def test_never_run() -> None:
    now = at(BERLIN, 2026, 5, 4, 9)
    assert overdue(None, now)  # no bound known: a scheduled time passed without any success
    assert not overdue(None, now, since=at(BERLIN, 2026, 5, 4, 8))  # configured after 02:30
    assert overdue(None, now, since=at(BERLIN, 2026, 5, 4, 2, 0))  # configured before 02:30


def test_overdue_compares_instants_across_fall_back() -> None:
    # Slot 02:30 CEST on 2026-10-25; a run at 02:10 CET (fold=1) is 40 real minutes later.
    run = at(BERLIN, 2026, 10, 25, 2, 10, fold=1)
    assert not overdue(run, at(BERLIN, 2026, 10, 25, 9))


def test_overdue_across_spring_forward() -> None:
    # The 2026-03-29 slot is 03:00 CEST (the end of the gap), as cron runs it.
    assert not overdue(at(BERLIN, 2026, 3, 29, 3, 0, 20), at(BERLIN, 2026, 3, 29, 9))
    assert overdue(at(BERLIN, 2026, 3, 28, 2, 30, 20), at(BERLIN, 2026, 3, 29, 4, 1))
    assert not overdue(at(BERLIN, 2026, 3, 28, 2, 30, 20), at(BERLIN, 2026, 3, 29, 3, 59))


def test_default_grace() -> None:
    assert default_grace(parse("hourly :15")) == timedelta(minutes=15)
    assert default_grace(DAILY) == timedelta(hours=1)
    hourly = parse("hourly :15")
    last = at(BERLIN, 2026, 5, 4, 9, 15, 2)
    assert not is_overdue(hourly, last, None, at(BERLIN, 2026, 5, 4, 10, 29), BERLIN)
    assert is_overdue(hourly, last, None, at(BERLIN, 2026, 5, 4, 10, 31), BERLIN)


# --------------------------------------------------------------------------- import cost


def test_import_is_light() -> None:
    """Status commands import this module: it must not pull in dateutil (or anything heavy)."""
    code = (
        "import sys, campaign_sync.core.schedule as s; s.parse('monthly last 23:30'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'dateutil', 'zoneinfo', 'paramiko', 'rich', 'click'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
