"""Job schedules: the documented grammar, next and previous run times, and the `overdue` test.

Grammar (one line, keywords and weekday names case-insensitive)::

    hourly :MM
    daily HH:MM
    weekly mon[,thu,...] HH:MM
    monthly 1..28|last HH:MM

Times are wall-clock times in the config's `timezone` (default: the machine's zone). Run times
follow what cron itself does (Debian cron 3.0pl1 and cronie, see cron(8) "daylight savings"),
because cron is what starts the runs:

* A fixed time (daily, weekly, monthly) that does not exist on a spring-forward day, e.g.
  `daily 02:30` in Europe/Berlin on the last Sunday of March, runs once, at the end of the gap
  (03:00 local): cron runs jobs of the skipped time "soon after the change".
* A fixed time that occurs twice on a fall-back day runs once, at its first occurrence (the
  daylight-saving one): cron does not re-run jobs in the repeated time.
* `hourly :MM` has a wildcard hour, which cron matches against the new clock at once: it skips
  the nonexistent `02:MM` on a spring-forward day (no real hour is lost: 01:MM and 03:MM are an
  hour apart) and runs at both `02:MM` on a fall-back day, so it runs once every real hour.

The module imports only the standard library's light parts; dateutil is imported inside the
functions that compute, so that parsing a config (and `validate`, `check`) stays fast.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from functools import partial

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from dateutil.rrule import rrule

GRAMMAR = "'hourly :MM', 'daily HH:MM', 'weekly mon[,thu] HH:MM' or 'monthly 1..28|last HH:MM'"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
LAST_DAY = -1  # Schedule.monthday for `monthly last` (rrule's bymonthday=-1)

_TIME = re.compile(r"(\d\d):(\d\d)")
_MINUTE = re.compile(r":(\d\d)")
_DAY = re.compile(r"\d{1,2}")

# How far back previous_at_or_before starts looking: one period plus room for a day that a
# zone skipped entirely (Pacific/Apia, 2011-12-30) and for a run moved to the end of a gap.
_LOOKBACK = {
    "hourly": timedelta(days=2),
    "daily": timedelta(days=3),
    "weekly": timedelta(days=9),
    "monthly": timedelta(days=64),
}


class ScheduleError(ValueError):
    """A schedule string that does not follow the grammar."""


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule. Build it with `parse`; `text` is the normalised form."""

    text: str
    kind: str  # hourly | daily | weekly | monthly
    minute: int
    hour: int | None = None  # None for hourly
    weekdays: tuple[int, ...] = ()  # weekly: 0 = Monday … 6 = Sunday, ascending
    monthday: int | None = None  # monthly: 1..28, or LAST_DAY

    def __str__(self) -> str:
        return self.text

    def next_after(self, moment: datetime, tz: tzinfo) -> datetime:
        """The first scheduled time strictly after `moment`, as an aware datetime in `tz`.

        `moment` must be timezone-aware. Compare results by instant (e.g. `.timestamp()`), not
        with `==` against another datetime of the same zone: Python compares same-zone datetimes
        by wall clock and ignores `fold`, which is wrong in a repeated hour.
        """
        after = _utc(moment)
        start = _wall(after, tz) - timedelta(days=2)
        for instant in self._instants(start, tz):
            if instant > after:
                return instant.astimezone(tz)
        raise AssertionError("unreachable: a schedule recurs forever")  # pragma: no cover

    def previous_at_or_before(self, moment: datetime, tz: tzinfo) -> datetime:
        """The latest scheduled time at or before `moment`, as an aware datetime in `tz`.

        Every schedule of the grammar recurs at least monthly, so there always is one.
        """
        until = _utc(moment)
        start = _wall(until, tz) - _LOOKBACK[self.kind]
        found: datetime | None = None
        for instant in self._instants(start, tz):
            if instant > until:
                break
            found = instant
        if found is None:  # pragma: no cover - the lookback covers a whole period
            raise AssertionError(f"no occurrence of {self.text!r} in the lookback window")
        return found.astimezone(tz)

    def _instants(self, start: datetime, tz: tzinfo) -> Iterator[datetime]:
        """Run times from the naive wall-clock time `start` on, as ascending UTC datetimes."""
        for wall in self._rule(start):
            yield from _resolve(wall, tz, every_occurrence=self.kind == "hourly")

    def _rule(self, start: datetime) -> rrule:
        """The recurrence in naive wall-clock time from `start` (dateutil imported only here)."""
        from dateutil.rrule import DAILY, HOURLY, MONTHLY, WEEKLY, rrule, weekday

        dtstart = start.replace(second=0, microsecond=0, tzinfo=None, fold=0)
        if self.kind == "hourly":
            return rrule(HOURLY, dtstart=dtstart, byminute=self.minute, bysecond=0)
        at = partial(rrule, dtstart=dtstart, byhour=self.hour, byminute=self.minute, bysecond=0)
        if self.kind == "daily":
            return at(DAILY)
        if self.kind == "weekly":
            days = [weekday(day) for day in self.weekdays]
            return at(WEEKLY, byweekday=days)
        return at(MONTHLY, bymonthday=self.monthday)


