"""Retention: run records and rejects files are kept no longer than `retention` says.

Applied after every run (runner.py) and by `campaign-sync prune`. Run records go once they
started more than `retention.runs` days ago, except those the house still reads (see
store/runs.py, PRUNABLE): a run in progress, each job's newest run, its newest successful
one and its newest watermark. Rejects files (partner rows with personal data) go once they
were last written more than `retention.rejects` days ago. What retention never touches:
the DOI cut-offs (`jobs`) and the checksums of imported files (`imported_files`), which hold
no personal data and keep a file from ever being imported twice.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field
from typing import Any

from ..config.model import Config
from ..core import workdir
from ..store.base import Store

_DAY = datetime.timedelta(days=1)


@dataclass
class PruneReport:
    """What went (or, in a dry run, would go)."""

    dry_run: bool
    runs_before: str  # run records that started before this (ISO 8601, UTC)
    rejects_before: str  # rejects files last written before this
    rejects_folder: str
    runs: dict[str, int] = field(default_factory=dict)  # job: run records
    rejects_files: list[str] = field(default_factory=list)

    @property
    def removed_anything(self) -> bool:
        return bool(self.runs or self.rejects_files)

    def as_dict(self) -> dict[str, Any]:
        """The documented JSON document of `prune`."""
        return {
            "dry_run": self.dry_run,
            "runs": {
                "older_than": self.runs_before,
                "removed": sum(self.runs.values()),
                "per_job": dict(self.runs),
            },
            "rejects": {
                "older_than": self.rejects_before,
                "folder": self.rejects_folder,
                "removed": len(self.rejects_files),
                "files": list(self.rejects_files),
            },
        }

    def summary(self) -> str:
        """One line: what went, per job."""
        verb = "would remove" if self.dry_run else "removed"
        per_job = ", ".join(f"{job} {count}" for job, count in self.runs.items())
        runs = counted(sum(self.runs.values()), "run record") + (f" ({per_job})" if per_job else "")
        return (
            f"{verb} {runs} started before {self.runs_before} and "
            f"{counted(len(self.rejects_files), 'rejects file')} written before "
            f"{self.rejects_before}"
        )


def counted(number: int, thing: str) -> str:
    """`1 rejects file`, `3 rejects files`."""
    return f"{number} {thing}" + ("" if number == 1 else "s")


def prune(config: Config, store: Store | None, *, dry_run: bool) -> PruneReport:
    """Apply `config.retention` to the store's run records (none when `store` is None: no
    run has created it) and to this host's rejects files.

    Raises the store's errors and CampaignSyncError (a rejects folder that is not ours);
    the runner turns either into a warning."""
    retention = config.retention
    now = _now(store)
    runs_before = (now - retention.runs_days * _DAY).isoformat(timespec="microseconds")
    rejects_before = time.time() - retention.rejects_days * 86400
    report = PruneReport(
        dry_run=dry_run,
        runs_before=runs_before,
        rejects_before=_stamp(rejects_before),
        rejects_folder=str(config.work_dir / workdir.REJECTS),
    )
    if store is not None:
        runs = store.sql("runs")
        report.runs = (
            runs.prunable(store.conn, runs_before)
            if dry_run
            else runs.prune(store.conn, runs_before)
        )
    removed = workdir.remove_rejects(config.work_dir, rejects_before, dry_run=dry_run)
    report.rejects_files = [str(path) for path in removed]
    return report


def stale_rejects(config: Config) -> dict[str, Any] | None:
    """Rejects files older than `retention.rejects` (for `check`): the folder, how many and
    the oldest one's time; None when there are none. Reads only."""
    before = time.time() - config.retention.rejects_days * 86400
    old = [written for written, _ in workdir.rejects_files(config.work_dir) if written < before]
    if not old:
        return None
    return {
        "folder": str(config.work_dir / workdir.REJECTS),
        "files": len(old),
        "oldest": _stamp(old[0]),
        "retention_days": config.retention.rejects_days,
    }


def _now(store: Store | None) -> datetime.datetime:
    """The store's clock (the one its run records were stamped with), else this host's."""
    if store is None:
        return datetime.datetime.now(datetime.timezone.utc)
    return datetime.datetime.fromisoformat(store.now())


def _stamp(posix: float) -> str:
    moment = datetime.datetime.fromtimestamp(posix, datetime.timezone.utc)
    return moment.isoformat(timespec="seconds")
