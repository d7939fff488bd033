"""End to end through the CLI: imports, exports, exit codes, locks and run records."""

from __future__ import annotations

import datetime
import fcntl
import gzip
import importlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import SAMPLE, Workspace
from faults import close_listener, integrity, query, read_only, small_disk
from webhook_server import WebhookTestServer

pytestmark = pytest.mark.stores("sqlite", "postgres")

TODAY = datetime.datetime.now(datetime.timezone.utc).astimezone().strftime("%Y%m%d")


def drop_for(ws: Workspace, day: str, content: str) -> None:
    ws.drop(f"/import/newsletter_{day}.csv", content)


def test_import_json_document_has_spec_fields_and_counts(ws: Workspace) -> None:
    drop_for(ws, "20261101", SAMPLE)
    done = ws.run("--json", "import", "newsletter-import", "--date", "2026-11-01")
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)  # exactly one document, nothing else
    assert run["job"] == "newsletter-import"
    assert run["status"] == "succeeded"
    assert run["run_id"] == 1
    assert run["file"]["path"] == "/import/newsletter_20261101.csv"
    assert run["file"]["bytes"] == len(SAMPLE.encode())
    assert len(run["file"]["sha256"]) == 64
    assert run["counts"] == {
        "read": 3,
        "inserted": 3,
        "updated": 0,
        "unchanged": 0,
        "rejected": 0,
        "duplicates": 0,
        "suppressed_unsubscribed": 0,
        "suppressed_blocklisted": 0,
    }
    for key in ("started", "finished", "duration_seconds", "rejects_file", "error"):
        assert key in run
    assert ws.recipients() == {
        "anna@example.com": ("active", {"first_name": "Anna", "last_name": "Schmidt"}),
        "ben@example.com": ("active", {"first_name": "Ben", "last_name": "Müller"}),
        "carla@example.org": ("active", {"first_name": "Carla", "last_name": "Rossi"}),
    }


def test_json_flag_is_accepted_after_the_command_name(ws: Workspace) -> None:
    drop_for(ws, "20261101", SAMPLE)
    done = ws.cli("import", "newsletter-import", "--date", "2026-11-01", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["counts"]["inserted"] == 3


def test_same_file_twice_is_skipped_and_force_imports_it_again(ws: Workspace) -> None:
    drop_for(ws, "20261101", SAMPLE)
    assert ws.cli("import", "newsletter-import", "--date", "2026-11-01").exit_code == 0
    again = ws.cli("--json", "import", "newsletter-import", "--date", "2026-11-01")
    assert again.exit_code == 0
    skipped = json.loads(again.stdout)
    assert skipped["status"] == "skipped"
    assert "already imported by run 1" in skipped["message"]
    forced = ws.cli("--json", "import", "newsletter-import", "--date", "2026-11-01", "--force")
    assert json.loads(forced.stdout)["counts"]["unchanged"] == 3


def test_upsert_counts_updates_and_keeps_fields_not_in_the_file(ws: Workspace) -> None:
    drop_for(ws, "20261101", SAMPLE)
    ws.cli("import", "newsletter-import", "--date", "2026-11-01")
    drop_for(
        ws,
        "20261102",
        "e-mail ; VORNAME\nanna@example.com;Annette\nben@example.com;Ben\ndora@example.com;Dora\n",
    )
    done = ws.cli("--json", "import", "newsletter-import", "--date", "2026-11-02")
    assert json.loads(done.stdout)["counts"] == {
        "read": 3,
        "inserted": 1,
        "updated": 1,
        "unchanged": 1,
        "rejected": 0,
        "duplicates": 0,
        "suppressed_unsubscribed": 0,
        "suppressed_blocklisted": 0,
    }
    people = ws.recipients()
    assert people["anna@example.com"][1] == {"first_name": "Annette", "last_name": "Schmidt"}
    assert people["dora@example.com"][1] == {"first_name": "Dora"}


def test_file_option_imports_a_local_file(ws: Workspace) -> None:
    local = ws.root / "manual.csv"
    local.write_text(SAMPLE, encoding="utf-8")
    done = ws.cli("--json", "import", "newsletter-import", "--file", str(local))
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["file"]["path"] == str(local)
    assert len(ws.recipients()) == 3


def test_rejected_rows_go_to_a_private_rejects_file(ws: Workspace) -> None:
    drop_for(ws, "20261101", SAMPLE + "broken-address;X;Y;\n")
    done = ws.cli("--json", "import", "newsletter-import", "--date", "2026-11-01")
    run = json.loads(done.stdout)
    assert run["counts"]["rejected"] == 1
    assert run["first_rejects"][0]["line"] == 5
    rejects = ws.root / run["rejects_file"]
    assert oct(rejects.stat().st_mode & 0o777) == "0o600"
    lines = rejects.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "line;reason;E-Mail;Vorname;Nachname;DOI"
    assert lines[1].startswith("5;") and lines[1].endswith(";broken-address;X;Y;")


def test_missing_source_exits_3_and_records_a_failed_run(ws: Workspace) -> None:
    done = ws.run("import", "newsletter-import", "--date", "2026-11-05")
    assert done.returncode == 3
    assert "no file /import/newsletter_20261105.csv on server 'inbox'" in done.stderr
    assert "Traceback" not in done.stderr
    assert ws.query("SELECT status FROM runs") == [("failed",)]


def test_missing_source_with_skip_exits_0(ws: Workspace) -> None:
    ws.write_config(
        text=ws.config.read_text().replace(
            'path: "/import/newsletter_{date:%Y%m%d}.csv"}',
            'path: "/import/newsletter_{date:%Y%m%d}.csv", missing: skip}',
        )
    )
    done = ws.cli("--json", "import", "newsletter-import", "--date", "2026-11-05")
    assert done.exit_code == 0
    assert json.loads(done.stdout)["status"] == "skipped"


def test_wrong_kind_of_job_is_a_usage_error(ws: Workspace) -> None:
    done = ws.run("export", "newsletter-import")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "campaign-sync: error: 'newsletter-import' is a recipient-import job; "
        "run it with `campaign-sync import newsletter-import`"
    )


