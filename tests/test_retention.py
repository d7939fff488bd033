"""Retention on both stores: `prune` and the prune at the end of every run remove old run
records and rejects files, and keep what the jobs still read whatever its age.

Runs are real (imports and exports through the CLI against a local server); their age is
made by backdating their records in the store, and a rejects file's by its mtime.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import SAMPLE, Workspace
from test_changes_only import EXTRA  # a changes_only export job

pytestmark = pytest.mark.stores("sqlite", "postgres")

OLD = "2020-01-01T00:00:00.000000+00:00"  # long past any retention
DAY1, DAY2 = "2026-11-01", "2026-11-02"
WITH_A_BAD_ROW = "E-Mail;Vorname;Nachname;DOI\nx@example.com;X;Y;\nnot-an-address;A;B;\n"


def drop_day(ws: Workspace, day: str, content: str = SAMPLE) -> None:
    ws.drop(f"/import/newsletter_{day.replace('-', '')}.csv", content)


def ok(ws: Workspace, *args: str) -> Any:
    done = ws.cli("--json", *args)
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)


def run_ids(ws: Workspace) -> list[int]:
    return [int(row[0]) for row in ws.query("SELECT id FROM runs ORDER BY id")]


def backdate(ws: Workspace, ids: list[int] | None = None) -> None:
    """Make runs (all of them by default) look as if they ran in 2020."""
    where = f" WHERE id IN ({', '.join(map(str, ids))})" if ids else ""
    ws.query(f"UPDATE runs SET started = ?, finished = ?{where}", (OLD, OLD))


def states(ws: Workspace) -> dict[str, Any]:
    """What list-jobs says of each job, without what depends on the clock."""
    return {job["name"]: (job["state"], job["last_run"]) for job in ok(ws, "list-jobs")}


def rejects_folder(ws: Workspace) -> Path:
    return ws.root / "var" / "rejects"


def age(path: Path, days: float) -> None:
    stamp = time.time() - days * 86400
    os.utime(path, (stamp, stamp))


def history_of_every_kind(ws: Workspace) -> dict[str, int]:
    """Runs of each kind the keep rules know, by name: their ids."""
    ws.write_config(text=ws.config.read_text() + EXTRA)
    drop_day(ws, DAY1)
    drop_day(ws, DAY2, SAMPLE + "dora@example.net;Dora;D;\n")
    ids: dict[str, int] = {}
    ids["import 1"] = ok(ws, "import", "newsletter-import", "--date", DAY1)["run_id"]
    ids["import 2"] = ok(ws, "import", "newsletter-import", "--date", DAY2)["run_id"]
    ids["skipped"] = ok(ws, "import", "newsletter-import", "--date", DAY2)["run_id"]
    missing = ws.cli("--json", "import", "newsletter-import", "--date", "2026-11-03")
    assert missing.exit_code == 3, missing.output
    ids["failed"] = json.loads(missing.stdout)["run_id"]
    ids["export 1"] = ok(ws, "export", "changes-export")["run_id"]
    ids["export 2"] = ok(ws, "export", "changes-export")["run_id"]
    peek = str(ws.root / "peek.csv")
    ids["to --output"] = ok(ws, "export", "changes-export", "--output", peek)["run_id"]
    return ids


def test_prune_removes_old_runs_but_keeps_what_the_jobs_read(ws: Workspace) -> None:
    ids = history_of_every_kind(ws)
    backdate(ws)
    seen_before = states(ws)
    before = ws.dump()

    preview = ok(ws, "prune", "--dry-run")

    assert ws.dump() == before  # a dry run changes nothing
    assert preview["dry_run"] is True
    assert preview["runs"]["per_job"] == {"changes-export": 1, "newsletter-import": 2}
    assert preview["runs"]["removed"] == 3

    done = ok(ws, "prune")

    assert done["dry_run"] is False
    assert done["runs"] == preview["runs"] | {"older_than": done["runs"]["older_than"]}
    kept = {
        ids["skipped"],  # the import's newest success (a skip counts: it answered the schedule)
        ids["failed"],  # its newest run: the job is failing, and stays so
        ids["export 2"],  # the export's newest watermark
        ids["to --output"],  # its newest run and newest success (no watermark: not sent)
    }
    assert run_ids(ws) == sorted(kept)
    assert states(ws) == seen_before  # list-jobs and check read the same
    # Nothing left to remove: a second prune finds nothing.
    again = ok(ws, "prune")["runs"]
    assert (again["removed"], again["per_job"]) == (0, {})


def test_a_file_is_never_imported_twice_however_old_its_run(ws: Workspace) -> None:
    ids = history_of_every_kind(ws)
    backdate(ws)
    ok(ws, "prune")
    assert ids["import 1"] not in run_ids(ws)

    again = ok(ws, "import", "newsletter-import", "--date", DAY1)

    assert again["status"] == "skipped"
    assert f"already imported by run {ids['import 1']}" in again["message"]
    # --force imports it again, and the checksum then names the new run.
    forced = ok(ws, "import", "newsletter-import", "--date", DAY1, "--force")
    assert forced["status"] == "succeeded"
    assert (
        f"by run {forced['run_id']}"
        in ok(ws, "import", "newsletter-import", "--date", DAY1)["message"]
    )


def test_a_changes_only_export_continues_from_its_watermark_after_pruning(
    ws: Workspace,
) -> None:
    history_of_every_kind(ws)
    backdate(ws)
    ok(ws, "prune")

    export = ok(ws, "export", "changes-export")

    # Everything was exported before (export 1); no change since the kept watermark.
    assert export["counts"]["written"] == 0
    lines = (ws.inbox / "export" / "changes.csv").read_text(encoding="utf-8").splitlines()
    assert lines == ["email,status"]  # a changes-only file has a status column


def test_the_dispatch_cut_off_and_a_running_run_are_never_pruned(ws: Workspace) -> None:
    ids = history_of_every_kind(ws)
    first_seen = ws.query("SELECT name, first_seen FROM jobs ORDER BY name")
    backdate(ws)
    # The first import's record as a run still in progress (its process alive here).
    ws.query(
        "UPDATE runs SET status = 'running', finished = NULL, pid = ? WHERE id = ?",
        (os.getpid(), ids["import 1"]),
    )

    ok(ws, "prune")

    assert ids["import 1"] in run_ids(ws)
    assert ids["import 2"] not in run_ids(ws)
    assert ws.query("SELECT name, first_seen FROM jobs ORDER BY name") == first_seen


def test_every_run_prunes_when_it_ends(ws: Workspace) -> None:
    ids = history_of_every_kind(ws)
    backdate(ws)
    drop_day(ws, "2026-11-04", WITH_A_BAD_ROW)
    old_rejects = ok(ws, "import", "newsletter-import", "--date", "2026-11-04")["rejects_file"]
    age(Path(old_rejects), 31)

    run = ok(ws, "import", "newsletter-import", "--date", "2026-11-04", "--force")

    assert run["status"] == "succeeded" and run["warnings"] == []
    assert not Path(old_rejects).exists()
    assert Path(run["rejects_file"]).exists()  # written just now
    left = run_ids(ws)
    assert ids["import 1"] not in left and ids["import 2"] not in left
    assert ids["export 1"] not in left and ids["export 2"] in left
    # A dry run prunes nothing.
    backdate(ws)
    ok(ws, "export", "changes-export", "--dry-run")
    assert run_ids(ws) == left


def test_check_warns_of_old_rejects_files_without_changing_its_exit_code(
    ws: Workspace,
) -> None:
    drop_day(ws, DAY1, WITH_A_BAD_ROW)
    drop_day(ws, DAY2, WITH_A_BAD_ROW.replace("x@", "y@"))
    first = ok(ws, "import", "newsletter-import", "--date", DAY1)["rejects_file"]
    second = ok(ws, "import", "newsletter-import", "--date", DAY2)["rejects_file"]
    fresh = ws.cli("--json", "check")
    assert json.loads(fresh.stdout)["warnings"] == []
    assert json.loads(fresh.stdout)["stale_rejects"] is None

    age(Path(first), 30.5)  # older than the default 30 days
    stale = ws.cli("--json", "check")
    plain = ws.cli("check")

    assert stale.exit_code == plain.exit_code == fresh.exit_code
    report = json.loads(stale.stdout)
    assert report["stale_rejects"]["files"] == 1
    assert report["stale_rejects"]["folder"] == str(rejects_folder(ws))
    assert report["stale_rejects"]["retention_days"] == 30
    [warning] = report["warnings"]
    assert warning.startswith(f"rejects: 1 file in {rejects_folder(ws)} is older than ")
    assert "older than retention.rejects (30d)" in warning and "campaign-sync prune" in warning
    assert f"warning: {warning}" in plain.output.splitlines()

    pruned = ok(ws, "prune")

    assert pruned["rejects"]["files"] == [first]
    assert not Path(first).exists() and Path(second).exists()
    assert json.loads(ws.cli("--json", "check").stdout)["warnings"] == []


def test_a_shorter_retention_applies_to_rejects_and_runs(ws: Workspace) -> None:
    drop_day(ws, DAY1, WITH_A_BAD_ROW)
    run = ok(ws, "import", "newsletter-import", "--date", DAY1)
    age(Path(run["rejects_file"]), 3)
    ws.write_config("retention: {runs: 400d, rejects: 2d}\n")

    assert ok(ws, "prune", "--dry-run")["rejects"]["files"] == [run["rejects_file"]]
    text = ws.cli("prune").output
    assert text.startswith("removed 0 run records started before ")
    assert " and 1 rejects file written before " in text
    assert f"  {run['rejects_file']}" in text.splitlines()
    assert not Path(run["rejects_file"]).exists()


def test_a_failure_to_prune_is_a_warning_and_the_run_stands(ws: Workspace) -> None:
    drop_day(ws, DAY1)
    ok(ws, "import", "newsletter-import", "--date", DAY1)
    # The rejects folder is a link to someone else's folder holding an old file: pruning
    # must neither follow it nor fail the run.
    elsewhere = ws.root / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "keep.csv"
    victim.write_text("mine\n")
    age(victim, 400)
    rejects_folder(ws).parent.mkdir(exist_ok=True)
    rejects_folder(ws).symlink_to(elsewhere)
    drop_day(ws, DAY2, SAMPLE + "dora@example.net;Dora;D;\n")

    run = ws.cli("--json", "import", "newsletter-import", "--date", DAY2)

    assert run.exit_code == 0, run.output
    document = json.loads(run.stdout)
    assert document["status"] == "succeeded"
    [warning] = document["warnings"]
    assert warning.startswith("retention: pruning failed, the run itself stands: work_dir: ")
    assert "is a symbolic link" in warning
    assert victim.exists()
    recorded = ok(ws, "history", "--limit", "1")[0]
    assert recorded["warnings"] == [warning]

    refused = ws.run("prune")  # the installed CLI: stdout and stderr apart
    assert refused.returncode == 1 and refused.stdout == ""
    [line] = refused.stderr.splitlines()
    assert line.startswith("campaign-sync: error: work_dir: ") and "symbolic link" in line
    assert victim.exists()


def test_prune_before_any_run_creates_no_store(ws: Workspace) -> None:
    done = ok(ws, "prune")
    assert done["runs"]["removed"] == 0 and done["rejects"]["files"] == []
    if ws.kind == "sqlite":
        assert not ws.store.exists()


def test_an_older_store_gets_its_checksums_from_the_runs(ws: Workspace) -> None:
    drop_day(ws, DAY1)
    first = ok(ws, "import", "newsletter-import", "--date", DAY1)["run_id"]
    # Back to the schema before checksums had a table of their own.
    if ws.kind == "sqlite":
        statements = ["DROP TABLE imported_files", "DROP INDEX runs_by_start"]
        statements.append("PRAGMA user_version = 7")
    else:
        statements = ["DROP TABLE imported_files", "DROP INDEX runs_by_start"]
        statements.append("DELETE FROM schema_version WHERE version = 8")
    for statement in statements:
        ws.query(statement)

    again = ok(ws, "import", "newsletter-import", "--date", DAY1)  # migrates first

    assert again["status"] == "skipped"
    assert f"already imported by run {first}" in again["message"]
    assert ws.query("SELECT job, run_id FROM imported_files") == [("newsletter-import", first)]


@pytest.mark.parametrize(
    ("setting", "key", "said"),
    [
        ("{runs: 400}", "retention.runs", "got 400 without a unit (write 400d)"),
        ("{rejects: 48h}", "retention.rejects", "expected a number of days like 30d, got '48h'"),
        ("{rejects: 0d}", "retention.rejects", "0d is out of range (1d..36500d)"),
        ("{logs: 30d}", "retention.logs", "unknown key (allowed here: runs, rejects)"),
        ("30d", "retention", "expected a mapping, got text"),
    ],
)
def test_bad_retention_is_a_config_error_naming_the_key(
    tmp_path: Path, setting: str, key: str, said: str
) -> None:
    workspace = Workspace(tmp_path)
    workspace.inbox.mkdir()
    workspace.write_config(f"retention: {setting}\n")

    done = workspace.cli("prune")

    assert done.exit_code == 2
    assert f"At '{key}': " in done.output and said in done.output
