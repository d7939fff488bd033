"""Shell completion of job names (Click's own mechanism does commands and options).

`eval "$(_CAMPAIGN_SYNC_COMPLETE=bash_source campaign-sync)"` (zsh_source, fish_source) asks
the installed command for completions; this module answers for the JOB arguments with the
names of the config's jobs that the command can run. It must be fast and silent: a broken or
missing config, or a secret the shell does not have, gives no completions, never an error.
"""

from __future__ import annotations

import os
from typing import Any

import click

# The job types each command takes; None: any job (history).
TYPES_BY_COMMAND = {
    "import": ("-import",),
    "export": ("-export",),
    "dispatch": ("doi-dispatch",),
    "sends": ("doi-dispatch",),  # sends JOB, sends list JOB, sends settle JOB
}


class _EveryVariable(dict[str, str]):
    """The environment, with a stand-in for each unset ${VAR}: an operator's shell rarely
    holds the SMTP password, and job names do not depend on it."""

    def __contains__(self, name: object) -> bool:
        return True

    def __missing__(self, name: str) -> str:
        return "unset-in-this-shell"


def complete_jobs(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[Any]:
    """The names of the config's jobs that this command runs, starting with `incomplete`."""
    from click.shell_completion import CompletionItem

    try:
        from campaign_sync import config as config_module

        path = ctx.find_root().params.get("config_path")
        config = config_module.load(path, env=_EveryVariable(os.environ))
    except Exception:  # noqa: BLE001 - completion must stay silent whatever is wrong
        return []
    wanted = TYPES_BY_COMMAND.get(_command_name(ctx))
    found = [
        CompletionItem(name, help=job.type)
        for name, job in config.jobs.items()
        if name.startswith(incomplete) and (wanted is None or job.type.endswith(wanted))
    ]
    if wanted is None:  # history: the store's own runs too
        from campaign_sync.config.model import RESERVED_JOBS

        found += [CompletionItem(name) for name in RESERVED_JOBS if name.startswith(incomplete)]
    return found


def _command_name(ctx: click.Context) -> str:
    """The top-level command's name: `sends` for `sends list` and `sends settle`."""
    while ctx.parent is not None and ctx.parent.parent is not None:
        ctx = ctx.parent
    return ctx.info_name or ""
