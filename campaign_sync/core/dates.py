"""Dates in partner files: ISO 8601 by default, or the job's strptime `date_format`.

Stored as UTC ISO 8601 text so that comparisons in SQL are plain text comparisons.
A date without a time zone is read in the config's time zone, and a date written with a
`date_format` is written in that zone (format_date), so an exported file reads back in as
the same moments. ISO exports write the stored text itself: UTC with its offset, which
reads back exactly whatever the zone.

A partner's date cannot lie ahead of the run that reads it: beyond CLOCK_SKEW it is refused
like a date that does not parse (a confirmation dated 2099 would otherwise outrank every
unsubscription recorded before 2099).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from functools import lru_cache
from itertools import compress, count
from operator import methodcaller

_UTC = datetime.timezone.utc
_TO_UTC = methodcaller("astimezone", _UTC)
_STORED = methodcaller("isoformat", timespec="microseconds")

# How far a partner's date may lie ahead of our clock: machines kept by NTP differ by well
# under a second, so minutes cover a badly kept clock without letting a date reach beyond
# the next run. Further ahead it is a wrong date, not a skew.
CLOCK_SKEW = datetime.timedelta(minutes=5)


def latest_allowed(now: str) -> str:
    """The latest stored date a partner file may give to a run that started at `now`."""
    return _STORED(datetime.datetime.fromisoformat(now) + CLOCK_SKEW)


def _future(text: str) -> str:
    minutes = int(CLOCK_SKEW.total_seconds() // 60)
    return f"'{text.strip()[:40]}' is in the future (more than {minutes} minutes after this run)"


def parse_date(
    text: str, date_format: str | None, tz: datetime.tzinfo, latest: str | None = None
) -> str:
    """`text` as stored UTC ISO text; ValueError with a short reason if it is no date, or
    if it is later than `latest` (a stored date, see latest_allowed)."""
    stored = _parse_one(text, date_format, tz)
    if latest is not None and stored > latest:
        raise ValueError(_future(text))
    return stored


def _parse_one(text: str, date_format: str | None, tz: datetime.tzinfo) -> str:
    text = text.strip()
    if date_format:
        moment = datetime.datetime.strptime(text, date_format)
    else:
        try:
            moment = datetime.datetime.fromisoformat(text)
        except ValueError:
            moment = _careful_iso(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.astimezone(datetime.timezone.utc).isoformat(timespec="microseconds")


def _careful_iso(text: str) -> datetime.datetime:
    from dateutil import parser

    try:
        return parser.isoparse(text)
    except (ValueError, OverflowError):
        raise ValueError(f"'{text[:40]}' is not an ISO 8601 date") from None


def parse_dates(
    texts: list[str], date_format: str | None, tz: datetime.tzinfo, latest: str | None = None
) -> tuple[list[str | None], list[tuple[int, str]]]:
    """parse_date() over a column: the stored texts (None for blank cells) and (index,
    reason) for each cell that is no date or later than `latest` (its value is then None).
    """
    out, problems = _parse_column(texts, date_format, tz)
    if latest is not None:
        for index, stored in enumerate(out):
            if stored is not None and stored > latest:
                out[index] = None
                problems.append((index, _future(texts[index])))
        problems.sort()
    return out, problems


def _parse_column(
    texts: list[str], date_format: str | None, tz: datetime.tzinfo
) -> tuple[list[str | None], list[tuple[int, str]]]:
    """ISO dates are parsed in C a column at a time; only a column holding a cell that
    datetime.fromisoformat() refuses goes cell by cell (through parse_date, so the results
    and reasons are the same)."""
    out: list[str | None] = [None] * len(texts)
    filled = list(compress(count(), texts))
    if not filled:
        return out, []
    cells = [texts[index].strip() for index in filled]
    if date_format is None and all(cells):
        try:
            moments = list(map(datetime.datetime.fromisoformat, cells))
            aware = [m if m.tzinfo is not None else m.replace(tzinfo=tz) for m in moments]
            stored = list(map(_STORED, map(_TO_UTC, aware)))
        except (ValueError, OverflowError):
            pass  # some cell needs the careful path, with its reason
        else:
            for index, text in zip(filled, stored, strict=True):
                out[index] = text
            return out, []
    problems = []
    for index in filled:
        if not texts[index].strip():
            continue
        try:
            out[index] = parse_date(texts[index], date_format, tz)
        except (ValueError, OverflowError) as exc:
            problems.append((index, str(exc)))
    return out, problems


def format_date(stored: str, date_format: str, tz: datetime.tzinfo) -> str:
    """A stored date as `date_format` writes it in the zone `tz`: parse_date's inverse, so
    that parse_date(format_date(s, f, tz), f, tz) is s again (to what the format keeps).

    The zone's rules apply to each moment (summer time included). A stored value without an
    offset, which campaign-sync never writes, is taken as UTC like every stored date.
    """
    moment = datetime.datetime.fromisoformat(stored)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_UTC)
    return moment.astimezone(tz).strftime(date_format)


# Distinct dates per export are mostly few next to its rows: an import stamps all its rows
# with one change time, and partner dates repeat. Per cell through SQLite (1M cells): ~0.2 µs
# on a hit against ~2.7 µs uncached; a miss costs ~0.5 µs more than no cache at all.
FORMAT_CACHE = 4096


def date_formatter(date_format: str, tz: datetime.tzinfo) -> Callable[[str | None], str | None]:
    """format_date() for one job, as an SQL function: blank (NULL or '') cells pass through."""

    @lru_cache(maxsize=FORMAT_CACHE)
    def formatted(value: str | None) -> str | None:
        return format_date(value, date_format, tz) if value else value

    return formatted