def test_unknown_job_is_a_usage_error(ws: Workspace) -> None:
    done = ws.run("import", "nope")
    assert done.returncode == 2
    assert "no job named 'nope' (configured jobs: newsletter-export, newsletter-import)" in (
        done.stderr
    )


@pytest.mark.parametrize("command", ["import", "export", "dispatch", "history"])
def test_an_unknown_job_name_is_one_line_and_exit_2_for_every_command(
    ws: Workspace, command: str
) -> None:
    error = (
        f"{ws.config}: no job named 'nope' (configured jobs: newsletter-export, newsletter-import)"
    )
    done = ws.run(command, "nope")
    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        f"campaign-sync: error: {error}\n",
    )
    done = ws.run("--json", command, "nope")
    assert (done.returncode, json.loads(done.stdout)) == (2, {"error": error, "exit_code": 2})
    assert not ws.store.exists()


def test_errors_in_json_mode_still_print_one_json_document(ws: Workspace) -> None:
    done = ws.run("--json", "import", "nope")
    assert done.returncode == 2
    assert json.loads(done.stdout)["exit_code"] == 2


def broken_file_fails_cleanly(ws: Workspace, content: bytes, expected: str) -> None:
    drop_for(ws, "20261101", SAMPLE)
    ws.cli("import", "newsletter-import", "--date", "2026-11-01")
    before = ws.dump()
    drop_for(ws, "20261102", "")
    ws.drop("/import/newsletter_20261102.csv", content)
    done = ws.run("import", "newsletter-import", "--date", "2026-11-02")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert expected in done.stderr, done.stderr
    after = [line for line in ws.dump() if 'INSERT INTO "runs"' not in line]
    assert after == [line for line in before if 'INSERT INTO "runs"' not in line]
    assert ws.query("SELECT status FROM runs ORDER BY id") == [("succeeded",), ("failed",)]


def test_undecodable_file_fails_naming_the_line(ws: Workspace) -> None:
    broken_file_fails_cleanly(
        ws,
        b"E-Mail;Vorname\nanna@example.com;Anna\nbert@example.com;B\xe4rbel\n",
        "cannot decode as utf-8 (byte 0xe4)",
    )


