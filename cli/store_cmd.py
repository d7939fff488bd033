"""`campaign-sync store …`: commands about the store itself (today: `store copy`).

The group is built by a function that takes the main command's decorators (JSON option,
settings, engine errors), so this module need not import cli.main, which registers it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import click

from . import output

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def store_group(json_option: Decorator, pass_settings: Decorator, engine_call: Decorator) -> Any:
    """The `store` group, its commands wrapped like every other command of main."""

    @click.group("store")
    def store() -> None:
        """The store itself: copy an SQLite store into PostgreSQL."""

    @store.command("copy")
    @click.option(
        "--to",
        "url",
        required=True,
        metavar="URL",
        help="The PostgreSQL store to fill: postgresql://USER@HOST:PORT/DB (empty, or a "
        "schema without tables). Keep the password out of it (PGPASSWORD, ~/.pgpass).",
    )
    @click.option(
        "--schema",
        "schema_name",
        metavar="NAME",
        help="Schema of the target [default: the config's store_schema, else public].",
    )
    @json_option
    @pass_settings
    @engine_call
    def copy(settings: Any, url: str, schema_name: str | None) -> None:
        """Copy the config's SQLite store into an empty PostgreSQL store and verify it.

        Stop the jobs (disable cron) first: rows written after the copy starts stay behind.
        """
        _copy(settings, url, schema_name)

    return store


def _copy(settings: Any, url: str, schema_name: str | None) -> None:
    from campaign_sync.errors import UsageError
    from campaign_sync.store.base import is_url
    from campaign_sync.store.copy import copy_store

    if not is_url(url) or not _parses(url):
        raise UsageError("--to takes a PostgreSQL URL: postgresql://USER@HOST:PORT/DATABASE")
    config = settings.config()
    schema_name = schema_name or config.store_schema
    shown = not (settings.as_json or settings.quiet)
    with _row_progress(shown) as progress:
        report = copy_store(config.store, url, schema_name, progress)
    tables = [{"name": t.name, "rows": t.rows, "sha256": t.sha256} for t in report.tables]
    if settings.as_json:
        output.emit_json(
            {
                "source": report.source,
                "target": report.target,
                "schema": report.schema,
                "tables": tables,
                "rows": report.rows,
                "verified": True,
                "clock_floor": report.clock_floor,
            }
        )
        return
    width = max((len(t.name) for t in report.tables), default=0)
    for table in report.tables:
        click.echo(f"{table.name:<{width}}  {table.rows:>10} rows  sha256 {table.sha256[:16]}")
    click.echo(f"copy complete: {len(report.tables)} tables, {report.rows} rows, verified")


def _parses(url: str) -> bool:
    """Whether `url`'s host and port can be read (a port such as `x` cannot)."""
    try:
        urlsplit(url).port  # noqa: B018 - reading it is the check
    except ValueError:
        return False
    return True


@contextmanager
def _row_progress(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """A rows-done bar on stderr for a person at a terminal; None for cron, pipes, --json."""
    from campaign_sync.transfer.progress import wanted

    if not wanted(enabled=enabled):
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = bar.add_task("copying", total=None)

    def update(what: str, done: int, total: int) -> None:
        bar.update(task, description=f"{what} rows", completed=done, total=total)

    with bar:
        yield update
