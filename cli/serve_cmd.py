"""`campaign-sync serve`: the read-only HTTP service (JSON API, metrics, status page).

The command is built by a function that takes the main command's decorators, so this module
need not import cli.main, which registers it. The server is imported only when it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

DEFAULT_BIND = "127.0.0.1:8080"


def serve_command(pass_settings: Decorator, engine_call: Decorator) -> Any:
    """The `serve` command, wrapped like every other command of main."""

    @click.command("serve")
    @click.option(
        "--bind",
        default=DEFAULT_BIND,
        show_default=True,
        metavar="HOST:PORT",
        help="Address to listen on ([::1]:PORT for IPv6). Without serve.token only a "
        "loopback address is allowed.",
    )
    @pass_settings
    @engine_call
    def serve(settings: Any, bind: str) -> None:
        """Serve job status over HTTP (JSON API, metrics, status page); read-only."""
        from campaign_sync.serve.server import serve as run

        from .logs import setup_logging

        config = settings.config()
        # A server's log is its access log: one line per request on stderr unless -q.
        setup_logging(max(settings.verbose, 1), settings.quiet, config.log_file)
        run(config, bind)

    return serve