def test_file_without_email_column_fails(ws: Workspace) -> None:
    # The job maps E-Mail to email: the message names that and the file's header.
    broken_file_fails_cleanly(
        ws,
        b"Mail;Vorname\nanna@example.com;Anna\n",
        "/import/newsletter_20261102.csv: line 1: no column 'E-Mail', which the job's columns "
        "map to 'email' (header: Mail, Vorname); correct the header's name in columns, or the "
        "file\n",
    )


def test_unterminated_quote_fails_naming_the_line(ws: Workspace) -> None:
    broken_file_fails_cleanly(
        ws,
        b'E-Mail;Vorname\nanna@example.com;Anna\nbert@example.com;"Bert\n',
        "line 3: a quote opened in this row is never closed;",
    )


def test_truncated_last_row_fails(ws: Workspace) -> None:
    broken_file_fails_cleanly(
        ws,
        b"E-Mail;Vorname;Nachname\nanna@example.com;Anna;S\nbert@exam",
        "line 3: the last row is incomplete",
    )


# The SQLite job lock is a file (test_store_runs.py holds the PostgreSQL one).
@pytest.mark.stores("sqlite")
def test_second_concurrent_run_exits_75_and_changes_nothing(ws: Workspace) -> None:
    drop_for(ws, "20261101", SAMPLE)
    lock_dir = ws.root / "var" / "locks"
    lock_dir.mkdir(parents=True)
    fd = os.open(lock_dir / "newsletter-import.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a run in progress holds this
    try:
        done = ws.run("import", "newsletter-import", "--date", "2026-11-01")
    finally:
        os.close(fd)
    assert done.returncode == 75
    assert "another run of 'newsletter-import' is in progress" in done.stderr
    assert not ws.store.exists()  # it did not even open the store


def test_dead_run_shows_as_interrupted(ws: Workspace) -> None:
    drop_for(ws, "20261101", SAMPLE)
    ws.cli("import", "newsletter-import", "--date", "2026-11-01")
    ws.query(
        "INSERT INTO runs (job, type, status, pid, host, started) "
        "VALUES ('newsletter-export', 'recipient-export', 'running', 999999999, ?, ?)",
        (os.uname().nodename, "2026-11-01T00:00:00+00:00"),
    )
    ws.query("SELECT 1")  # the insert above committed via the context manager
    done = ws.cli("--json", "list-jobs")
    states = {job["name"]: job for job in json.loads(done.stdout)}
    assert states["newsletter-export"]["last_run"]["status"] == "interrupted"
    assert states["newsletter-export"]["state"] == "failing"
    assert states["newsletter-export"]["running"] is None


def test_export_writes_the_final_name_only(ws: Workspace) -> None:
    drop_for(ws, "20261101", SAMPLE)
    ws.cli("import", "newsletter-import", "--date", "2026-11-01")
    done = ws.cli("--json", "export", "newsletter-export")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["counts"] == {"written": 3}
    exported = ws.inbox / "export"
    assert [p.name for p in exported.iterdir()] == ["newsletter.csv"]
    assert (exported / "newsletter.csv").read_text(encoding="utf-8").splitlines() == [
        "email,first_name,last_name",
        "anna@example.com,Anna,Schmidt",
        "ben@example.com,Ben,Müller",
        "carla@example.org,Carla,Rossi",
    ]
    assert list((ws.root / "var" / "staging" / "newsletter-export").iterdir()) == []


def test_staging_left_by_a_killed_run_is_removed_by_the_next_run(ws: Workspace) -> None:
    leftover = ws.root / "var" / "staging" / "newsletter-import" / "x.part.csv"
    leftover.parent.mkdir(parents=True)
    leftover.write_text("half a file")
    ws.drop("/import/newsletter_20261101.csv", SAMPLE)
    assert ws.cli("import", "newsletter-import", "--date", "2026-11-01").exit_code == 0
    assert list(leftover.parent.iterdir()) == []


def test_dry_run_import_counts_but_changes_nothing(ws: Workspace) -> None:
    drop_for(ws, "20261102", "E-Mail;Vorname;Nachname;DOI\nzoe@example.com;Zoe;Z;\n")
    assert ws.cli("import", "newsletter-import", "--date", "2026-11-02").exit_code == 0
    before = ws.dump()
    drop_for(ws, "20261101", SAMPLE)
    done = ws.cli("--json", "import", "newsletter-import", "--date", "2026-11-01", "--dry-run")
    run = json.loads(done.stdout)
    assert run["dry_run"] is True
    assert run["counts"]["inserted"] == 3
    assert ws.dump() == before


def test_list_jobs_json_fields(ws: Workspace) -> None:
    done = ws.cli("--json", "list-jobs")
    assert done.exit_code == 0
    jobs = json.loads(done.stdout)
    assert [job["name"] for job in jobs] == ["newsletter-import", "newsletter-export"]
    assert set(jobs[0]) == {
        "name",
        "type",
        "list",
        "schedule",
        "next_run",
        "state",
        "running",
        "last_run",
    }
    assert jobs[0]["state"] == "never-run"
    assert not ws.store.exists()  # looking creates nothing


def test_list_jobs_plain_when_piped(ws: Workspace) -> None:
    done = ws.run("list-jobs")
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines[0].split() == [
        "JOB",
        "TYPE",
        "LIST",
        "SCHEDULE",
        "NEXT",
        "RUN",
        "STATE",
        "LAST",
        "RUN",
    ]
    assert lines[1].split()[:2] == ["newsletter-import", "recipient-import"]
    assert "\x1b[" not in done.stdout


def test_history_lists_runs_newest_first(ws: Workspace) -> None:
    drop_for(ws, "20261101", SAMPLE)
    ws.cli("import", "newsletter-import", "--date", "2026-11-01")
    ws.cli("import", "newsletter-import", "--date", "2026-11-01")
    done = ws.cli("--json", "history", "newsletter-import", "--limit", "5")
    runs = json.loads(done.stdout)
    assert [(r["run_id"], r["status"]) for r in runs] == [(2, "skipped"), (1, "succeeded")]


def test_quiet_run_prints_nothing_when_it_succeeds(ws: Workspace) -> None:
    drop_for(ws, "20261101", SAMPLE)
    done = ws.run("-q", "import", "newsletter-import", "--date", "2026-11-01")
    assert done.returncode == 0
    assert (done.stdout, done.stderr) == ("", "")  # cron mails nothing for a good run


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("work_dir: var", "work_dir: {root}/file/var"),
            "At 'work_dir': cannot use {root}/file/var/locks: Not a directory; set `work_dir` "
            "to a folder this user can write",
        ),
        (
            ("work_dir: var", "work_dir: var\nlog_file: {root}"),
            "At 'log_file': cannot write the log file {root}: Is a directory; set `log_file` to "
            "a file in a writable folder",
        ),
        (
            ("store: store.db", "store: {root}/file/store.db"),
            "At 'store': cannot create the folder of {root}/file/store.db: File exists; set "
            "`store` to a path in a writable folder",
        ),
        (
            ("store: store.db", "store: {root}/inbox"),
            "At 'store': {root}/inbox is a directory; set `store` to a file path",
        ),
    ],
)
@pytest.mark.stores("sqlite")  # folders of the SQLite store and of the file locks
def test_unusable_paths_in_the_config_are_one_line_exit_2_and_nothing_recorded(
    ws: Workspace, change: tuple[str, str], expected: str
) -> None:
    (ws.root / "file").write_text("not a folder")
    old, new = change
    text = ws.config.read_text().replace(old, new.format(root=ws.root))
    ws.write_config(text=text)
    ws.drop("/import/newsletter_20261101.csv", SAMPLE)
    done = ws.run("--json", "import", "newsletter-import", "--date", "2026-11-01")
    assert done.returncode == 2
    assert json.loads(done.stdout) == {"error": expected.format(root=ws.root), "exit_code": 2}
    assert done.stderr == f"campaign-sync: error: {expected.format(root=ws.root)}\n"


