"""Remote path templates: ``/import/newsletter_{date:%Y%m%d}.csv`` rendered for a day."""

from __future__ import annotations

import datetime
import posixpath
import re

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def render(template: str, day: datetime.date) -> str:
    """Fill ``{date}`` (ISO) and ``{date:<strftime>}`` placeholders; ValueError on others."""

    def substitute(match: re.Match[str]) -> str:
        name, _, spec = match.group(1).partition(":")
        if name != "date":
            raise ValueError(
                f"unknown placeholder {{{match.group(1)}}} "
                "(only {date} and {date:%Y%m%d}-style placeholders)"
            )
        return day.strftime(spec) if spec else day.isoformat()

    rendered = _PLACEHOLDER.sub(substitute, template)
    if "{" in rendered or "}" in rendered:
        raise ValueError(f"unbalanced braces in path '{template}'")
    return rendered


def basename(remote_path: str) -> str:
    return posixpath.basename(remote_path)
