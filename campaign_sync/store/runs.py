"""Run records as every backend shows them: the documented JSON shape of a run.

A run is recorded as `running` (committed at once, so status commands see it), then finished
in the same transaction as the data it changed. A process that died leaves a `running` row
behind; each backend's `runs` module knows how to tell (a pid on this host for SQLite, a job
lock no session holds for PostgreSQL) and shows such a row as `interrupted`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..result import FileInfo, RunResult

DEAD_RUN_ERROR = "the process ended before the run finished"

# The newest run of each job, in SQL both stores run alike. A GROUP BY (or DISTINCT ON) reads
# every run, ~25 ms at 200,000 runs on every status request; this walks the (job, id) index
# instead, one step to each next job name and one to its newest run: a few dozen index
# lookups, whatever the history's length. The newest run is found as the last (job, id) at
# or below (name, the largest id): with `job = name` PostgreSQL would walk the primary key
# back instead, past every later run of other jobs (far, for a job that last ran long ago).
LATEST_PER_JOB = """
WITH RECURSIVE names(job) AS (
    SELECT min(job) FROM runs
    UNION ALL
    SELECT (SELECT min(job) FROM runs WHERE runs.job > names.job) FROM names
    WHERE names.job IS NOT NULL
)
SELECT runs.* FROM names JOIN runs ON runs.id = (
    SELECT newest.id FROM runs AS newest
    WHERE (newest.job, newest.id) <= (names.job, 9223372036854775807)
    ORDER BY newest.job DESC, newest.id DESC LIMIT 1
)
WHERE names.job IS NOT NULL
"""

# The runs retention may remove (`{p}`: the placeholder of the cut-off): started before it,
# and none of those the house still reads: a run in progress, each job's newest run (its
# state in list-jobs and check), its newest successful one (`overdue` counts from it) and
# its newest export that set a watermark (a changes_only export continues from it). The
# DOI cut-offs (jobs.first_seen) and imported files' checksums (imported_files) are kept in
# tables of their own, which retention leaves alone.
PRUNABLE = """
    started < {p} AND status <> 'running'
    AND id NOT IN (SELECT max(id) FROM runs GROUP BY job)
    AND id NOT IN (
        SELECT max(id) FROM runs WHERE status IN ('succeeded', 'skipped') GROUP BY job)
    AND id NOT IN (
        SELECT max(id) FROM runs WHERE status = 'succeeded' AND watermark IS NOT NULL
        GROUP BY job)
"""

FINISH_COLUMNS = (
    "status",
    "finished",
    "file_path",
    "file_bytes",
    "file_sha256",
    "counts",
    "rejects_file",
    "error",
    "message",
    "warnings",
    "watermark",
)


def prunable_per_job(conn: Any, where: str, before: str) -> dict[str, int]:
    """Per job, how many runs match `where` (PRUNABLE in the backend's placeholders) for the
    cut-off `before`; the same query on either backend's connection."""
    rows = conn.execute(
        f"SELECT job, count(*) FROM runs WHERE {where} GROUP BY job ORDER BY job", (before,)
    ).fetchall()
    return {str(job): int(count) for job, count in rows}


def finish_values(result: RunResult) -> tuple[Any, ...]:
    """The values of FINISH_COLUMNS for the run's outcome."""
    file = result.file
    return (
        result.status,
        result.finished,
        file.path if file else None,
        file.bytes if file else None,
        file.sha256 if file else None,
        json.dumps(result.ordered_counts()),
        result.rejects_file,
        result.error,
        result.message,
        json.dumps(result.warnings),
        result.watermark,
    )


def as_record(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A run row as the documented JSON shape (the same keys as RunResult.as_dict())."""
    return {
        "job": raw["job"],
        "type": raw["type"],
        "run_id": raw["id"],
        "status": raw["status"],
        "pid": raw["pid"],
        "host": raw["host"],
        "started": raw["started"],
        "finished": raw["finished"],
        "duration_seconds": _duration(raw["started"], raw["finished"]),
        "file": FileInfo(raw["file_path"], raw["file_bytes"], raw["file_sha256"]).as_dict()
        if raw["file_path"]
        else None,
        "counts": json.loads(raw["counts"] or "{}"),
        "rejects_file": raw["rejects_file"],
        "error": raw["error"],
        "message": raw["message"],
        "warnings": json.loads(raw["warnings"] or "[]"),
    }


def seen_dead(record: dict[str, Any]) -> dict[str, Any]:
    """A `running` record whose process is gone, as the next run will record it."""
    record["status"] = "interrupted"
    record["error"] = record["error"] or DEAD_RUN_ERROR
    return record


def _duration(started: str | None, finished: str | None) -> float | None:
    if not started or not finished:
        return None
    delta = datetime.fromisoformat(finished) - datetime.fromisoformat(started)
    return round(delta.total_seconds(), 3)