@pytest.mark.stores("sqlite")  # the test sets its own store URL
def test_an_unreachable_postgresql_store_is_one_line_that_never_shows_the_password(
    ws: Workspace,
) -> None:
    text = ws.config.read_text().replace(
        "store: store.db", "store: postgresql://u:${STORE_PW}@db.example.invalid/cs"
    )
    ws.write_config(text=text)
    done = ws.run("--json", "list-jobs", env={"STORE_PW": "pgS3cret"})
    assert done.returncode == 1
    assert "pgS3cret" not in done.stdout + done.stderr
    assert json.loads(done.stdout)["error"] == (
        "cannot connect to the store postgresql://u@db.example.invalid/cs: the host name "
        "db.example.invalid cannot be resolved; check the host in `store` and this machine's DNS"
    )


@pytest.mark.stores("sqlite")  # the test sets its own store URL
def test_a_store_url_of_another_kind_is_a_config_error_that_never_shows_the_url(
    ws: Workspace,
) -> None:
    text = ws.config.read_text().replace(
        "store: store.db", "store: mysql://u:${STORE_PW}@db.example/cs"
    )
    ws.write_config(text=text)
    done = ws.run("--json", "list-jobs", env={"STORE_PW": "pgS3cret"})
    assert done.returncode == 2
    assert "pgS3cret" not in done.stdout + done.stderr
    assert json.loads(done.stdout)["error"] == (
        f"{ws.config}: At 'store': set `store` to an SQLite file path or a PostgreSQL URL "
        "(postgresql://USER@HOST:PORT/DATABASE)"
    )


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ("import", "newsletter-import", "--date", "2026-13-01"),
            "Invalid value for '--date': '2026-13-01' is not a date like 2026-01-31",
        ),
        (
            ("import", "newsletter-import", "--date", "20261101"),
            "Invalid value for '--date': '20261101' is not a date like 2026-01-31",
        ),
        (
            ("export", "newsletter-export", "--date", "2026-W48"),
            "Invalid value for '--date': '2026-W48' is not a date like 2026-01-31",
        ),
        (("history", "--limit", "0"), None),
        (("import",), "Missing argument 'JOB'."),
        (("frobnicate",), "No such command 'frobnicate'."),
        (("--bogus", "list-jobs"), "No such option '--bogus'. Did you mean '--verbose'?"),
        (("list-jobs", "--all"), "No such option '--all'."),
    ],
)
def test_usage_errors_in_json_mode_print_one_json_document(
    ws: Workspace, args: tuple[str, ...], error: str | None
) -> None:
    done = ws.run("--json", *args)
    assert done.returncode == 2
    document = json.loads(done.stdout)
    assert document["exit_code"] == 2
    if error is not None:
        assert document["error"] == error
    assert "Usage: campaign-sync" in done.stderr  # the operator still gets Click's help line
    assert not ws.store.exists()