def parse(text: str) -> Schedule:
    """Parse a schedule string, or raise ScheduleError saying what is wrong and the grammar."""
    if not isinstance(text, str):
        raise ScheduleError(f"a schedule must be text, not {type(text).__name__}; use {GRAMMAR}")
    # "mon, thu" is read as "mon,thu": the space is a slip, not a different meaning.
    words = re.sub(r"\s*,\s*", ",", text.strip()).lower().split()
    if not words:
        raise ScheduleError(f"the schedule is empty; use {GRAMMAR}")
    kind, args = words[0], words[1:]
    parser = _PARSERS.get(kind)
    if parser is None:
        raise _error(text, f"unknown kind '{kind}' (hourly, daily, weekly or monthly)")
    return parser(text, args)


def zone(name: str | None) -> tzinfo:
    """The tzinfo for a config's `timezone`: the named IANA zone, or the machine's zone."""
    if name:
        from zoneinfo import ZoneInfo

        return ZoneInfo(name)
    # gettz() reads $TZ or /etc/localtime as a full zone file (all transitions, fold support);
    # it falls back to the C library's idea of local time.
    from dateutil.tz import gettz

    return gettz() or timezone.utc


# --------------------------------------------------------------------------- overdue


def default_grace(schedule: Schedule) -> timedelta:
    """How long after a scheduled time a job may still be without a successful run.

    cron starts a job within the minute, so the grace mostly covers the run itself (a run still
    in progress has not succeeded yet) and a busy machine. One hour suits daily and longer
    periods; an hourly job gets 15 minutes, because with a grace near its period a missed run
    would barely show before the next run hides it.
    """
    return timedelta(minutes=15) if schedule.kind == "hourly" else timedelta(hours=1)


def is_overdue(
    schedule: Schedule,
    last_success: datetime | None,
    configured_since: datetime | None,
    now: datetime,
    tz: tzinfo,
    grace: timedelta | None = None,
) -> bool:
    """True when the latest scheduled time at least `grace` ago has no successful run after it.

    - `last_success`: when the latest successful run *started* (status `succeeded`, and, by the
      caller's choice, `skipped` as already imported: cron did run the job). A run started at or
      after a scheduled time answers that time; start times match runs to slots exactly, while
      finish times would let an overlong run that started before the slot hide a missed slot.
    - `configured_since`: when the job was first known (e.g. its first recorded run or first
      sighting in the config); scheduled times before it are not owed. None: no such bound.
    - `grace`: None means `default_grace(schedule)`.

    A job that is running right now is the caller's business: its `running` state should take
    precedence, since its current run has not succeeded yet. With no success and no
    `configured_since` the job is overdue once a scheduled time has passed; callers usually
    report that as `never-run`. All datetimes must be timezone-aware.
    """
    if grace is None:
        grace = default_grace(schedule)
    due = _utc(schedule.previous_at_or_before(_utc(now) - grace, tz))
    if configured_since is not None and due < _utc(configured_since):
        return False
    return last_success is None or _utc(last_success) < due


# --------------------------------------------------------------------------- parsing


def _error(text: str, problem: str) -> ScheduleError:
    return ScheduleError(f"'{text.strip()}' is not a valid schedule: {problem}; use {GRAMMAR}")


def _expect(text: str, kind: str, args: list[str], shape: str) -> None:
    """Check the argument count of a kind, e.g. `daily` takes exactly `HH:MM`."""
    if len(args) != shape.count(" ") + 1:
        raise _error(text, f"'{kind}' takes '{shape}'")


def _time(text: str, word: str) -> tuple[int, int]:
    match = _TIME.fullmatch(word)
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise _error(text, f"'{word}' is not a time HH:MM (00:00 to 23:59)")
    return int(match[1]), int(match[2])


