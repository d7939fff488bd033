"""Prometheus metrics (`campaign-sync metrics`): the text format for node_exporter's textfile
collector, built from the same documents `list-jobs --json` and `lists --json` print.

The module only formats and writes; the caller reads the store. States and statuses are
"state sets" (one series per possible value, 1 for the current one, 0 for the others), so
that an alert is a plain comparison (`campaign_sync_job_state{state="failing"} == 1`) and a
series never disappears when the state changes.
"""

from __future__ import annotations

import datetime
import os
import tempfile
from collections.abc import Iterable
from typing import Any

from ..core import outputs
from ..errors import UsageError

JOB_STATES = ("idle", "running", "overdue", "failing", "never-run")
RUN_STATUSES = ("running", "succeeded", "failed", "skipped", "interrupted")
LIST_STATUSES = ("active", "unsubscribed", "blocklisted", "outbounced")
PREFIX = "campaign_sync_"

# name: (type, help)
FAMILIES = {
    "job_state": (
        "gauge",
        "1 for the job's state now, 0 for the other states.",
    ),
    "job_next_run_timestamp_seconds": ("gauge", "When the job is next scheduled (Unix time)."),
    "job_running_seconds": ("gauge", "How long the job's running run has run; 0 when none runs."),
    "job_last_run_status": ("gauge", "1 for the status of the job's last finished run."),
    "job_last_run_timestamp_seconds": ("gauge", "When the job's last finished run ended."),
    "job_last_run_duration_seconds": ("gauge", "How long the job's last finished run took."),
    "job_last_run_count": ("gauge", "The counts of the job's last finished run, by count name."),
    "list_members": ("gauge", "Members of a list by status, as exports count them."),
    "metrics_generated_timestamp_seconds": ("gauge", "When these metrics were written."),
}


def render(
    jobs: Iterable[dict[str, Any]], lists: Iterable[dict[str, Any]], now: datetime.datetime
) -> str:
    """The metrics text for list-jobs entries `jobs` and lists entries `lists`, as of `now`."""
    samples: dict[str, list[str]] = {name: [] for name in FAMILIES}
    for job in jobs:
        _job_samples(job, samples)
    for counts in lists:
        for status in LIST_STATUSES:
            labels = {"list": counts["list"], "status": status}
            samples["list_members"].append(_sample(labels, counts.get(status, 0)))
    samples["metrics_generated_timestamp_seconds"].append(_sample({}, now.timestamp()))
    lines = []
    for name, (kind, help_text) in FAMILIES.items():
        lines += [f"# HELP {PREFIX}{name} {help_text}", f"# TYPE {PREFIX}{name} {kind}"]
        lines += [f"{PREFIX}{name}{sample}" for sample in samples[name]]
    return "\n".join(lines) + "\n"


def _job_samples(job: dict[str, Any], samples: dict[str, list[str]]) -> None:
    labels = {"job": job["name"], "type": job["type"]}
    for state in JOB_STATES:
        samples["job_state"].append(_sample({**labels, "state": state}, job["state"] == state))
    if job["next_run"]:
        samples["job_next_run_timestamp_seconds"].append(
            _sample(labels, _timestamp(job["next_run"]))
        )
    running = job["running"]
    elapsed = running["elapsed_seconds"] if running else 0
    samples["job_running_seconds"].append(_sample(labels, elapsed))
    last = job["last_run"]
    if last is None:
        return
    for status in RUN_STATUSES:
        is_it = last["status"] == status
        samples["job_last_run_status"].append(_sample({**labels, "status": status}, is_it))
    ended = last["finished"] or last["started"]
    samples["job_last_run_timestamp_seconds"].append(_sample(labels, _timestamp(ended)))
    if last["duration_seconds"] is not None:
        samples["job_last_run_duration_seconds"].append(_sample(labels, last["duration_seconds"]))
    for count, value in (last["counts"] or {}).items():
        samples["job_last_run_count"].append(_sample({**labels, "count": count}, value))


def _sample(labels: dict[str, str], value: float | bool) -> str:
    text = ",".join(f'{key}="{_escape(str(label))}"' for key, label in labels.items())
    number = float(value)
    shown = str(int(number)) if number.is_integer() else repr(number)
    return f"{{{text}}} {shown}" if text else f" {shown}"


def _escape(value: str) -> str:
    """A label value as the text format wants it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _timestamp(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp).timestamp()


def write_atomically(text: str, path: str) -> None:
    """Replace `path` with `text` in one rename: the collector never reads half a file.

    node_exporter's textfile collector reads files ending in `.prom`, as another user, so the
    file is made readable by all (it holds counts and job names, no addresses or secrets).
    """
    refused = outputs.refusal("--output", path)
    if refused:
        raise UsageError(refused)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=".campaign-sync-", dir=folder)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {folder}: {exc.strerror}") from None
    try:
        with open(descriptor, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError as exc:
        os.unlink(temporary)
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
