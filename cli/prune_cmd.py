"""`campaign-sync prune [--dry-run]`: apply `retention` now (every run applies it too).

Built by a function that takes the main command's decorators (JSON option, settings,
engine errors), like the `store` group, so this module need not import cli.main.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from . import output

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def prune_command(json_option: Decorator, pass_settings: Decorator, engine_call: Decorator) -> Any:
    """The `prune` command, wrapped like every other command of main."""

    @click.command("prune")
    @click.option("--dry-run", is_flag=True, help="Show what would be removed; remove nothing.")
    @json_option
    @pass_settings
    @engine_call
    def prune(settings: Any, dry_run: bool) -> None:
        """Remove run records and rejects files older than `retention` allows."""
        _prune(settings, dry_run)

    return prune


def _prune(settings: Any, dry_run: bool) -> None:
    from campaign_sync.ops import monitor
    from campaign_sync.ops.retention import prune

    config = settings.config()
    # No store yet (no run has made one): there are no run records, only rejects files.
    with monitor.opened_store(config) as store:
        errors = store.errors if store is not None else ()
        try:
            report = prune(config, store, dry_run=dry_run)
        except errors as exc:  # a busy or full store: one line, exit 1
            assert store is not None
            store.rollback()
            raise store.failure("cannot prune the run records of", exc) from None
    if settings.as_json:
        output.emit_json(report.as_dict())
        return
    click.echo(report.summary())
    for path in report.rejects_files:
        click.echo(f"  {path}")