def test_import_file_must_be_a_regular_file(ws: Workspace) -> None:
    fifo = ws.root / "pipe.csv"
    os.mkfifo(fifo)
    for path, error in (
        (ws.root, f"--file {ws.root} is a folder; name the file to import"),
        (fifo, f"--file {fifo} is not a regular file; name the file to import"),
        (ws.root / "nope.csv", f"--file {ws.root}/nope.csv: no such file"),
    ):
        done = ws.run("--json", "import", "newsletter-import", "--file", str(path))
        assert done.returncode == 2
        assert json.loads(done.stdout) == {"error": error, "exit_code": 2}
        plain = ws.run("import", "newsletter-import", "--file", str(path))
        assert (plain.returncode, plain.stdout, plain.stderr) == (
            2,
            "",
            f"campaign-sync: error: {error}\n",
        )
    assert not ws.store.exists()  # refused before anything ran


def test_export_output_must_be_a_file_in_an_existing_folder(ws: Workspace) -> None:
    for output, error in (
        (ws.root, f"--output {ws.root} is a folder; name the file to write"),
        (
            ws.root / "nope" / "x.csv",
            f"--output {ws.root}/nope/x.csv: there is no folder {ws.root}/nope",
        ),
    ):
        done = ws.run("--json", "export", "newsletter-export", "--output", str(output))
        assert done.returncode == 2
        assert json.loads(done.stdout) == {"error": error, "exit_code": 2}
    assert not ws.store.exists()  # refused before anything ran: no failed run to alert on


def test_export_output_is_compressed_as_its_own_name_says(ws: Workspace) -> None:
    text = ws.config.read_text().replace("/export/newsletter.csv", "/export/newsletter.csv.gz")
    ws.write_config(text=text)
    drop_for(ws, "20261101", SAMPLE)
    ws.cli("import", "newsletter-import", "--date", "2026-11-01")
    plain, packed = ws.root / "plain.csv", ws.root / "packed.csv.gz"
    assert ws.cli("export", "newsletter-export", "--output", str(plain)).exit_code == 0
    assert ws.cli("export", "newsletter-export", "--output", str(packed)).exit_code == 0
    assert plain.read_text(encoding="utf-8").splitlines()[1] == "anna@example.com,Anna,Schmidt"
    assert gzip.decompress(packed.read_bytes()) == plain.read_bytes()


