"""The HTML status page at `/` (placeholder: a list of the configured job names)."""

from __future__ import annotations

import datetime
import html

from ..config.model import Config
from ..store.base import Store


def status_page(config: Config, store: Store | None, now: datetime.datetime) -> str:
    """The status page as one HTML document, read from the open read-only `store` (None
    when no run has created it yet) as of `now` (aware, UTC)."""
    items = "".join(f"<li>{html.escape(name)}</li>" for name in config.jobs)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>campaign-sync</title></head>"
        f"<body><h1>campaign-sync</h1><ul>{items}</ul></body></html>\n"
    )
