"""Running one job: lock → fetch → merge / export / dispatch → commit → after-actions → notify.

Every run is recorded and every failure becomes a failed run with a notice; the caller gets
a RunResult whose `exit_code` is the documented one. Only the lock refusal (exit 75) and
usage errors are raised instead: they change nothing and record nothing.

An import whose source path is a pattern (`/import/newsletter_*.csv`) makes one run per new
matching file, oldest first, all under the one job lock (see _run_pattern).
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..config.model import ENCRYPTED_SUFFIXES, Config, JobConfig
from ..core import outputs, workdir
from ..core.name_patterns import NamePattern, name_pattern, oldest_first
from ..core.path_templates import render
from ..core.schedule import zone
from ..errors import (
    EXIT_FAILED,
    CampaignSyncError,
    ConfigError,
    LimitExceeded,
    SourceMissing,
    StoreError,
    TransferError,
    UsageError,
    one_line,
)
from ..result import FileInfo, RunResult
from ..store import now as _host_now
from ..store.base import Store, is_url
from ..store.open import open_store, store_class
from . import interrupts

if TYPE_CHECKING:
    from ..imports.common import Rejects
from ..transfer import open_transfer
from ..transfer.base import Progress, RemoteFile
from ..transfer.progress import Tick

log = logging.getLogger("campaign_sync")


@dataclass
class RunOptions:
    file: Path | None = None  # import this local file instead of fetching the source
    date: datetime.date | None = None  # render path placeholders for this day
    dry_run: bool = False
    force: bool = False
    output: Path | None = None  # export: write here instead of uploading
    progress: bool = False  # a progress bar for transfers, if stderr is a terminal


@dataclass
class RunContext:
    config: Config
    job: JobConfig
    options: RunOptions
    store: Store
    result: RunResult
    # One file of a pattern source: the run is recorded only once it has something to
    # record (a file to import, or a failure). A file already imported is `dropped`: passed
    # over without a run, a notice or a line of output of its own.
    deferred: bool = False
    dropped: bool = False
    already: int | None = None  # the run that imported the dropped file
    later: int = 0  # matching files after this one, which a failure may leave waiting
    clock: float = field(default_factory=time.monotonic)

    @property
    def conn(self) -> Any:
        return self.store.conn

    @property
    def runs(self) -> ModuleType:
        return self.store.sql("runs")

    @property
    def day(self) -> datetime.date:
        return _day(self.config, self.options)

    def progress(self, label: str) -> AbstractContextManager[Progress | None]:
        from ..transfer.progress import transfer_progress

        return transfer_progress(label, enabled=self.options.progress)

    def work(
        self, label: str, unit: str, *, total: int | None = None, size: int | None = None
    ) -> AbstractContextManager[Tick | None]:
        """A bar for rows read or written, messages sent (see transfer.progress)."""
        from ..transfer.progress import work_progress

        return work_progress(label, unit, total=total, size=size, enabled=self.options.progress)


def _day(config: Config, options: RunOptions) -> datetime.date:
    """The day the job's path templates are rendered for."""
    if options.date:
        return options.date
    return datetime.datetime.now(zone(config.timezone)).date()


def run_job(config: Config, name: str, kind: str, options: RunOptions) -> RunResult:
    """Run job `name` as the command `kind` (import, export, dispatch) asked for; its run,
    or the last of several (a pattern source: see run_runs)."""
    return run_runs(config, name, kind, options)[-1]


