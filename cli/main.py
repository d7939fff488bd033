"""The `campaign-sync` command: parse options, call the engine, render the result.

Nothing here decides anything about data; the engine raises typed errors and this layer
turns them into one clear line and the documented exit code.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from campaign_sync import __version__
from campaign_sync.errors import (
    EXIT_FAILED,
    EXIT_USAGE,
    CampaignSyncError,
    ConfigError,
    one_line,
)

from . import output
from .completion import complete_jobs
from .forget_cmd import forget_command
from .logs import setup_logging
from .prune_cmd import prune_command
from .recipient_cmd import recipient_command
from .schema_cmd import schema_command
from .sends_cmd import sends_group
from .serve_cmd import serve_command
from .store_cmd import store_group

F = TypeVar("F", bound=Callable[..., Any])


class Settings:
    """The global options, shared by every command through the Click context."""

    def __init__(self, config: str | None, as_json: bool, verbose: int, quiet: bool):
        self.config_path = config
        self.as_json = as_json
        self.verbose = verbose
        self.quiet = quiet
        self._config: Any = None

    def config(self, *, log_file_required: bool = True) -> Any:
        """The loaded config, with logging set up (`check` reports an unusable log file
        among its problems instead of stopping at it)."""
        if self._config is None:
            from campaign_sync import config as config_module

            self._config = config_module.load(self.config_path)
            try:
                setup_logging(self.verbose, self.quiet, self._config.log_file)
            except OSError as exc:
                if not log_file_required:
                    return self._config
                raise ConfigError(
                    f"cannot write the log file {self._config.log_file}: {exc.strerror}; "
                    "set `log_file` to a file in a writable folder",
                    key="log_file",
                ) from None
        return self._config


def json_option(command: F) -> F:
    """Accept --json after the command name too, as if it were given before it."""

    def remember(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.find_object(Settings).as_json = True  # type: ignore[union-attr]
        return value

    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        callback=remember,
        is_eager=True,
        help="Print one JSON document on stdout (logs go to stderr).",
    )(command)


def fail(settings: Settings, message: str, exit_code: int) -> NoReturn:
    """Report an error the way the output mode wants, then exit."""
    message = one_line(message)
    if settings.as_json:
        output.emit_json({"error": message, "exit_code": exit_code})
    click.echo(f"campaign-sync: error: {message}", err=True)
    sys.exit(exit_code)


def engine_call(function: F) -> F:
    """Turn engine errors into one line and their exit code; never a traceback for them."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        settings = click.get_current_context().find_object(Settings)
        assert settings is not None
        try:
            return function(*args, **kwargs)
        except CampaignSyncError as exc:
            fail(settings, str(exc), exc.exit_code)
        except KeyboardInterrupt:
            # A run decides its own report from the store (see campaign_sync.interrupts);
            # what reaches here stopped before any run was recorded, or a status command.
            fail(settings, "interrupted before anything was changed", EXIT_FAILED)

    wrapper.__name__ = function.__name__
    wrapper.__doc__ = function.__doc__
    return wrapper  # type: ignore[return-value]