def _hourly(text: str, args: list[str]) -> Schedule:
    _expect(text, "hourly", args, ":MM")
    match = _MINUTE.fullmatch(args[0])
    if not match or int(match[1]) > 59:
        raise _error(text, f"'{args[0]}' is not a minute :MM (:00 to :59)")
    minute = int(match[1])
    return Schedule(f"hourly :{minute:02d}", "hourly", minute)


def _daily(text: str, args: list[str]) -> Schedule:
    _expect(text, "daily", args, "HH:MM")
    hour, minute = _time(text, args[0])
    return Schedule(f"daily {hour:02d}:{minute:02d}", "daily", minute, hour)


def _weekly(text: str, args: list[str]) -> Schedule:
    _expect(text, "weekly", args, "mon[,thu] HH:MM")
    days: list[int] = []
    for name in args[0].split(","):
        if name not in WEEKDAYS:
            raise _error(text, f"'{name}' is not a weekday ({', '.join(WEEKDAYS)})")
        if WEEKDAYS.index(name) in days:
            raise _error(text, f"weekday '{name}' is listed twice")
        days.append(WEEKDAYS.index(name))
    hour, minute = _time(text, args[1])
    weekdays = tuple(sorted(days))
    names = ",".join(WEEKDAYS[day] for day in weekdays)
    return Schedule(f"weekly {names} {hour:02d}:{minute:02d}", "weekly", minute, hour, weekdays)


def _monthly(text: str, args: list[str]) -> Schedule:
    _expect(text, "monthly", args, "1..28|last HH:MM")
    day_word = args[0]
    if day_word == "last":
        monthday = LAST_DAY
    elif _DAY.fullmatch(day_word) and 1 <= int(day_word) <= 28:
        monthday = int(day_word)
    elif _DAY.fullmatch(day_word) and 29 <= int(day_word) <= 31:
        raise _error(text, f"day {day_word} does not occur in every month: use 1..28 or 'last'")
    else:
        raise _error(text, f"'{day_word}' is not a day of the month (1..28 or 'last')")
    hour, minute = _time(text, args[1])
    day_text = "last" if monthday == LAST_DAY else str(monthday)
    return Schedule(
        f"monthly {day_text} {hour:02d}:{minute:02d}", "monthly", minute, hour, monthday=monthday
    )


_PARSERS = {"hourly": _hourly, "daily": _daily, "weekly": _weekly, "monthly": _monthly}


# --------------------------------------------------------------------------- time zones


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment.isoformat()} has no time zone; schedules need aware datetimes")
    return moment.astimezone(timezone.utc)


def _wall(instant: datetime, tz: tzinfo) -> datetime:
    """The naive wall-clock time in `tz` at an instant."""
    return instant.astimezone(tz).replace(tzinfo=None)


def _resolve(wall: datetime, tz: tzinfo, every_occurrence: bool) -> Iterator[datetime]:
    """The UTC instant(s) at which the naive wall-clock time `wall` in `tz` is run.

    Unambiguous: that instant. Repeated (fall-back): the first occurrence, or both with
    `every_occurrence` (hourly). Nonexistent (spring-forward gap): the end of the gap, or none
    with `every_occurrence`. See the module docstring for why (it is what cron does).
    """
    first = wall.replace(tzinfo=tz, fold=0).astimezone(timezone.utc)
    second = wall.replace(tzinfo=tz, fold=1).astimezone(timezone.utc)
    hits = [t for t in sorted({first, second}) if _wall(t, tz) == wall]
    if hits:
        yield from hits if every_occurrence else hits[:1]
    elif not every_occurrence:
        yield _gap_end(wall, tz, min(first, second), max(first, second))


def _gap_end(wall: datetime, tz: tzinfo, low: datetime, high: datetime) -> datetime:
    """The first instant whose wall-clock time in `tz` is past the nonexistent `wall`.

    That is the transition that opened the gap. Bisect on whole seconds between bounds that are
    safely before and after it (a day either side, since a zone may skip a whole day).
    """
    lo = int((low - timedelta(days=1)).timestamp())  # wall clock before `wall`
    hi = int((high + timedelta(days=1)).timestamp())  # wall clock after `wall`
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _wall(datetime.fromtimestamp(mid, timezone.utc), tz) > wall:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, timezone.utc)
