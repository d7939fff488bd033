"""`campaign-sync sends JOB` lists a doi-dispatch job's sends; `sends settle JOB ADDRESS
--delivered|--not-delivered` settles one of unknown outcome (engine: ops/sends.py).

`sends` is a group whose one named command is `settle`; any other first word is the JOB of
the listing (`sends JOB` is `sends list JOB`). Built by a function that takes the main
command's decorators, like cli/store_cmd.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from . import output
from .completion import complete_jobs

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]
# The states an operator filters by (a `sending` send is one a run holds right now).
STATES = ("unknown", "deferred", "failed", "sent")


class _ListByDefault(click.Group):
    """`sends JOB …` runs `sends list JOB …`; `sends settle …` and `sends --help` are kept."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


def _jobs_or_settle(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """After `sends `, the dispatch jobs (`sends JOB`) and the word `settle`."""
    from click.shell_completion import CompletionItem

    found = complete_jobs(ctx, param, incomplete)
    if (
        ctx.parent is not None
        and ctx.parent.info_name == "sends"
        and "settle".startswith(incomplete)
    ):
        found.append(CompletionItem("settle", help="settle a send of unknown outcome"))
    return found


def sends_group(json_option: Decorator, pass_settings: Decorator, engine_call: Decorator) -> Any:
    """The `sends` group, its commands wrapped like every other command of main."""

    @click.group("sends", cls=_ListByDefault)
    def sends() -> None:
        """A doi-dispatch job's sends: list them, settle one of unknown outcome.

        `campaign-sync sends JOB [--state STATE]` lists them (the same as `sends list`).
        """

    @sends.command("list")
    @click.argument("job", shell_complete=_jobs_or_settle)
    @click.option("--state", type=click.Choice(STATES), help="Only the sends in this state.")
    @json_option
    @pass_settings
    @engine_call
    def list_sends(settings: Any, job: str, state: str | None) -> None:
        """The sends of doi-dispatch job JOB, oldest first."""
        from campaign_sync.core.schedule import zone
        from campaign_sync.ops import monitor
        from campaign_sync.ops.sends import dispatch_job, job_sends

        config = settings.config()
        found = dispatch_job(config, job)
        with monitor.opened_store(config) as store:
            rows = job_sends(store, found, state)
        if settings.as_json:
            output.emit_json(rows)
            return
        if not rows:
            click.echo(f"no {state + ' ' if state else ''}sends of {job}")
            return
        tz = zone(config.timezone)
        output._table(
            "Sends",
            ["ADDRESS", "STATE", "ATTEMPTS", "UPDATED", "MAILING", "MESSAGE-ID"],
            [
                [
                    r["email"],
                    r["state"],
                    str(r["attempts"]),
                    output._when(r["updated_at"], tz),
                    r["mailing"],
                    r["message_id"],
                ]
                for r in rows
            ],  # fmt: skip
        )

    @sends.command("settle")
    @click.argument("job", shell_complete=complete_jobs)
    @click.argument("address")
    @click.option(
        "--delivered/--not-delivered",
        default=None,
        help="What the relay's log says: delivered (it stays sent) or not (the next "
        "dispatch sends it).",
    )
    @json_option
    @pass_settings
    @engine_call
    def settle(settings: Any, job: str, address: str, delivered: bool | None) -> None:
        """Settle JOB's send of unknown outcome to ADDRESS, as the relay's log says."""
        from campaign_sync.errors import UsageError
        from campaign_sync.ops import monitor
        from campaign_sync.ops.recipient import address_argument
        from campaign_sync.ops.sends import dispatch_job
        from campaign_sync.ops.sends import settle as settle_send

        if delivered is None:
            raise UsageError("say what the relay's log shows: --delivered or --not-delivered")
        normalised = address_argument(address)
        config = settings.config()
        found = dispatch_job(config, job)
        with monitor.opened_store(config) as store:
            document = settle_send(store, found, normalised, delivered=delivered)
        if settings.as_json:
            output.emit_json(document)
        else:
            click.echo(f"{job}: {document['message']} (run {document['run_id']})")

    return sends