class _Command(click.Group):
    """Usage errors (a bad option, a missing argument, --date 2026-13-01) also give a JSON
    document when --json was asked for: a script reading stdout gets one either way."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **kw: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **kw)
        argv = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **kw)
        except click.ClickException as exc:
            if "--json" in argv:
                message = one_line(exc.format_message())
                output.emit_json({"error": message, "exit_code": exc.exit_code})
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(EXIT_FAILED)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    help="Config file [default: $CAMPAIGN_SYNC_CONFIG, ./campaign-sync.yaml, "
    "/etc/campaign-sync/campaign-sync.yaml].",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv: debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr (for cron).")
@click.version_option(__version__, "--version", prog_name="campaign-sync")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, as_json: bool, verbose: int, quiet: bool):
    """Scheduled imports, exports and double opt-in dispatch for email campaigns."""
    ctx.obj = Settings(config_path, as_json, verbose, quiet)
    setup_logging(verbose, quiet, None)


pass_settings = click.make_pass_decorator(Settings)


def _parse_date(_ctx: click.Context, _param: click.Parameter, value: str | None):
    if value is None:
        return None
    # Exactly YYYY-MM-DD: fromisoformat alone also takes 20261101 and 2026-W48, and a
    # backfill must not run for a day the operator did not type.
    try:
        if len(value) != 10 or value[4] != "-" or value[7] != "-":
            raise ValueError(value)
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a date like 2026-01-31") from None


def _run(settings: Settings, name: str, kind: str, **options: Any) -> None:
    from campaign_sync.ops import interrupts
    from campaign_sync.ops.runner import RunOptions, exit_code, run_runs

    config = settings.config()
    progress = not (settings.as_json or settings.quiet)
    # cron and `timeout` stop jobs with SIGTERM: handled like Ctrl-C, where a run can stop.
    interrupts.install()
    results = run_runs(config, name, kind, RunOptions(progress=progress, **options))
    late = interrupts.late()  # e.g. while the store was being closed
    if late:
        results[-1].warnings.append(late)
    output.show_runs(results, settings.as_json, quiet=settings.quiet)
    late = interrupts.late()  # while the result was being printed: it is out, say so aside
    if late:
        click.echo(f"campaign-sync: warning: {late}", err=True)
    sys.exit(exit_code(results))


@main.command("import")
@click.argument("job", shell_complete=complete_jobs)
@click.option("--file", "file", type=click.Path(path_type=Path), help="Import this local file.")
@click.option(
    "--date",
    "date",
    callback=_parse_date,
    metavar="YYYY-MM-DD",
    help="Render the source path for this day instead of today.",
)
@click.option("--dry-run", is_flag=True, help="Fetch, parse, validate and count; change nothing.")
@click.option(
    "--force", is_flag=True, help="Import an already imported file; allow a large or empty replace."
)
@json_option
@pass_settings
@engine_call
def import_command(settings: Settings, job: str, **options: Any) -> None:
    """Run an import job (recipient-, blocklist-, unsubscriber- or bounce-import)."""
    _run(settings, job, "import", **options)


@main.command("export")
@click.argument("job", shell_complete=complete_jobs)
@click.option(
    "--date",
    "date",
    callback=_parse_date,
    metavar="YYYY-MM-DD",
    help="Render the target path for this day instead of today.",
)
@click.option("--dry-run", is_flag=True, help="Write the file but upload nothing, record nothing.")
@click.option(
    "--output", type=click.Path(path_type=Path), help="Write the file here instead of uploading it."
)
@json_option
@pass_settings
@engine_call
def export_command(settings: Settings, job: str, **options: Any) -> None:
    """Run an export job (recipient-, blocklist-, unsubscriber- or bounce-export)."""
    _run(settings, job, "export", **options)


@main.command("dispatch")
@click.argument("job", shell_complete=complete_jobs)
@click.option("--dry-run", is_flag=True, help="Show who would receive what; send nothing.")
@json_option
@pass_settings
@engine_call
def dispatch_command(settings: Settings, job: str, dry_run: bool) -> None:
    """Send a list's latest mailing to newly confirmed recipients (doi-dispatch)."""
    _run(settings, job, "dispatch", dry_run=dry_run)


@main.command("list-jobs")
@click.option("--running", is_flag=True, help="Only jobs running now, with pid and elapsed time.")
@json_option
@pass_settings
@engine_call
def list_jobs(settings: Settings, running: bool) -> None:
    """Configured jobs: schedule, next run, state and last run."""
    from campaign_sync.ops import monitor

    config = settings.config()
    with monitor.opened_store(config) as store:
        states = monitor.job_states(config, store)
    if running:
        states = [state for state in states if state["running"]]
    output.show_jobs(states, settings.as_json, running_only=running, tz=_zone(config))