def run_runs(config: Config, name: str, kind: str, options: RunOptions) -> list[RunResult]:
    """Run job `name` as the command `kind` asked for: its runs in order, one unless the job
    imports a pattern source and found several new files."""
    job = config.job(name)
    if job.kind != kind:
        raise UsageError(
            f"'{name}' is a {job.type} job; run it with `campaign-sync {job.kind} {name}`"
        )
    if options.file is not None:
        _check_file(options.file)
    if options.output is not None:
        _check_output(options.output, job)
    location = _store_location(config, options)
    with (
        _notified_if_it_cannot_start(config, job, options),
        store_class(location).job_lock_before_opening(config.work_dir, name),
    ):
        with interrupts.interruptible():  # waiting out a busy store can be stopped
            store = open_store(location, schema=config.store_schema)
        try:
            with store.job_lock(config.work_dir, name):
                return _runs_locked(config, job, options, store)
        finally:
            store.close()  # outside interruptible(): a signal here is only noted


def _store_location(config: Config, options: RunOptions) -> str:
    """The store; for a dry run before any real run, an empty one in memory: its counts are
    a first run's, and no store file appears because somebody looked."""
    if options.dry_run and not is_url(config.store) and not Path(config.store).exists():
        return ":memory:"
    return config.store


@contextmanager
def _notified_if_it_cannot_start(
    config: Config, job: JobConfig, options: RunOptions
) -> Iterator[None]:
    """A run that fails before it can be recorded (no usable work_dir, a store that cannot
    be opened) still sends its failure notice; the error then goes on to the caller."""
    try:
        yield
    except (ConfigError, StoreError) as exc:
        result = RunResult(
            job=job.name, job_type=job.type, started=_host_now(), dry_run=options.dry_run
        )
        _fail(result, str(exc), exc.exit_code)
        result.finished = result.started
        _scrub(config, result)
        _notify(config, job, result)
        raise


def _check_file(file: Path) -> None:
    """Refuse an --file that is no file to read, saying what it is instead."""
    if file.is_dir():
        raise UsageError(f"--file {file} is a folder; name the file to import")
    if not file.exists():
        raise UsageError(f"--file {file}: no such file")
    if not file.is_file():
        raise UsageError(f"--file {file} is not a regular file; name the file to import")


def _check_output(output: Path, job: JobConfig) -> None:
    """Refuse an --output the export could not be placed at, or whose name would lie about
    what it holds, before anything runs."""
    encrypts = job.target is not None and bool(job.target.encrypt_to)
    if output.name.lower().endswith(ENCRYPTED_SUFFIXES) and not encrypts:
        raise UsageError(
            f"--output {output} names an OpenPGP file, but job '{job.name}' has no "
            "target.encrypt_to: the file would hold plain CSV; name it without "
            f"{'/'.join(ENCRYPTED_SUFFIXES)}, or set target.encrypt_to"
        )
    if output.is_dir():
        raise UsageError(f"--output {output} is a folder; name the file to write")
    refused = outputs.refusal("--output", output)
    if refused:
        raise UsageError(refused)
    if not output.parent.is_dir():
        raise UsageError(f"--output {output}: there is no folder {output.parent}")


def _run_locked(config: Config, job: JobConfig, options: RunOptions, store: Store) -> RunResult:
    """The job's run (the last of several) with its lock held by the caller."""
    return _runs_locked(config, job, options, store)[-1]


def _runs_locked(
    config: Config, job: JobConfig, options: RunOptions, store: Store
) -> list[RunResult]:
    runs = store.sql("runs")
    pattern = _pattern(config, job, options)
    try:
        with interrupts.interruptible():
            runs.mark_interrupted(store.conn, job.name)  # we hold the lock: running rows are dead
            ctx = _begin(config, job, options, store, deferred=pattern is not None)
    except store.errors as exc:  # locked past the busy timeout, read-only, disk full
        raise store.failure("cannot record the run in the store", exc) from None
    if workdir.clear_staging(config.work_dir, job.name):
        log.info("%s: removed staging files left by an interrupted run", job.name)
    if pattern is not None:
        return _run_pattern(ctx, pattern)
    return [_execute(ctx, _work)]


def _pattern(config: Config, job: JobConfig, options: RunOptions) -> NamePattern | None:
    """The pattern of an import's source path for the run's day; None for one file."""
    if job.source is None or job.kind != "import" or options.file is not None:
        return None
    return name_pattern(render(job.source.path, _day(config, options)))


