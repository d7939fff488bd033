"""Job schedules: the SPEC grammar (placeholder: parsing only; next-run times come later)."""

from __future__ import annotations

import re
from dataclasses import dataclass


class ScheduleError(ValueError):
    """A schedule string that does not follow the grammar."""


_GRAMMAR = re.compile(
    r"hourly :[0-5]\d"
    r"|daily ([01]\d|2[0-3]):[0-5]\d"
    r"|weekly (mon|tue|wed|thu|fri|sat|sun)(,(mon|tue|wed|thu|fri|sat|sun))* ([01]\d|2[0-3]):[0-5]\d"
    r"|monthly ([1-9]|1\d|2[0-8]|last) ([01]\d|2[0-3]):[0-5]\d"
)


@dataclass(frozen=True)
class Schedule:
    text: str


def parse(text: str) -> Schedule:
    if not _GRAMMAR.fullmatch(text.strip()):
        raise ScheduleError(
            f"'{text}' is not a schedule: use 'hourly :MM', 'daily HH:MM', "
            "'weekly mon[,thu] HH:MM' or 'monthly 1..28|last HH:MM'"
        )
    return Schedule(text.strip())
