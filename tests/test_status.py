"""list-jobs states, --running, check and lists, from real run records in a real store."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys

import pytest
from conftest import SAMPLE, Workspace
from faults import read_only
from test_store_runs import job_locked

pytestmark = pytest.mark.stores("sqlite", "postgres")


def utc(days_ago: float) -> str:
    moment = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=days_ago)
    return moment.isoformat(timespec="microseconds")


def record_run(ws: Workspace, job: str, status: str, started: str, **extra: object) -> None:
    columns = {"job": job, "type": "recipient-import", "status": status, "started": started}
    columns.update(extra)
    names = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    ws.query(f"INSERT INTO runs ({names}) VALUES ({marks})", tuple(columns.values()))


def states(ws: Workspace, *args: str) -> dict[str, dict]:
    done = ws.cli("--json", "list-jobs", *args)
    assert done.exit_code == 0, done.output
    return {job["name"]: job for job in json.loads(done.stdout)}


def prepared(ws: Workspace) -> Workspace:
    """A store with the schema and one real successful import."""
    ws.drop("/import/newsletter_20261101.csv", SAMPLE)
    assert ws.cli("import", "newsletter-import", "--date", "2026-11-01").exit_code == 0
    return ws


def test_next_run_is_in_the_config_time_zone(ws: Workspace) -> None:
    job = states(ws)["newsletter-import"]
    next_run = datetime.datetime.fromisoformat(job["next_run"])
    assert next_run.strftime("%H:%M") == "02:30"
    assert next_run.utcoffset() in (datetime.timedelta(hours=1), datetime.timedelta(hours=2))
    assert next_run > datetime.datetime.now(datetime.timezone.utc)


def test_idle_after_a_success_and_never_run_before_any(ws: Workspace) -> None:
    found = states(prepared(ws))
    assert found["newsletter-import"]["state"] == "idle"
    assert found["newsletter-import"]["last_run"]["counts"]["inserted"] == 3
    assert found["newsletter-export"]["state"] == "never-run"
    assert found["newsletter-export"]["last_run"] is None


def test_overdue_when_the_last_scheduled_time_passed_without_success(ws: Workspace) -> None:
    prepared(ws)
    ws.query("DELETE FROM runs")
    ws.query("UPDATE jobs SET first_seen = ? WHERE name = 'newsletter-import'", (utc(30),))
    record_run(ws, "newsletter-import", "succeeded", utc(3), finished=utc(3))
    assert states(ws)["newsletter-import"]["state"] == "overdue"
    done = ws.run("check")
    assert done.returncode == 1
    assert done.stdout.strip() == "newsletter-import: overdue (schedule 'daily 02:30')"


def test_a_skipped_run_after_the_scheduled_time_answers_it(ws: Workspace) -> None:
    # Cron ran the job on time; the file was already imported (or missing with `skip`).
    prepared(ws)
    ws.query("DELETE FROM runs")
    ws.query("UPDATE jobs SET first_seen = ? WHERE name = 'newsletter-import'", (utc(30),))
    record_run(ws, "newsletter-import", "succeeded", utc(3), finished=utc(3))
    record_run(ws, "newsletter-import", "skipped", utc(0.01), finished=utc(0.01))
    assert states(ws)["newsletter-import"]["state"] == "idle"
    assert ws.run("check").returncode == 0


def test_check_names_a_work_dir_where_runs_could_not_start(ws: Workspace) -> None:
    # Every run would fail before it is recorded: no failed run for check to see.
    (ws.root / "file").write_text("not a folder")
    ws.write_config(text=ws.config.read_text().replace("work_dir: var", "work_dir: file/var"))
    done = ws.run("check")
    assert done.returncode == 1
    assert done.stdout.strip() == (
        f"work_dir: {ws.root}/file/var cannot be made: {ws.root}/file is not a folder; "
        "runs cannot start"
    )
    assert not (ws.root / "store.db").exists()


def test_check_lists_an_unusable_log_file_with_the_other_problems(ws: Workspace) -> None:
    (ws.root / "file").write_text("not a folder")
    text = ws.config.read_text().replace(
        "work_dir: var", f"work_dir: file/var\nlog_file: {ws.root}"
    )
    ws.write_config(text=text)
    done = ws.run("check")
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"work_dir: {ws.root}/file/var cannot be made: {ws.root}/file is not a folder; "
        "runs cannot start",
        f"log_file: {ws.root} is a folder; runs cannot start",
    ]


def test_a_job_that_never_ran_although_due_since_the_config_changed_is_overdue(
    ws: Workspace,
) -> None:
    # E.g. its crontab line was never installed: no run, so no failure to see either.
    from campaign_sync import config
    from campaign_sync.ops import monitor as status

    loaded = config.load(str(ws.config))
    now = datetime.datetime.now(datetime.timezone.utc)
    fresh = {job["name"]: job["state"] for job in status.job_states(loaded, None, now)}
    assert fresh["newsletter-import"] == "never-run"  # daily 02:30: nothing owed yet
    later = now + datetime.timedelta(days=2)
    found = {job["name"]: job for job in status.job_states(loaded, None, later)}
    assert found["newsletter-import"]["state"] == "overdue"
    assert found["newsletter-import"]["last_run"] is None
    assert status.problems(list(found.values()))[0] == (
        "newsletter-import: overdue (schedule 'daily 02:30')"
    )


def test_a_config_copied_with_its_old_mtime_is_not_taken_as_old(ws: Workspace) -> None:
    three_days_ago = datetime.datetime.now().timestamp() - 3 * 86400
    os.utime(ws.config, (three_days_ago, three_days_ago))  # as cp -p or rsync -a leave it
    assert states(ws)["newsletter-import"]["state"] == "never-run"
    assert ws.run("check").returncode == 0


def test_failing_job_is_named_by_check_with_its_error(ws: Workspace) -> None:
    prepared(ws)
    record_run(
        ws,
        "newsletter-export",
        "failed",
        utc(0.01),
        finished=utc(0.01),
        error="cannot upload /export/newsletter.csv: disk full",
    )
    assert states(ws)["newsletter-export"]["state"] == "failing"
    done = ws.run("--json", "check")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["ok"] is False
    assert len(report["problems"]) == 1
    assert report["problems"][0].startswith("newsletter-export: last run failed at ")
    assert report["problems"][0].endswith("cannot upload /export/newsletter.csv: disk full")


def test_check_is_quiet_and_zero_when_all_is_well(ws: Workspace) -> None:
    done = prepared(ws).run("check")
    assert done.returncode == 0
    assert done.stdout.startswith("OK: 2 jobs")


def test_running_job_shows_pid_and_elapsed_time(ws: Workspace) -> None:
    prepared(ws)
    # A live process (this test) holding a running run, as a long import would.
    record_run(
        ws, "newsletter-export", "running", utc(0.001), pid=os.getpid(), host=os.uname().nodename
    )
    with job_locked(ws, "newsletter-export"):  # alive: on PostgreSQL only the lock says so
        found = states(ws, "--running")
        plain = ws.run("list-jobs", "--running")
    assert list(found) == ["newsletter-export"]
    running = found["newsletter-export"]["running"]
    assert (running["host"], running["pid"]) == (os.uname().nodename, os.getpid())
    assert 60 <= running["elapsed_seconds"] < 600
    assert found["newsletter-export"]["state"] == "running"
    assert plain.stdout.splitlines()[1].split()[:4] == [
        "newsletter-export",
        "recipient-export",
        os.uname().nodename,
        str(os.getpid()),
    ]


def test_nothing_running_says_so(ws: Workspace) -> None:
    done = prepared(ws).run("list-jobs", "--running")
    assert done.stdout.strip() == "no job is running"


def members(ws: Workspace) -> Workspace:
    """The SAMPLE import's members, written with SQL so that `lists` is tested on either
    store without the import engine: anna (double opt-in 2026-11-20), ben and carla."""
    assert ws.cli("export", "newsletter-export").exit_code == 0  # creates the store
    stamp = "2026-11-01T01:00:00.000000+00:00"
    ws.query("INSERT INTO lists (name, created_at) VALUES ('newsletter', ?)", (stamp,))
    for email, doi in (
        ("anna@example.com", "2026-11-20T09:15:00.000000+00:00"),
        ("ben@example.com", None),
        ("carla@example.org", None),
    ):
        ws.query(
            "INSERT INTO recipients (list_id, email, doi_confirmed_at, created_at, updated_at) "
            "SELECT id, ?, ?, ?, ? FROM lists WHERE name = 'newsletter'",
            (email, doi, stamp, stamp),
        )
    return ws


@pytest.mark.stores("sqlite", "postgres")
def test_lists_counts_per_status(ws: Workspace) -> None:
    members(ws)
    now = utc(0)
    ws.query(
        "INSERT INTO blocklist (pattern, reason, created_at, modified_at) "
        "VALUES ('*@example.org', 'test', ?, ?)",
        (now, now),
    )
    ws.query("UPDATE recipients SET status = 'unsubscribed' WHERE email = 'ben@example.com'")
    ws.query(
        "INSERT INTO bounces (email, type, bounced_at) VALUES "
        "('anna@example.com', 'hard', ?), ('anna@example.com', 'hard', ?), "
        "('anna@example.com', 'hard', ?)",
        (now, now, now),
    )
    done = ws.cli("--json", "lists")
    assert json.loads(done.stdout) == [
        {"list": "newsletter", "active": 0, "unsubscribed": 1, "blocklisted": 1, "outbounced": 1}
    ]


@pytest.mark.stores("sqlite", "postgres")
def test_lists_counts_follow_the_unsubscriber_list_as_exports_do(ws: Workspace) -> None:
    members(ws)  # anna confirmed double opt-in on 2026-11-20; ben and carla never did
    ws.query(
        "INSERT INTO unsubscribers (email, list, unsubscribed_at) VALUES "
        "('ben@example.com', '', '2026-11-02T00:00:00+00:00'), "  # every list
        "('anna@example.com', 'newsletter', '2026-11-02T00:00:00+00:00'), "  # before her DOI
        "('carla@example.org', 'other', '2026-11-02T00:00:00+00:00')"  # another list
    )
    done = ws.cli("--json", "lists")
    assert json.loads(done.stdout) == [
        {"list": "newsletter", "active": 2, "unsubscribed": 1, "blocklisted": 0, "outbounced": 0}
    ]


DEAD_PID = 999_999_999  # above any pid_max: no such process


def test_status_commands_read_a_dead_run_while_another_process_holds_the_write_lock(
    ws: Workspace,
) -> None:
    """The dead run reads `interrupted` at once: no command waits for the write lock (60 s)
    to record that; the next run of the job records it."""
    prepared(ws)
    started = utc(0.01)
    record_run(ws, "newsletter-import", "running", started, pid=DEAD_PID, host=os.uname().nodename)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
            "c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); sys.stdin.read()",
            str(ws.store),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        answers = {
            args: subprocess.run(
                ["campaign-sync", "--config", str(ws.config), "--json", *args],
                capture_output=True,
                text=True,
                timeout=20,  # far below the busy timeout a write would wait for
            )
            for args in (
                ("list-jobs",),
                ("list-jobs", "--running"),
                ("check",),
                ("history",),
                ("lists",),
            )
        }
    finally:
        holder.communicate(input="", timeout=20)
    dead = "the process ended before the run finished"
    for args, done in answers.items():
        assert (done.returncode, done.stderr) == ((1 if args == ("check",) else 0), ""), args
    jobs = {job["name"]: job for job in json.loads(answers[("list-jobs",)].stdout)}
    last = jobs["newsletter-import"]["last_run"]
    assert (jobs["newsletter-import"]["state"], last["status"], last["error"]) == (
        "failing",
        "interrupted",
        dead,
    )
    assert json.loads(answers[("list-jobs", "--running")].stdout) == []
    assert json.loads(answers[("check",)].stdout) == {
        "ok": False,
        "problems": [f"newsletter-import: last run interrupted at {started}: {dead}"],
        "warnings": [],
        "stale_rejects": None,
    }
    assert json.loads(answers[("history",)].stdout)[0]["status"] == "interrupted"
    assert json.loads(answers[("lists",)].stdout)[0]["active"] == 3
    # Nothing was written: the next run of the job records the dead run.
    assert ws.query("SELECT status FROM runs WHERE pid = ?", (DEAD_PID,)) == [("running",)]
    ws.drop("/import/newsletter_20261102.csv", SAMPLE)
    assert ws.run("import", "newsletter-import", "--date", "2026-11-02").returncode == 0
    assert ws.query("SELECT status, error FROM runs WHERE pid = ?", (DEAD_PID,)) == [
        ("interrupted", dead)
    ]


@pytest.mark.parametrize("what", ["folder", "file"])
@pytest.mark.stores("sqlite")  # permissions of the SQLite file and its folder
def test_check_names_a_store_that_runs_cannot_write(ws: Workspace, what: str) -> None:
    """A store on a read-only file system, or a store file nobody may write: every run would
    fail before it is recorded, so check says so (exit 1, as for its other problems)."""
    ws.write_config(text=ws.config.read_text().replace("store: store.db", "store: data/store.db"))
    prepared(ws)
    data = ws.root / "data"
    with read_only(data if what == "folder" else data / "store.db"):
        done = ws.run("--json", "check")
        plain = ws.run("check")
    problem = {
        "folder": f"store: {data} is on a read-only file system; runs cannot start",
        "file": f"store: {data}/store.db is not writable for this user; runs cannot start",
    }[what]
    assert (done.returncode, done.stderr) == (1, "")
    assert json.loads(done.stdout) == {
        "ok": False,
        "problems": [problem],
        "warnings": [],
        "stale_rejects": None,
    }
    assert (plain.returncode, plain.stdout) == (1, f"{problem}\n")