def _begin(
    config: Config, job: JobConfig, options: RunOptions, store: Store, *, deferred: bool = False
) -> RunContext:
    """A new run: its result and, unless it is deferred or a dry run, its `running` record."""
    started = store.now()
    result = RunResult(job=job.name, job_type=job.type, started=started, dry_run=options.dry_run)
    if not options.dry_run and not deferred:
        result.run_id = store.sql("runs").start(store.conn, job.name, job.type, started)
    return RunContext(config, job, options, store, result, deferred=deferred)


def _work(ctx: RunContext) -> None:
    if ctx.job.kind == "import":
        _import(ctx)
    elif ctx.job.kind == "export":
        _export(ctx)
    else:
        _dispatch(ctx)


def _execute(ctx: RunContext, work: Callable[[RunContext], None]) -> RunResult:
    """Do the run's work and turn its outcome into the recorded, notified result."""
    result, store = ctx.result, ctx.store
    log.info("%s: started%s", ctx.job.name, _run_label(result))
    try:
        with interrupts.interruptible():  # windows 2 and 4 of interrupts.py
            work(ctx)
        if ctx.dropped:
            return result  # no run of its own: nothing to record or notify
    except CampaignSyncError as exc:
        _fail(result, str(exc), exc.exit_code)
    except OSError as exc:
        # The machine, not the data: a full disk, a permission, a vanished folder.
        _fail(result, _os_error(exc), EXIT_FAILED)
    except store.errors as exc:
        # The store refused a write (a full disk or an I/O error at the COMMIT, a lock held
        # past the busy timeout, a lost server): nothing of the failed transaction was kept.
        store.rollback()
        problem = store.failure("cannot write to the store", exc)
        _fail(result, str(problem), EXIT_FAILED)
        _unfinish(result)
    except KeyboardInterrupt:
        # Ctrl-C, or SIGTERM from cron's `timeout`: the store says whether it came before
        # the commit or after it.
        _interrupted(ctx)
    except BaseException as exc:
        # A bug: record it, then let it propagate with its traceback.
        _fail(result, f"internal error: {exc!r}", EXIT_FAILED)
        _close(ctx)
        raise
    _close(ctx)
    _apply_retention(ctx)
    return result


def _apply_retention(ctx: RunContext) -> None:
    """Prune what `retention` lets go, after every recorded run. A failure is a warning
    kept with the run: it never fails the run or changes its exit code."""
    if ctx.options.dry_run or ctx.result.run_id is None:
        return  # a dry run changes nothing; an unrecorded one had no usable store
    from .retention import prune

    try:
        report = prune(ctx.config, ctx.store, dry_run=False)
    except CampaignSyncError as exc:
        problem = str(exc)
    except OSError as exc:
        problem = _os_error(exc)
    except ctx.store.errors as exc:
        ctx.store.rollback()
        problem = str(ctx.store.failure("cannot prune the run records of", exc))
    else:
        if report.removed_anything:
            log.info("retention: %s", report.summary())
        return
    ctx.result.warnings.append(
        f"retention: pruning failed, the run itself stands: {one_line(problem)} "
        "(`campaign-sync prune` tries again)"
    )
    log.warning("%s", ctx.result.warnings[-1])
    _scrub(ctx.config, ctx.result)
    _record(ctx)


