"""`campaign-sync metrics`: Prometheus text that prometheus_client's own parser reads, with the
states, last runs and list counts that real runs left in a real store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import SAMPLE, Workspace
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.stores("sqlite", "postgres")


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(name, sorted labels): value}."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found[(f"campaign_sync_{name}", tuple(sorted(labels.items())))]


def test_metrics_after_real_runs(ws: Workspace) -> None:
    ws.drop("/import/newsletter_20261101.csv", SAMPLE)
    assert ws.run("import", "newsletter-import", "--date", "2026-11-01").returncode == 0
    failed = ws.run("import", "newsletter-import", "--date", "2026-11-02")  # no such file
    assert failed.returncode == 3
    done = ws.run("metrics")
    assert (done.returncode, done.stderr) == (0, "")
    found = parse(done.stdout)
    job = {"job": "newsletter-import", "type": "recipient-import"}
    states = {s: value(found, "job_state", **job, state=s) for s in ("failing", "idle")}
    assert states == {"failing": 1.0, "idle": 0.0}
    assert value(found, "job_last_run_status", **job, status="failed") == 1.0
    assert value(found, "job_last_run_status", **job, status="succeeded") == 0.0
    assert value(found, "job_running_seconds", **job) == 0.0
    export = {"job": "newsletter-export", "type": "recipient-export"}
    assert value(found, "job_state", **export, state="never-run") == 1.0
    assert ("campaign_sync_job_last_run_status", ()) not in found
    members = {
        status: value(found, "list_members", list="newsletter", status=status)
        for status in ("active", "unsubscribed", "blocklisted", "outbounced")
    }
    lists = json.loads(ws.run("--json", "lists").stdout)
    assert members == {k: float(v) for k, v in lists[0].items() if k != "list"}
    assert members["active"] == len(ws.recipients())
    history = json.loads(ws.run("--json", "history", "newsletter-import").stdout)
    assert value(found, "job_last_run_duration_seconds", **job) == history[0]["duration_seconds"]


def test_the_counts_of_the_last_finished_run(ws: Workspace) -> None:
    ws.drop("/import/newsletter_20261101.csv", SAMPLE)
    run = json.loads(ws.run("--json", "import", "newsletter-import", "--date", "2026-11-01").stdout)
    found = parse(ws.run("metrics").stdout)
    job = {"job": "newsletter-import", "type": "recipient-import"}
    counts = {
        dict(labels)["count"]: number
        for (name, labels), number in found.items()
        if name == "campaign_sync_job_last_run_count" and dict(labels)["job"] == job["job"]
    }
    assert counts == {name: float(n) for name, n in run["counts"].items()}
    assert value(found, "job_last_run_status", **job, status="succeeded") == 1.0


def test_output_file_is_replaced_atomically_and_readable_by_the_collector(
    ws: Workspace, tmp_path: Path
) -> None:
    target = tmp_path / "textfile" / "campaign-sync.prom"
    target.parent.mkdir()
    target.write_text("old\n")
    done = ws.run("--json", "metrics", "--output", str(target))
    assert (done.returncode, json.loads(done.stdout)) == (0, {"written": str(target)})
    assert target.stat().st_mode & 0o777 == 0o644
    assert os.listdir(target.parent) == ["campaign-sync.prom"]  # no temporary file left
    assert parse(target.read_text())
    missing = tmp_path / "nowhere" / "m.prom"
    refused = ws.run("metrics", "--output", str(missing))
    assert refused.returncode == 2
    assert refused.stderr == (
        f"campaign-sync: error: cannot write {missing}: {missing.parent}: "
        "No such file or directory\n"
    )


def test_a_store_that_does_not_exist_yet_is_never_run(ws: Workspace) -> None:
    done = ws.run("metrics")
    assert done.returncode == 0, done.stderr
    found = parse(done.stdout)
    job = {"job": "newsletter-import", "type": "recipient-import"}
    assert value(found, "job_state", **job, state="never-run") == 1.0
    assert not ws.store.exists()  # looking creates nothing