@main.command()
@click.argument("job", required=False, shell_complete=complete_jobs)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 100_000))
@json_option
@pass_settings
@engine_call
def history(settings: Settings, job: str | None, limit: int) -> None:
    """Recent runs, newest first, of one job or of all."""
    from campaign_sync.config.model import RESERVED_JOBS
    from campaign_sync.ops import monitor

    config = settings.config()
    if job is not None and job not in RESERVED_JOBS:  # (the store's own runs: @forget)
        config.job(job)
    with monitor.opened_store(config) as store:
        records = monitor.history(store, job, limit)
    output.show_history(records, settings.as_json, tz=_zone(config))


@main.command()
@json_option
@pass_settings
@engine_call
def lists(settings: Settings) -> None:
    """Per list: active, unsubscribed, blocklisted and outbounced counts."""
    from campaign_sync.ops import monitor

    config = settings.config()
    with monitor.opened_store(config) as store:
        counts = monitor.list_counts(config, store)
    output.show_lists(counts, settings.as_json)


@main.command()
@json_option
@pass_settings
@engine_call
def validate(settings: Settings) -> None:
    """Check the config file; report every problem with its location."""
    from campaign_sync import config as config_module

    path = config_module.locate(settings.config_path)
    warnings: list[str] = []
    found = config_module.problems(str(path), warnings=warnings)
    for warning in warnings:  # allowed, so not a problem: stderr, and the exit code stays
        click.echo(f"campaign-sync: warning: {warning}", err=True)
    if settings.as_json:
        document = {"config": str(path), "valid": not found, "problems": found}
        output.emit_json({**document, "warnings": warnings})
    else:
        for problem in found:
            click.echo(problem)
        if not found:
            click.echo(f"{path}: OK")
    sys.exit(EXIT_USAGE if found else 0)


@main.command()
@json_option
@pass_settings
@engine_call
def crontab(settings: Settings) -> None:
    """Print the crontab lines that run every scheduled job."""
    from campaign_sync.ops.crontab import crontab_lines

    config = settings.config()
    jobs = [(name, job.type, job.schedule) for name, job in config.jobs.items()]
    lines = crontab_lines(jobs, _executable(), str(config.path), config.timezone)
    if settings.as_json:
        output.emit_json({"lines": lines})
    else:
        click.echo("\n".join(lines))


@main.command()
@click.option("--user", "user_units", is_flag=True, help="User units (systemctl --user).")
@click.option(
    "--output-dir",
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="Write the unit files there instead of printing them.",
)
@json_option
@pass_settings
@engine_call
def systemd(settings: Settings, user_units: bool, output_dir: str | None) -> None:
    """Print (or write) a .service and a .timer per scheduled job, the alternative to crontab."""
    import datetime

    from campaign_sync.ops.systemd import units, write_units

    config = settings.config()
    jobs = [(name, job.type, job.schedule) for name, job in config.jobs.items()]
    now = datetime.datetime.now(datetime.timezone.utc)
    # The jobs run as the config file's owner: the user it was set up for, whoever (often
    # root) writes the units into /etc/systemd/system.
    owner = config.path.stat().st_uid
    run_as = None if user_units else _user_name(owner)
    found = units(
        jobs, _executable(), str(config.path), config.timezone, _zone(config),
        user_units=user_units, run_as=run_as, now=now,
    )  # fmt: skip
    if output_dir is None:
        if settings.as_json:
            output.emit_json({"units": [{"name": u.name, "text": u.text} for u in found]})
        else:
            click.echo("\n".join(f"# ---- {u.name}\n{u.text}" for u in found), nl=False)
        return
    written = write_units(found, output_dir)
    timers = [unit.name for unit in found if unit.name.endswith(".timer")]
    scope = "--user " if user_units else ""
    if settings.as_json:
        output.emit_json({"written": written, "timers": timers})
    else:
        click.echo("\n".join(written))
        if timers:
            click.echo(
                f"Enable with: systemctl {scope}daemon-reload && "
                f"systemctl {scope}enable --now {' '.join(timers)}"
            )