def test_export_output_on_another_file_system_is_copied_whole(ws: Workspace) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(ws.root).st_dev:
        pytest.fail("this test needs /dev/shm on another file system than the test's folder")
    folder = Path(tempfile.mkdtemp(dir=shm))
    try:
        drop_for(ws, "20261101", SAMPLE)
        ws.cli("import", "newsletter-import", "--date", "2026-11-01")
        target = folder / "out.csv"
        # A trap someone with access to the folder might set for a predictable temp name.
        victim = folder / "victim"
        victim.write_text("keep me")
        (folder / ".out.csv.part").symlink_to(victim)
        done = ws.run("export", "newsletter-export", "--output", str(target))
        assert done.returncode == 0, done.stderr
        assert len(target.read_text(encoding="utf-8").splitlines()) == 4
        assert not target.is_symlink()
        assert oct(target.stat().st_mode & 0o777) == "0o600"
        assert victim.read_text() == "keep me"
        assert sorted(p.name for p in folder.iterdir()) == [".out.csv.part", "out.csv", "victim"]
    finally:
        shutil.rmtree(folder)


def test_a_run_stopped_by_max_rejects_still_reports_its_counts_and_rejects(
    ws: Workspace,
) -> None:
    drop_for(ws, "20261101", SAMPLE + "bad-1;X;Y;\nbad-2;X;Y;\nbad-3;X;Y;\nbad-4;X;Y;\n")
    done = ws.run("--json", "import", "newsletter-import", "--date", "2026-11-01")
    assert done.returncode == 1
    run = json.loads(done.stdout)
    assert run["status"] == "failed"
    assert run["error"].startswith("4 of 7 rows were rejected, more than the limit 50%")
    assert run["counts"]["read"] == 7 and run["counts"]["rejected"] == 4
    assert [r["line"] for r in run["first_rejects"]] == [5, 6, 7, 8]
    assert Path(run["rejects_file"]).is_file()
    assert ws.recipients() == {}  # nothing applied


def test_a_machine_problem_during_a_run_is_a_failed_run_not_a_traceback(ws: Workspace) -> None:
    drop_for(ws, "20261101", SAMPLE)
    blocked = ws.root / "var" / "staging" / "newsletter-import"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where the staging folder should be")
    done = ws.run("--json", "import", "newsletter-import", "--date", "2026-11-01")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    run = json.loads(done.stdout)
    assert run["status"] == "failed"
    assert run["error"] == (
        f"work_dir: {blocked} is not a folder; campaign-sync keeps private files only in "
        "folders of its own: remove it (it is recreated) or set `work_dir` to another folder"
    )
    assert ws.query("SELECT status, error FROM runs") == [("failed", run["error"])]


