"""What is configured, running, due and failing: the data behind list-jobs, lists and check.

Read-only, also when a run has died (runs.py shows its row as `interrupted` without
writing), so that a status command answers at once even while a run holds the store's
write lock. Light: it must not import transfer or mail code, so that monitoring stays fast.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from ..config.model import Config, JobConfig
from ..core.schedule import is_overdue, parse, zone
from ..errors import StoreError, StoreNotCreated
from ..store.base import Store, is_url
from ..store.open import open_store as _open


@contextmanager
def opened_store(config: Config) -> Iterator[Store | None]:
    """open_store() for the block, closed after it (a PostgreSQL session ends at once)."""
    store = open_store(config)
    try:
        yield store
    finally:
        if store is not None:
            store.close()


def open_store(config: Config) -> Store | None:
    """The store, or None when no job has run yet (status commands create nothing)."""
    if not is_url(config.store) and not Path(config.store).exists():
        return None
    try:
        return _open(config.store, schema=config.store_schema, create=False)
    except StoreNotCreated:
        return None  # no run has created it (in its schema) yet


def job_states(
    config: Config, store: Store | None, now: datetime.datetime | None = None
) -> list[dict[str, Any]]:
    """One entry per configured job, in the documented list-jobs JSON shape (as of `now`)."""
    tz = zone(config.timezone)
    now = now.astimezone(tz) if now is not None else datetime.datetime.now(tz)
    runs = store.sql("runs") if store else None
    latest = runs.latest_per_job(store.conn) if store and runs else {}
    active = runs.running(store.conn) if store and runs else {}
    configured = _configured_since(config)
    return [
        _job_state(job, latest.get(name), active.get(name), store, now, tz, configured)
        for name, job in config.jobs.items()
    ]


def history(
    store: Store | None, job: str | None, limit: int, status: str | None = None
) -> list[dict[str, Any]]:
    """The newest `limit` runs, of `job` or of all jobs (with `status`), newest first."""
    if store is None:
        return []
    runs = store.sql("runs")
    if status is None:
        return runs.history(store.conn, job, limit)
    if status not in ("running", "interrupted"):
        return runs.history(store.conn, job, limit, (status,))
    # A dead run's row still says `running` but reads `interrupted` (nothing is written):
    # asking for both stored statuses, with room for every stored `running` row (few), finds
    # the newest `limit` runs that read `status`.
    stored_running = runs.history(store.conn, job, 1_000_000, ("running",))
    found = runs.history(store.conn, job, limit + len(stored_running), _LIVE_OR_DEAD)
    return [run for run in found if run["status"] == status][:limit]


_LIVE_OR_DEAD = ("running", "interrupted")


def _configured_since(config: Config) -> datetime.datetime:
    """When the config file last changed: every job in it is configured at least since
    then, so a scheduled time after it that passed with no run at all is a missed run
    (a crontab line missing, cron not running), not a job that is merely new. The inode's
    change time counts too: a deployment that copies the file keeping its old mtime
    (cp -p, rsync -a, tar) cannot keep that one."""
    try:
        status = config.path.stat()
        stamp = max(status.st_mtime, status.st_ctime)
    except OSError:
        stamp = datetime.datetime.now(datetime.timezone.utc).timestamp()
    return datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc)


def _job_state(
    job: JobConfig,
    last: dict[str, Any] | None,
    running: dict[str, Any] | None,
    store: Store | None,
    now: datetime.datetime,
    tz: datetime.tzinfo,
    configured: datetime.datetime,
) -> dict[str, Any]:
    finished = _last_finished(job, last, store)
    return {
        "name": job.name,
        "type": job.type,
        "list": job.list,
        "schedule": job.schedule,
        "next_run": _next_run(job, now, tz),
        "state": _state(job, finished, running, store, now, tz, configured),
        "running": _running_info(running, now) if running else None,
        "last_run": finished,
    }


def _last_finished(
    job: JobConfig, last: dict[str, Any] | None, store: Store | None
) -> dict[str, Any] | None:
    """The newest run that is not the one running now."""
    if last is None or last["status"] != "running" or store is None:
        return last
    older = store.sql("runs").history(store.conn, job.name, 2)
    return older[1] if len(older) > 1 else None


def _running_info(run: dict[str, Any], now: datetime.datetime) -> dict[str, Any]:
    started = datetime.datetime.fromisoformat(run["started"])
    return {
        "run_id": run["run_id"],
        "host": run["host"],
        "pid": run["pid"],
        "started": run["started"],
        "elapsed_seconds": round((now - started).total_seconds(), 1),
    }


def _next_run(job: JobConfig, now: datetime.datetime, tz: datetime.tzinfo) -> str | None:
    if not job.schedule:
        return None
    return parse(job.schedule).next_after(now, tz).isoformat()


def _state(
    job: JobConfig,
    last: dict[str, Any] | None,
    running: dict[str, Any] | None,
    store: Store | None,
    now: datetime.datetime,
    tz: datetime.tzinfo,
    configured: datetime.datetime,
) -> str:
    if running:
        return "running"
    if last is None or store is None:
        if job.schedule and is_overdue(
            parse(job.schedule), last_success=None, configured_since=configured, now=now, tz=tz
        ):
            return "overdue"
        return "never-run"
    if last["status"] in ("failed", "interrupted"):
        return "failing"
    if job.schedule and _overdue(job, store, now, tz):
        return "overdue"
    return "idle"


def _overdue(job: JobConfig, store: Store, now: datetime.datetime, tz: datetime.tzinfo) -> bool:
    """The last scheduled time (plus grace) passed without a successful run after it."""
    runs = store.sql("runs")
    success = runs.last_success(store.conn, job.name)
    first_seen = runs.first_seen(store.conn, job.name)
    return is_overdue(
        parse(job.schedule or ""),
        last_success=_moment(success["started"]) if success else None,
        configured_since=_moment(first_seen) if first_seen else None,
        now=now,
        tz=tz,
    )


def _moment(stamp: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(stamp)


def check_problems(config: Config) -> list[str]:
    """Everything `check` alerts on: places runs cannot write, then overdue or failing jobs.
    A store that runs cannot write may not be readable either (a read-only folder leaves
    SQLite no room for its -shm file): then its line says enough and the jobs go unread."""
    found = unusable_paths(config)
    try:
        with opened_store(config) as store:
            return found + problems(job_states(config, store))
    except StoreError:
        if any(problem.startswith("store: ") for problem in found):
            return found
        raise


def check_warnings(config: Config) -> tuple[list[str], dict[str, Any] | None]:
    """What `check` reports without failing: rejects files kept past `retention.rejects`
    (pruning has not run on this host since, or fails: its warning is in the runs). The
    lines, and the details for the JSON document. Reads only."""
    from .retention import counted, stale_rejects

    stale = stale_rejects(config)
    if stale is None:
        return [], None
    are = "is" if stale["files"] == 1 else "are"
    line = (
        f"rejects: {counted(stale['files'], 'file')} in {stale['folder']} {are} older than "
        f"retention.rejects ({stale['retention_days']}d), the oldest written "
        f"{stale['oldest']}; `campaign-sync prune` removes them"
    )
    return [line], stale


def problems(states: list[dict[str, Any]]) -> list[str]:
    """One line per job that monitoring should alert on."""
    found = []
    for state in states:
        last = state["last_run"] or {}
        if state["state"] == "failing":
            # A dead run shown as interrupted has no end time yet: its start stands in.
            when = last.get("finished") or last.get("started")
            found.append(
                f"{state['name']}: last run {last.get('status')} at {when}: "
                f"{last.get('error') or 'no error recorded'}"
            )
        elif state["state"] == "overdue":
            found.append(f"{state['name']}: overdue (schedule '{state['schedule']}')")
    return found


def unusable_paths(config: Config) -> list[str]:
    """The folders every run writes to, where this user could not write: each run would
    fail before it is even recorded, so monitoring must say so. Creates nothing."""
    found = []
    places = [("work_dir", config.work_dir)]
    if not is_url(config.store):  # a PostgreSQL store is the server's to keep writable
        places.append(("store", Path(config.store).parent))
    if config.log_file is not None:
        places.append(("log_file", config.log_file.parent))
    for key, folder in places:
        problem = _unwritable(folder)
        if problem:
            found.append(f"{key}: {folder} {problem}; runs cannot start")
        elif key == "store":
            found += _unwritable_store_files(Path(config.store))
    if config.log_file is not None and config.log_file.is_dir():
        found.append(f"log_file: {config.log_file} is a folder; runs cannot start")
    return found


def _unwritable_store_files(path: Path) -> list[str]:
    """The store file and its -wal/-shm companions, where they exist and this user could
    not write them: every run would fail at its first write, before it is recorded."""
    return [
        f"store: {file} {_not_writable(file)}; runs cannot start"
        for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm"))
        if file.is_file() and not os.access(file, os.W_OK)
    ]


def _unwritable(folder: Path) -> str | None:
    """Why `folder` could not be used (or made) by this user; None if it could."""
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        return f"cannot be made: {existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == folder else f" ({existing})"
        return _not_writable(existing) + where
    return None


def _not_writable(path: Path) -> str:
    """Why this user cannot write `path`, as far as can be told without trying."""
    if os.statvfs(path).f_flag & os.ST_RDONLY:
        return "is on a read-only file system"
    return "is not writable for this user"


def list_counts(config: Config, store: Store | None) -> list[dict[str, Any]]:
    """Per list: active, unsubscribed, blocklisted and outbounced members (by the rules
    exports use, see store/statuses.py), the same on either store."""
    names = sorted({job.list for job in config.jobs.values() if job.list})
    if store is None:
        return [_counts(name, {}) for name in names]
    statuses = store.sql("statuses")
    names = sorted(set(names) | set(statuses.list_names(store.conn)))
    return [_counts(name, _statuses(store, statuses, config, name)) for name in names]


def _statuses(store: Store, statuses: ModuleType, config: Config, name: str) -> dict[str, int]:
    """One list's members per status, read in one snapshot (the backend opens it)."""
    counted: dict[str, int] = statuses.count_statuses(store.conn, name, config.bounces)
    return counted


def _counts(name: str, counted: dict[str, int]) -> dict[str, Any]:
    statuses = ("active", "unsubscribed", "blocklisted", "outbounced")
    return {"list": name, **{status: counted.get(status, 0) for status in statuses}}