def _interrupted(ctx: RunContext) -> None:
    """Report an interrupt as what the store holds, wherever it landed: a run whose row says
    `succeeded` had its commit return and stands (only its tail, archiving the remote file,
    is missing); anything else was rolled back and is recorded `interrupted`."""
    result = ctx.result
    ctx.store.rollback()
    committed = result.run_id is not None and ctx.runs.succeeded(ctx.conn, result.run_id)
    if committed:
        result.warnings.append(
            "interrupted after the run's changes were committed; what follows the commit "
            "(archiving or deleting the source file) may not have happened"
        )
        _record(ctx)
        return
    if ctx.job.kind == "dispatch" and not result.dry_run:
        reason = "interrupted; the sends made before it are recorded and will not be repeated"
    else:
        reason = "interrupted; the run was rolled back and recorded"
    _fail(result, reason, EXIT_FAILED)
    result.status = "interrupted"
    _unfinish(result)


def _unfinish(result: RunResult) -> None:
    """Forget a finish set inside a transaction that was then rolled back: it did not
    happen, and _close must record the run's real end."""
    result.finished = result.duration_seconds = None


def _os_error(exc: OSError) -> str:
    """'No space left on device: /var/…' — what and where, without a traceback."""
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def _fail(result: RunResult, error: str, exit_code: int) -> None:
    result.status = "failed"
    result.error = one_line(error)
    result.exit_code = exit_code


def _now(store: Store) -> str:
    """The store's clock, or this host's when the store cannot be asked (its server gone)."""
    try:
        return store.now()
    except store.errors:
        return _host_now()


def _close(ctx: RunContext) -> None:
    """Record the outcome (unless the data transaction already did) and send notices."""
    result = ctx.result
    left = _left_waiting(ctx)
    if left:
        result.warnings.append(left)
    _scrub(ctx.config, result)
    if result.finished is None:
        result.finished = _now(ctx.store)
        result.duration_seconds = round(time.monotonic() - ctx.clock, 3)
        _record(ctx)
    warned = len(result.warnings)
    if not _notify(ctx.config, ctx.job, result):
        # The run itself is recorded; only its notice was cut short.
        result.warnings.append("interrupted while the notices were being sent")
    late = interrupts.late()
    if late:
        result.warnings.append(late)
    if len(result.warnings) != warned:
        _record(ctx)  # keep the notice's warnings with the run
    # INFO: a record for the log file; the CLI itself reports a failure on stderr.
    log.info(
        "%s: %s%s in %.2f s%s",
        result.job,
        result.status,
        _run_label(result),
        result.duration_seconds or 0.0,
        _summary(result),
    )


def _notify(config: Config, job: JobConfig, result: RunResult) -> bool:
    """Send the run's notices if it calls for any; False if a signal stopped them (a hanging
    mail server must not keep a stopped job alive)."""
    from .notify import notify, should_notify

    if not should_notify(job, result):
        return True
    try:
        with interrupts.interruptible():
            notify(config, job, result, log=log)
    except KeyboardInterrupt:
        return False
    return True


def _run_label(result: RunResult) -> str:
    if result.dry_run:
        return " (dry run)"
    return f" (run {result.run_id})" if result.run_id is not None else ""


def _summary(result: RunResult) -> str:
    """One line for the log: what the run did, or why it failed or was skipped."""
    counts = ", ".join(f"{k} {v}" for k, v in result.ordered_counts().items() if v)
    detail = result.error or result.message or ""
    return "".join(f": {part}" for part in (counts, detail) if part)


def _record(ctx: RunContext) -> None:
    """Write the run's outcome. When the store refuses even that (the disk is still full),
    the run says so; its `running` row is then marked by the next run."""
    result = ctx.result
    if result.run_id is None and not (ctx.deferred and not result.dry_run):
        return
    try:
        _write_finish(ctx)
    except ctx.store.errors as first:
        exc = first
        # A server that restarted under the run has dropped its connection: the run is
        # recorded as it ended (failed, with its reason) on a new one if the server is back.
        if ctx.store.reopen():
            try:
                _write_finish(ctx)
                return
            except ctx.store.errors as again:
                exc = again
        problem = ctx.store.failure("cannot record the run in the store", exc)
        result.warnings.append(str(problem))
        log.warning("%s", problem)


