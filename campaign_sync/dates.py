"""Dates in partner files: ISO 8601 by default, or the job's strptime `date_format`.

Stored as UTC ISO 8601 text so that comparisons in SQL are plain text comparisons.
A date without a time zone is read in the config's time zone.
"""

from __future__ import annotations

import datetime


def parse_date(text: str, date_format: str | None, tz: datetime.tzinfo) -> str:
    """`text` as stored UTC ISO text; ValueError with a short reason if it is no date."""
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
