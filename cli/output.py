"""Rendering results: one JSON document, a rich table on a terminal, plain lines otherwise."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import Any

import click

from campaign_sync.result import RunResult


def emit_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))


def _fancy() -> bool:
    """Rich tables only for a person at a terminal; cron mail and pipes get plain text."""
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


def show_runs(results: list[RunResult], as_json: bool, *, quiet: bool = False) -> None:
    """A command's runs: one run as its document, several (a pattern source's new files)
    as a list of them in the order they ran, each shown in turn without --json."""
    if len(results) == 1:
        show_run(results[0], as_json, quiet=quiet)
        return
    if as_json:
        emit_json([result.as_dict() for result in results])
        for result in results:
            if result.error:
                click.echo(f"campaign-sync: error: {result.error}", err=True)
        return
    for result in results:
        show_run(result, as_json, quiet=quiet)


def show_run(result: RunResult, as_json: bool, *, quiet: bool = False) -> None:
    if as_json:
        emit_json(result.as_dict())
        if result.error:  # cron mail and logs see the failure without parsing JSON
            click.echo(f"campaign-sync: error: {result.error}", err=True)
        return
    if quiet and result.status in ("succeeded", "skipped") and not result.warnings:
        return  # -q is for cron: a run that went well mails nobody
    echo = click.echo
    head = f"{result.job}: {result.status}"
    if result.dry_run:
        head += " (dry run)"
    if result.duration_seconds is not None:
        head += f" in {result.duration_seconds:.2f} s"
    echo(head)
    if result.file:
        echo(
            f"  file: {result.file.path} ({result.file.bytes:,} bytes, sha256 "
            f"{result.file.sha256[:12]}…)"
        )
    counts = result.ordered_counts()
    if counts:
        echo("  " + ", ".join(f"{name} {value:,}" for name, value in counts.items()))
    if result.message:
        echo(f"  {result.message}")
    if result.rejects_file:
        echo(f"  rejects: {result.rejects_file}")
        for reject in result.first_rejects[:5]:
            echo(f"    line {reject['line']}: {reject['reason']}")
    for warning in result.warnings:
        echo(f"  warning: {warning}")
    if result.error:
        click.echo(f"campaign-sync: error: {result.error}", err=True)


def _table(title: str, headers: Sequence[str], rows: list[list[str]]) -> None:
    if _fancy():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, title_justify="left")
        for header in headers:
            table.add_column(header)
        for row in rows:
            table.add_row(*row)
        Console().print(table)
        return
    widths = [
        max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)
    ]
    for row in [list(headers), *rows]:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _when(stamp: str | None, tz: tzinfo | None) -> str:
    """A stored time, shown in the config's time zone like the schedules it sits beside."""
    if not stamp:
        return "-"
    return datetime.fromisoformat(stamp).astimezone(tz).strftime("%Y-%m-%d %H:%M")


def show_jobs(
    states: list[dict[str, Any]], as_json: bool, *, running_only: bool, tz: tzinfo | None = None
) -> None:
    if as_json:
        emit_json(states)
        return
    if running_only:
        rows = [
            [
                s["name"],
                s["type"],
                s["running"]["host"] or "-",
                str(s["running"]["pid"]),
                _when(s["running"]["started"], tz),
                f"{s['running']['elapsed_seconds']:.0f} s",
            ]
            for s in states
        ]
        if not rows:
            click.echo("no job is running")
            return
        _table("Running jobs", ["JOB", "TYPE", "HOST", "PID", "STARTED", "ELAPSED"], rows)
        return
    rows = []
    for s in states:
        last = s["last_run"]
        last_text = (
            f"{last['status']} {_when(last['finished'] or last['started'], tz)}" if last else "-"
        )
        rows.append(
            [
                s["name"],
                s["type"],
                s["list"] or "-",
                s["schedule"] or "-",
                _when(s["next_run"], tz),
                s["state"],
                last_text,
            ]
        )
    _table("Jobs", ["JOB", "TYPE", "LIST", "SCHEDULE", "NEXT RUN", "STATE", "LAST RUN"], rows)


def show_history(records: list[dict[str, Any]], as_json: bool, tz: tzinfo | None = None) -> None:
    if as_json:
        emit_json(records)
        return
    rows = []
    for r in records:
        counts = ", ".join(f"{k} {v}" for k, v in r["counts"].items() if v)
        detail = r["error"] or r["message"] or counts
        rows.append(
            [
                str(r["run_id"]),
                r["job"],
                r["status"],
                _when(r["started"], tz),
                f"{r['duration_seconds']:.1f} s" if r["duration_seconds"] is not None else "-",
                (detail or "")[:80],
            ]
        )
    if not rows:
        click.echo("no runs recorded")
        return
    _table("Runs", ["RUN", "JOB", "STATUS", "STARTED", "TOOK", "DETAIL"], rows)


def show_lists(counts: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        emit_json(counts)
        return
    rows = [
        [
            c["list"],
            f"{c['active']:,}",
            f"{c['unsubscribed']:,}",
            f"{c['blocklisted']:,}",
            f"{c['outbounced']:,}",
        ]
        for c in counts
    ]
    _table("Lists", ["LIST", "ACTIVE", "UNSUBSCRIBED", "BLOCKLISTED", "OUTBOUNCED"], rows)
