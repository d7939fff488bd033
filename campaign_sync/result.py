"""The outcome of one run, as the CLI prints it, the store records it and notices report it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The order counts are shown in, everywhere; a run reports those that apply to it.
COUNT_NAMES = (
    "read",
    "inserted",
    "updated",
    "unchanged",
    "rejected",
    "duplicates",
    "suppressed_unsubscribed",
    "suppressed_blocklisted",
    "suppressed_erased",
    "removed",
    "written",
    "sent",
    "skipped",
    "bounced",
    "unknown",
)


@dataclass
class FileInfo:
    path: str
    bytes: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "bytes": self.bytes, "sha256": self.sha256}


@dataclass
class RunResult:
    job: str
    job_type: str
    run_id: int | None = None
    status: str = "running"  # running | succeeded | failed | skipped | interrupted
    started: str | None = None  # ISO 8601 with offset
    finished: str | None = None
    duration_seconds: float | None = None
    file: FileInfo | None = None
    counts: dict[str, int] = field(default_factory=dict)
    rejects_file: str | None = None
    first_rejects: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    dry_run: bool = False
    message: str | None = None  # one line saying what happened, e.g. why it was skipped
    exit_code: int = 0
    watermark: str | None = None  # export: data up to this change time is in the file

    def ordered_counts(self) -> dict[str, int]:
        known = {name: self.counts[name] for name in COUNT_NAMES if name in self.counts}
        extra = {k: v for k, v in self.counts.items() if k not in known}
        return {**known, **extra}

    def as_dict(self) -> dict[str, Any]:
        """The run as its documented JSON document."""
        return {
            "job": self.job,
            "type": self.job_type,
            "run_id": self.run_id,
            "status": self.status,
            "dry_run": self.dry_run,
            "started": self.started,
            "finished": self.finished,
            "duration_seconds": self.duration_seconds,
            "file": self.file.as_dict() if self.file else None,
            "counts": self.ordered_counts(),
            "rejects_file": self.rejects_file,
            "first_rejects": self.first_rejects,
            "error": self.error,
            "message": self.message,
            "warnings": self.warnings,
        }