def _write_finish(ctx: RunContext) -> None:
    _record_start(ctx)
    with ctx.store.transaction():
        ctx.runs.finish(ctx.conn, ctx.result)


def _record_start(ctx: RunContext) -> None:
    """Give a deferred run its `running` record (before it changes anything, or as it ends)."""
    result = ctx.result
    if ctx.deferred and result.run_id is None and not result.dry_run:
        started = result.started or ctx.store.now()
        result.run_id = ctx.runs.start(ctx.conn, ctx.job.name, ctx.job.type, started)


def _scrub(config: Config, result: RunResult) -> None:
    """No secret leaves the process, even one a library quoted back in an error."""
    from ..config.redact import Scrubber

    scrub = Scrubber.from_config(config)
    result.error = scrub(result.error) if result.error else result.error
    result.message = scrub(result.message) if result.message else result.message
    result.warnings = [scrub(warning) for warning in result.warnings]


def _finish_in_transaction(ctx: RunContext, status: str) -> None:
    """Mark the run finished as part of the caller's open transaction (data + record atomic)."""
    result = ctx.result
    result.status = status
    result.finished = ctx.store.now()
    started = datetime.datetime.fromisoformat(result.started or result.finished)
    finished = datetime.datetime.fromisoformat(result.finished)
    result.duration_seconds = round((finished - started).total_seconds(), 3)
    if result.run_id is not None:
        ctx.runs.finish(ctx.conn, result)


# --------------------------------------------------------------------------- import


def _import(ctx: RunContext, matched: str | None = None) -> None:
    """Import --file, the source path rendered for the day, or `matched` (one file of a
    pattern source, which is dropped when it turns out to be no new file)."""
    job, options, result = ctx.job, ctx.options, ctx.result
    staged: Path | None = None
    remote: str | None = None
    try:
        if options.file is not None:
            path, label = options.file, str(options.file)
        else:
            assert job.source is not None, "validated: an import without --file has a source"
            remote = matched or render(job.source.path, ctx.day)
            staged = workdir.staging_file(ctx.config.work_dir, job.name, _suffix(remote))
            try:
                _fetch(ctx, remote, staged)
            except SourceMissing as exc:
                if job.source.missing == "skip":
                    result.status = "skipped"
                    result.message = f"{exc} (missing: skip)"
                    # A match gone since the listing: as if it had not matched.
                    ctx.dropped = matched is not None
                    return
                raise
            path, label = staged, remote
        result.file = FileInfo(label, path.stat().st_size, _sha256(path))
        previous = ctx.runs.already_imported(ctx.conn, job.name, result.file.sha256)
        if previous and not options.force:
            result.status = "skipped"
            result.message = (
                f"{label} was already imported by run {previous} (same SHA-256); "
                "use --force to import it again"
            )
            if remote and not options.dry_run:
                _after(ctx, remote)  # an earlier run may have died before archiving it
            if matched is not None:
                ctx.dropped, ctx.already = True, previous
                log.info("%s: %s", job.name, result.message)
            return
        _record_start(ctx)
        _merge_file(ctx, path, label)
        if remote and not options.dry_run:
            _after(ctx, remote)
    finally:
        workdir.remove_quietly(staged)


