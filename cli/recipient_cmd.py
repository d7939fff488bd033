"""`campaign-sync recipient ADDRESS`: what the store holds about one address (read-only).

Built by a function that takes the main command's decorators (JSON option, settings, engine
errors), like cli/store_cmd.py, so this module need not import cli.main, which registers it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from . import output

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def recipient_command(
    json_option: Decorator, pass_settings: Decorator, engine_call: Decorator
) -> Any:
    """The `recipient` command, wrapped like every other command of main."""

    @click.command("recipient")
    @click.argument("address")
    @json_option
    @pass_settings
    @engine_call
    def recipient(settings: Any, address: str) -> None:
        """Everything the store holds about ADDRESS, and why it is (not) mailed."""
        from campaign_sync.core.schedule import zone
        from campaign_sync.ops import monitor
        from campaign_sync.ops.recipient import address_argument, lookup

        normalised = address_argument(address)  # before the config: a typo is the question
        config = settings.config()
        with monitor.opened_store(config) as store:
            document = lookup(config, store, normalised)
        if settings.as_json:
            output.emit_json(document)
        else:
            show(document, zone(config.timezone))

    return recipient


def show(document: dict[str, Any], tz: Any) -> None:
    """The document as a heading and one table per part (`none` for an empty part)."""
    when = lambda stamp: output._when(stamp, tz)  # noqa: E731 - a short local alias
    click.echo(document["address"])
    lists = document["lists"]
    _part(
        "Lists",
        ["LIST", "STATUS", "ACTIVE", "DOI CONFIRMED", "FIELDS", "WHY NOT"],
        [
            [
                m["list"],
                m["status"],
                "yes" if m["active"] else "no",
                when(m["doi_confirmed_at"]),
                " ".join(f"{k}={v}" for k, v in sorted(m["fields"].items())) or "-",
                m["why_not"] or "-",
            ]
            for m in lists
        ],
    )
    _part(
        "Dispatch",
        ["JOB", "LIST", "NEXT RUN SENDS", "WHY NOT"],
        [
            [d["job"], m["list"], "yes" if d["next_run_sends"] else "no", d["why_not"] or "-"]
            for m in lists
            for d in m["dispatch"]
        ],
    )
    _part(
        "Unsubscriptions",
        ["LIST", "WHEN", "REASON"],
        [
            [u["list"] or "(all lists)", when(u["unsubscribed_at"]), u["reason"] or "-"]
            for u in document["unsubscriptions"]
        ],
    )
    _part(
        "Bounces",
        ["TYPE", "WHEN", "SOURCE", "DETAIL"],
        [
            [b["type"], when(b["bounced_at"]), b["source"] or "-", b["detail"] or "-"]
            for b in document["bounces"]
        ],
    )
    _part(
        "Blocklist patterns",
        ["PATTERN", "REASON"],
        [[p["pattern"], p["reason"] or "-"] for p in document["blocklist"]],
    )
    _part(
        "Sends",
        ["JOB", "MAILING", "STATE", "ATTEMPTS", "WHEN", "MESSAGE-ID"],
        [
            [
                s["job"],
                s["mailing"],
                s["state"],
                str(s["attempts"]),
                when(s["updated_at"]),
                s["message_id"],
            ]
            for s in document["sends"]
        ],  # fmt: skip
    )


def _part(title: str, headers: list[str], rows: list[list[str]]) -> None:
    if not rows:
        click.echo(f"{title}: none")
        return
    click.echo(f"{title}:")
    output._table("", headers, rows)