@main.command()
@click.option(
    "--output",
    "output_path",
    metavar="FILE",
    help="Write the metrics to FILE atomically (node_exporter's textfile folder, *.prom).",
)
@json_option
@pass_settings
@engine_call
def metrics(settings: Settings, output_path: str | None) -> None:
    """Print (or write) Prometheus metrics: job states, last runs, list members."""
    import datetime

    from campaign_sync.ops import monitor
    from campaign_sync.ops.metrics import render, write_atomically

    config = settings.config(log_file_required=False)
    now = datetime.datetime.now(datetime.timezone.utc)
    with monitor.opened_store(config) as store:
        text = render(
            monitor.job_states(config, store, now), monitor.list_counts(config, store), now
        )
    if output_path is None:
        if settings.as_json:
            output.emit_json({"metrics": text})
        else:
            click.echo(text, nl=False)
        return
    write_atomically(text, output_path)
    if settings.as_json:
        output.emit_json({"written": output_path})


@main.command()
@click.argument("folder", required=False, default=".", type=click.Path(file_okay=False))
@json_option
@pass_settings
@engine_call
def init(settings: Settings, folder: str) -> None:
    """Write a commented starter config, its folders and a mailing into FOLDER (default: .)."""
    from campaign_sync.ops.starter import CONFIG_NAME, write_starter

    made = write_starter(Path(folder))
    config = Path(folder, CONFIG_NAME)
    if settings.as_json:
        output.emit_json({"written": [str(path) for path in made]})
        return
    click.echo("\n".join(str(path) for path in made))
    click.echo(f"Next: campaign-sync --config {config} validate, then put a CSV into")
    click.echo(
        f"{Path(folder, 'inbox')} and run: campaign-sync --config {config} import newsletter-import"
    )


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)  # no name: systemd takes a numeric User= too


def _zone(config: Any) -> Any:
    from campaign_sync.core.schedule import zone

    return zone(config.timezone)


def _executable() -> str:
    """The absolute path cron should run: this very script, else the one on PATH."""
    import shutil

    invoked = Path(sys.argv[0])
    if invoked.name == "campaign-sync" and invoked.exists():
        return str(invoked.resolve())
    found = shutil.which("campaign-sync")
    return str(Path(found).resolve()) if found else str(Path(sys.prefix, "bin", "campaign-sync"))


@main.command()
@json_option
@pass_settings
@engine_call
def check(settings: Settings) -> None:
    """For monitoring: exit 1 naming overdue or failing jobs, and folders runs cannot use."""
    from campaign_sync.ops import monitor

    config = settings.config(log_file_required=False)
    found = monitor.check_problems(config)
    # Warnings are reported but leave the exit code alone: it says whether a job needs
    # attention (docs/commands.md, `check`).
    warnings, stale = monitor.check_warnings(config)
    if settings.as_json:
        output.emit_json(
            {"ok": not found, "problems": found, "warnings": warnings, "stale_rejects": stale}
        )
    else:
        click.echo(
            "\n".join(found) if found else f"OK: {len(config.jobs)} jobs, none overdue or failing"
        )
        for warning in warnings:
            click.echo(f"warning: {warning}")
    sys.exit(EXIT_FAILED if found else 0)


main.add_command(store_group(json_option, pass_settings, engine_call))
main.add_command(schema_command)
main.add_command(forget_command(json_option, pass_settings, engine_call))
main.add_command(recipient_command(json_option, pass_settings, engine_call))
main.add_command(sends_group(json_option, pass_settings, engine_call))
main.add_command(serve_command(pass_settings, engine_call))
main.add_command(prune_command(json_option, pass_settings, engine_call))