def _run_pattern(first: RunContext, pattern: NamePattern) -> list[RunResult]:
    """Import each new file matching `pattern`, oldest first, each as its own run.

    `first` lists the folder. When the listing fails, when nothing matches, or when every
    match was imported before, `first` is the one run recorded (failed, missing or skipped);
    otherwise it is dropped and each new file gets a run of its own, recorded, notified and
    after-actioned on its own. A failed file stops the rest (they wait for the next run)
    unless `on_error: continue`; a signal always stops them.
    """
    listed: list[RemoteFile] = []
    _execute(first, lambda ctx: listed.extend(_matches(ctx, pattern)))
    if not first.dropped:
        return [first.result]  # the listing failed, or nothing matched
    results: list[RunResult] = []
    last: RunContext | None = None
    passed: list[int] = []  # runs that imported the matches passed over
    carried: list[str] = []  # warnings about those (a failed after-action)
    signals = interrupts.seen()
    for position, file in enumerate(listed):
        try:
            ctx = _begin(first.config, first.job, first.options, first.store, deferred=True)
        except first.store.errors as exc:
            carried.append(f"{first.store.failure('cannot start the next run', exc)}")
            break
        ctx.later = len(listed) - position - 1
        remote = pattern.path(file.name)
        _execute(ctx, lambda c: _import(c, remote))  # noqa: B023 - called before the next turn
        if ctx.dropped:
            carried += ctx.result.warnings
            if ctx.already is not None:
                passed.append(ctx.already)
            continue
        results.append(ctx.result)
        last = ctx
        if interrupts.seen() != signals and ctx.later and not _stops(ctx):
            # Came while the run's notice went out or after it: the rest must wait too.
            carried.append(f"stopped by a signal: {_waiting(ctx.later)}")
        if interrupts.seen() != signals or _stops(ctx):
            break
    if last is None:
        _nothing_new(first, pattern, passed, carried)
        return [first.result]
    if carried:  # about files passed over after the last run: kept with it
        last.result.warnings += carried
        _scrub(last.config, last.result)
        _record(last)
    return results


def exit_code(results: list[RunResult]) -> int:
    """The exit code of a command's runs: that of the first run that did not succeed or
    skip (1 for a failed or interrupted run, 3 for a missing source), else 0."""
    return next((result.exit_code for result in results if result.exit_code), 0)


def _stops(ctx: RunContext) -> bool:
    """Whether this run's outcome leaves the files after it for the next run."""
    assert ctx.job.source is not None
    if ctx.result.status == "interrupted":
        return True
    return ctx.result.status == "failed" and ctx.job.source.on_error == "stop"


def _waiting(count: int) -> str:
    files = "file matches" if count == 1 else "files match"
    return f"{count} more {files} the pattern; left for the next run"


def _left_waiting(ctx: RunContext) -> str | None:
    """The warning of a failed file's run that leaves the matches after it waiting."""
    if ctx.later and _stops(ctx):
        return _waiting(ctx.later)
    return None


def _matches(ctx: RunContext, pattern: NamePattern) -> list[RemoteFile]:
    """The files matching `pattern`, oldest first; none makes this run missing or skipped."""
    source = ctx.job.source
    assert source is not None
    server = ctx.config.servers[source.server]
    why = ""
    try:
        with open_transfer(server) as transfer:
            files = transfer.list_files(pattern.folder)
    except SourceMissing as exc:
        files, why = [], f": {exc}"
    found = oldest_first(file for file in files if pattern.matches(file.name))
    log.info("%s: %d of %d files match %s", ctx.job.name, len(found), len(files), pattern)
    if found:
        ctx.dropped = True
        return found
    problem = f"no file matches {pattern} on server '{server.name}'{why}"
    if source.missing == "fail":
        raise SourceMissing(problem)
    ctx.result.status = "skipped"
    ctx.result.message = f"{problem} (missing: skip)"
    return []


def _nothing_new(
    first: RunContext, pattern: NamePattern, passed: list[int], carried: list[str]
) -> None:
    """Close the listing's run as the skipped run of a pattern without a new file."""
    result = first.result
    result.status = "skipped"
    runs = ", ".join(str(run) for run in sorted(set(passed)))
    result.message = (
        f"no new file: every file matching {pattern} was already imported (by run "
        f"{runs}); use --force to import them again"
        if passed
        else f"no new file matches {pattern}"
    )
    result.warnings += carried
    first.dropped = False
    _close(first)


def _suffix(remote: str) -> str:
    """The staging copy's suffix, which tells its reader how to unpack it (.gz, .zip, .pgp)."""
    from ..csvio.packing import staging_suffix

    return staging_suffix(remote)