def test_an_interrupt_after_the_commit_leaves_a_succeeded_run_with_a_warning(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from campaign_sync.ops import runner

    def interrupted(*_args: object) -> None:
        raise KeyboardInterrupt  # SIGTERM while the source file is being archived

    monkeypatch.setattr(runner, "_after", interrupted)
    drop_for(ws, "20261101", SAMPLE)
    done = ws.cli("--json", "import", "newsletter-import", "--date", "2026-11-01")
    assert done.exit_code == 0, done.output
    run = json.loads(done.stdout)
    assert (run["status"], run["error"]) == ("succeeded", None)
    assert run["warnings"] == [
        "interrupted after the run's changes were committed; what follows the commit "
        "(archiving or deleting the source file) may not have happened"
    ]
    assert ws.query("SELECT status, warnings FROM runs") == [
        ("succeeded", json.dumps(run["warnings"]))
    ]
    assert len(ws.recipients()) == 3


def test_a_dry_run_before_any_real_run_creates_no_store(ws: Workspace) -> None:
    drop_for(ws, "20261101", SAMPLE)
    done = ws.run("--json", "import", "newsletter-import", "--date", "2026-11-01", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"]["inserted"] == 3
    done = ws.run("--json", "export", "newsletter-export", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"] == {"written": 0}
    assert not ws.store.exists()


def test_a_server_that_does_not_speak_ssh_gives_one_line_not_library_tracebacks(
    ws: Workspace, tmp_path: Path
) -> None:
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer_like_a_web_server() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            client.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
            client.close()

    acceptor = threading.Thread(target=answer_like_a_web_server, daemon=True)
    acceptor.start()
    (tmp_path / "known_hosts").write_text("")
    text = (
        ws.config.read_text()
        .replace(
            "servers:\n",
            "servers:\n  web:\n    type: ssh\n    host: 127.0.0.1\n"
            f"    port: {port}\n    user: nobody\n    known_hosts: {tmp_path}/known_hosts\n"
            "    timeout: 2\n    retries: 0\n",
            1,
        )
        .replace("source: {server: inbox", "source: {server: web")
    )
    ws.write_config(text=text)
    try:
        done = ws.run("-q", "import", "newsletter-import", "--date", "2026-11-01")
    finally:
        close_listener(listener, acceptor)
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("campaign-sync: error: ")


def test_an_interrupt_while_notices_go_out_keeps_the_run_as_it_ended(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from campaign_sync.ops import notify

    def interrupted(*_args: object, **_kw: object) -> None:
        raise KeyboardInterrupt  # SIGTERM while the notice mail hangs

    monkeypatch.setattr(notify, "notify", interrupted)
    drop_for(ws, "20261101", SAMPLE)
    done = ws.cli("--json", "import", "newsletter-import", "--date", "2026-11-01")
    assert done.exit_code == 0, done.output
    run = json.loads(done.stdout)
    assert run["status"] == "succeeded"
    assert run["warnings"] == ["interrupted while the notices were being sent"]
    assert ws.query("SELECT status FROM runs") == [("succeeded",)]


def test_an_interrupt_just_before_the_commit_is_recorded_as_interrupted(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = importlib.import_module(f"campaign_sync.store.{ws.kind}.runs")
    finish, calls = runs.finish, []

    def interrupted_once(*args: object) -> None:
        calls.append(args)
        if len(calls) == 1:  # inside the import's transaction, after the data
            raise KeyboardInterrupt
        finish(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(runs, "finish", interrupted_once)
    drop_for(ws, "20261101", SAMPLE)
    done = ws.cli("--json", "import", "newsletter-import", "--date", "2026-11-01")
    assert done.exit_code == 1
    assert json.loads(done.stdout)["status"] == "interrupted"
    [(status, finished)] = ws.query("SELECT status, finished FROM runs")
    assert status == "interrupted" and finished is not None
    assert ws.recipients() == {}


@pytest.mark.stores("sqlite")  # SQLite's write lock and busy timeout
def test_a_store_locked_past_the_busy_timeout_fails_with_one_line_and_a_notice(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3 as sqlite

    from campaign_sync import store
    from campaign_sync.ops import notify

    sent: list[str] = []
    monkeypatch.setattr(store, "BUSY_TIMEOUT_MS", 200)
    monkeypatch.setattr(notify, "notify", lambda _c, _j, result, **_kw: sent.append(result.error))
    drop_for(ws, "20261101", SAMPLE)
    assert ws.cli("import", "newsletter-import", "--date", "2026-11-01").exit_code == 0
    sent.clear()
    holder = sqlite.connect(ws.store, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        done = ws.cli("--json", "export", "newsletter-export")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert done.exit_code == 1
    error = json.loads(done.stdout)["error"]
    assert error == (
        f"cannot record the run in the store {ws.store}: another process held its write lock "
        f"past the busy timeout (0.2 s); find it with `fuser {ws.store}` (often an open sqlite3 "
        "shell) and run the job again"
    )
    assert sent == [error]


def _with_webhook(ws: Workspace, url: str, store: str = "store.db") -> None:
    text = ws.config.read_text().replace("store: store.db", f"store: {store}")
    ws.write_config(text=text + f"notify:\n  webhook: {url}\n  webhook_timeout: 60\n")


@pytest.mark.parametrize("what", ["folder", "file"])
@pytest.mark.stores("sqlite")  # file permissions of the SQLite store
def test_a_run_against_a_store_it_cannot_write_is_one_line_exit_2_and_a_notice(
    ws: Workspace, what: str
) -> None:
    with WebhookTestServer() as hook:
        _with_webhook(ws, hook.url, "data/store.db")
        drop_for(ws, "20261101", SAMPLE)
        assert ws.run("import", "newsletter-import", "--date", "2026-11-01").returncode == 0
        before = query(ws.root / "data" / "store.db", "SELECT * FROM runs")
        drop_for(ws, "20261102", SAMPLE)
        data = ws.root / "data"
        with read_only(data if what == "folder" else data / "store.db"):
            done = ws.run("--json", "import", "newsletter-import", "--date", "2026-11-02")
        notices = [request.json for request in hook.requests]
    error = {
        "folder": f"cannot open the store {data}/store.db: the file cannot be opened; make it "
        "and its folder readable and writable for the user the jobs run as",
        "file": f"cannot record the run in the store {data}/store.db: it is read-only for this "
        "user; make the file, its folder and any -wal/-shm files beside it writable for the "
        "user the jobs run as",
    }[what]
    assert (done.returncode, done.stderr) == (2, f"campaign-sync: error: {error}\n")
    assert json.loads(done.stdout) == {"error": error, "exit_code": 2}
    assert [(n["status"], n["error"]) for n in notices[1:]] == [("failed", error)]
    assert query(data / "store.db", "SELECT * FROM runs") == before


GARBAGE = b"not a database at all " * 100


@pytest.mark.parametrize(
    "args",
    [
        ("import", "newsletter-import", "--date", "2026-11-01"),
        ("export", "newsletter-export"),
        ("list-jobs",),
        ("list-jobs", "--running"),
        ("history",),
        ("lists",),
        ("check",),
    ],
    ids=" ".join,
)
@pytest.mark.stores("sqlite")  # a file that is no SQLite database
def test_a_store_that_is_no_store_is_exit_2_for_every_command(
    ws: Workspace, args: tuple[str, ...]
) -> None:
    ws.store.write_bytes(GARBAGE)
    drop_for(ws, "20261101", SAMPLE)
    done = ws.run("--json", *args)
    error = (
        f"cannot open the store {ws.store}: the file is not a campaign-sync store (not an SQLite "
        "database); set `store` to the store's file"
    )
    assert (done.returncode, done.stderr) == (2, f"campaign-sync: error: {error}\n")
    assert json.loads(done.stdout) == {"error": error, "exit_code": 2}
    assert ws.store.read_bytes() == GARBAGE


# The SQLite file's disk (the PostgreSQL faults are server restarts).
@pytest.mark.stores("sqlite")
def test_a_full_disk_at_the_commit_is_a_failed_run_with_one_line_and_a_notice(
    ws: Workspace,
) -> None:
    """The store's disk fills up as the import commits: a failed run, recorded as such (not
    left to read `interrupted` later), a notice, the store as before."""
    disk = ws.root / "disk"
    db = disk / "store.db"
    rows = "".join(f"user{n}@example.com;Vorname {n};Nachname {n};\n" for n in range(20_000))
    with WebhookTestServer() as hook, small_disk(disk, "600k"):
        _with_webhook(ws, hook.url, str(db))
        drop_for(ws, "20261101", SAMPLE)
        assert ws.run("import", "newsletter-import", "--date", "2026-11-01").returncode == 0
        before = query(db, "SELECT email, status, fields FROM recipients ORDER BY email")
        drop_for(ws, "20261102", "E-Mail;Vorname;Nachname;DOI\n" + rows)  # ~2 MB of pages
        done = ws.run("--json", "import", "newsletter-import", "--date", "2026-11-02")
        history = json.loads(ws.run("--json", "history").stdout)
        assert integrity(db) == "ok"
        after = query(db, "SELECT email, status, fields FROM recipients ORDER BY email")
        notices = [request.json for request in hook.requests]
    error = (
        f"cannot write to the store {db}: the disk is full; free space there and run the job again"
    )
    assert (done.returncode, done.stderr) == (1, f"campaign-sync: error: {error}\n")
    run = json.loads(done.stdout)
    assert (run["status"], run["error"], run["warnings"]) == ("failed", error, [])
    assert after == before
    assert [(r["status"], r["error"]) for r in history] == [("failed", error), ("succeeded", None)]
    assert [(n["status"], n["error"]) for n in notices] == [
        ("succeeded", None),
        ("failed", error),
    ]
