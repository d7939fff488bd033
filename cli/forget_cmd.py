"""`campaign-sync forget ADDRESS... [--file PATH] [--dry-run]`: erase addresses for good.

Built by a function that takes the main command's decorators (JSON option, settings, engine
errors), as the `store` group is. The engine is campaign_sync.ops.forget; this prints its
report: counts and file names, never an address (the output may end up in cron mail).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import output

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

# The report's rows, in order: (count, label).
_ROWS = (
    ("recipients", "list memberships"),
    ("unsubscribers", "unsubscriptions"),
    ("bounces", "bounces"),
    ("sends", "dispatch sends"),
    ("blocklist", "blocklist entries"),
    ("run_texts", "run records redacted"),
    ("rejects_lines", "rejects rows"),
)


def forget_command(json_option: Decorator, pass_settings: Decorator, engine_call: Decorator) -> Any:
    """The `forget` command, wrapped like every other command of main."""

    @click.command("forget")
    @click.argument("addresses", nargs=-1, metavar="ADDRESS")
    @click.option(
        "--file",
        "file",
        type=click.Path(path_type=Path, dir_okay=False),
        help="Also erase the addresses in this file: one a line, or a CSV file with an "
        "email column.",
    )
    @click.option("--dry-run", is_flag=True, help="Count what would be erased; change nothing.")
    @json_option
    @pass_settings
    @engine_call
    def forget(settings: Any, addresses: tuple[str, ...], file: Path | None, dry_run: bool) -> None:
        """Erase addresses from the store and the rejects files, for good.

        Only a keyed hash of each address is kept, so that later imports leave it out.
        """
        from campaign_sync.ops.forget import forget as run_forget
        from campaign_sync.ops.forget import read_addresses

        wanted = read_addresses(addresses, file)  # every one checked before the config
        config = settings.config()
        report = run_forget(config, wanted, dry_run=dry_run)
        if settings.as_json:
            output.emit_json(report.as_dict())
        else:
            _show(report)
        for warning in report.warnings:
            click.echo(f"campaign-sync: warning: {warning}", err=True)

    return forget


def _show(report: Any) -> None:
    counts = report.counts()
    many = "address" if counts["addresses"] == 1 else "addresses"
    if report.dry_run:
        click.echo(f"dry run: would erase {counts['addresses']} {many}; nothing was changed")
    else:
        click.echo(f"erased {counts['addresses']} {many} (run {report.run_id})")
    for key, label in _ROWS:
        click.echo(f"  {label:<22}{counts[key]:>8}")
    for change in report.rejects:
        click.echo(f"    {change.path}: {change.lines}")
    verb = "would be" if report.dry_run else "now"
    click.echo(f"  {'kept out of imports':<22}{counts['suppressed']:>8} {verb} (keyed hash)")