def _fetch(ctx: RunContext, remote: str, staged: Path) -> None:
    """Fetch the source into the staging file, refusing one that changes while we read it."""
    job = ctx.job
    assert job.source is not None
    server = ctx.config.servers[job.source.server]
    with open_transfer(server) as transfer:
        size_before = transfer.size(remote)
        if size_before is None:
            raise SourceMissing(f"no file {remote} on server '{server.name}'")
        with ctx.progress(remote) as progress:
            copied = transfer.fetch(remote, staged, progress)
        size_after = transfer.size(remote)
    if not copied == size_before == size_after:
        raise TransferError(
            f"{remote} on '{server.name}' changed size while it was fetched "
            f"({size_before} → {size_after} bytes, {copied} copied); it is probably still "
            "being uploaded — the next run will pick it up"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _merge_file(ctx: RunContext, path: Path, label: str) -> None:
    """Merge the file; an OpenPGP one is first decrypted and its signature checked in full,
    before the store is even locked for writing (csvio/pgp.py says why)."""
    source = ctx.job.source
    decrypt = source is not None and source.decrypt
    if not (decrypt or path.name.lower().endswith(ENCRYPTED_SUFFIXES)):
        _merge_rows(ctx, path, label)
        return
    from ..csvio.packing import staging_suffix, without_encryption
    from ..csvio.pgp import decrypted

    pgp = ctx.config.pgp
    if pgp is None:
        raise ConfigError("decrypting needs the top-level `pgp` (home: the GnuPG folder)")
    suffix = staging_suffix(without_encryption(path.name))
    plain = workdir.staging_file(ctx.config.work_dir, ctx.job.name, suffix)
    verify = source.verify if source is not None else None
    with decrypted(path, plain, pgp, label=label, verify=verify) as readable:
        _merge_rows(ctx, readable, label)


def _merge_rows(ctx: RunContext, path: Path, label: str) -> None:
    from ..csvio.read import read_csv
    from ..imports import merge
    from ..imports.common import MergeContext

    job, result, store = ctx.job, ctx.result, ctx.store
    rejects = None
    store.begin_write()
    # The change time is taken once we hold the write lock, so that every export
    # watermark is either before it or after this transaction commits.
    merge_ctx = MergeContext(
        store=store,
        job=job,
        tz=zone(ctx.config.timezone),
        work_dir=ctx.config.work_dir,
        run_id=result.run_id,
        force=ctx.options.force,
        now=store.now(),
        configured_lists=frozenset(j.list for j in ctx.config.jobs.values() if j.list),
    )
    try:
        with (
            read_csv(
                path, job.format, label=label, names=job.column_labels, member=_member(ctx)
            ) as src,
            ctx.work(label, "rows", size=path.stat().st_size) as tick,
        ):
            src.progress = tick
            counts, rejects = merge(merge_ctx, src, label)
        result.counts = dict(counts)
        _record_rejects(result, rejects)
        if ctx.options.dry_run:
            result.status = "succeeded"
            result.message = "dry run: nothing was changed"
            store.rollback()
            return
        _finish_in_transaction(ctx, "succeeded")
        if result.run_id is not None and result.file is not None:
            # Kept for good, unlike the run's record: the file is never imported again.
            ctx.runs.remember_import(
                ctx.conn,
                job.name,
                result.file.sha256,
                result.run_id,
                result.finished or store.now(),
            )
    except LimitExceeded:
        store.rollback()
        if merge_ctx.counts is not None:  # what would have been applied, for the operator
            result.counts = dict(merge_ctx.counts)
        if merge_ctx.rejects is not None:
            _record_rejects(result, merge_ctx.rejects)
        raise
    except BaseException:
        store.rollback()
        raise
    store.commit()


def _member(ctx: RunContext) -> str | None:
    """The zip member the job names (source.member, its {date} filled in), if any."""
    source = ctx.job.source
    return render(source.member, ctx.day) if source and source.member else None


def _record_rejects(result: RunResult, rejects: Rejects) -> None:
    result.rejects_file = str(rejects.path) if rejects.path else None
    result.first_rejects = list(rejects.first)


def _after(ctx: RunContext, remote: str) -> None:
    """Archive or delete the imported remote file; a failure here is only a warning."""
    source = ctx.job.source
    assert source is not None
    if source.after == "keep":
        return
    server = ctx.config.servers[source.server]
    try:
        with open_transfer(server) as transfer:
            if source.after == "delete":
                transfer.delete(remote)
            else:
                assert source.archive_dir is not None
                transfer.archive(remote, render(source.archive_dir, ctx.day))
    except CampaignSyncError as exc:
        ctx.result.warnings.append(f"after: {source.after} of {remote} failed: {exc}")
        log.warning("after: %s of %s failed: %s", source.after, remote, exc)


# --------------------------------------------------------------------------- export


def _export(ctx: RunContext) -> None:
    from ..exports.export import write_export

    job, options, result, store = ctx.job, ctx.options, ctx.result, ctx.store
    assert job.target is not None
    remote = render(job.target.path, ctx.day)
    # Compressed or not as the file's final name says: --output x.csv is plain CSV.
    final_name = str(options.output) if options.output else remote
    staged = workdir.staging_file(ctx.config.work_dir, job.name, _suffix(final_name))
    try:
        changed_since = ctx.runs.last_watermark(ctx.conn, job.name) if job.changes_only else None
        # The snapshot and its watermark agree: every import commits either wholly before
        # it or gets a later change time (Store.begin_snapshot).
        result.watermark = store.begin_snapshot()
        try:
            with ctx.work(final_name, "rows") as tick:
                written = write_export(
                    store,
                    job,
                    ctx.config.bounces,
                    staged,
                    changed_since=changed_since,
                    timezone=ctx.config.timezone,
                    progress=tick,
                    name=final_name,
                    pgp=ctx.config.pgp,
                )
        finally:
            store.rollback()
        result.counts = {"written": written}
        destination = str(options.output) if options.output else remote
        result.file = FileInfo(destination, staged.stat().st_size, _sha256(staged))
        if options.dry_run:
            result.status = "succeeded"
            result.message = f"dry run: {written} rows would be written to {destination}"
            return
        if options.output:
            _place(staged, options.output)
            result.watermark = None  # a look for the operator: the partner still gets these
        else:
            server = ctx.config.servers[job.target.server]
            with open_transfer(server) as transfer, ctx.progress(remote) as progress:
                transfer.put(staged, remote, atomic=job.target.atomic, progress=progress)
        with store.transaction():
            _finish_in_transaction(ctx, "succeeded")
    finally:
        workdir.remove_quietly(staged)


def _place(staged: Path, output: Path) -> None:
    """Put the finished export at `output` whole or not at all: a rename, or across file
    systems a copy beside it that is then renamed (never a half-written file there)."""
    try:
        staged.replace(output)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    # A new name of our own (O_EXCL, random, 0600): never a name someone could have put a
    # symlink at beforehand.
    fd, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".part", dir=output.parent)
    partial = Path(name)
    try:
        with open(staged, "rb") as reader, open(fd, "wb") as writer:
            shutil.copyfileobj(reader, writer, 1 << 20)
        partial.replace(output)
    finally:
        workdir.remove_quietly(partial)


# --------------------------------------------------------------------------- dispatch


def _dispatch(ctx: RunContext) -> None:
    from ..dispatch import dispatch

    # Each send is committed on its own (exactly once needs that); dispatch sets the status
    # and counts, and _close records the run.
    dispatch(ctx.store, ctx.config, ctx.job, ctx.result, dry_run=ctx.options.dry_run, work=ctx.work)
