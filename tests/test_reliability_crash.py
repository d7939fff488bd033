"""Crash safety: SIGKILL at seeded points of an import, an export and a dispatch.

Each trial starts from a copy of a known store, kills this tree's `campaign-sync` at a point
drawn from a seeded, stratified schedule spread over the I/O of an uninterrupted run (bytes
read and written, so a loaded machine moves no kill into another phase), then checks what the
product promises:

- `PRAGMA integrity_check` is ok;
- the store holds either the state before the run or the state after it, nothing between;
- the killed run is reported `interrupted` (or `succeeded` when the kill came after its commit);
- a rerun converges to the state of an uninterrupted run.

Import and export trials are chained: the run after a kill is the rerun of the killed one.
RELIABILITY_TRIALS and RELIABILITY_IMPORT_ROWS
override the defaults (20 trials, 200,000 rows) for a quicker local loop.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from faults import (
    EXIT_FAILED,
    EXIT_OK,
    Kill,
    assert_no_traceback,
    generate_recipients,
    integrity,
    io_of_run,
    json_out,
    kill_at_io,
    query,
    recipient_digest,
    run_cli,
    seeded_points,
    start_cli,
)
from smtp_server import SmtpTestServer

TRIALS = int(os.environ.get("RELIABILITY_TRIALS", "20"))
IMPORT_ROWS = int(os.environ.get("RELIABILITY_IMPORT_ROWS", "200000"))
SEED = 20261127
# Kill points lie inside the reference run's I/O, and a rerun of the same work does the same
# I/O: every kill lands while the process lives. A few may not (the page cache can spare a
# run some reads), so the floor leaves room without letting a schedule that misses pass.
MIN_KILLED = TRIALS * 3 // 5

CONFIG = """\
store: store.db
work_dir: var
timezone: Europe/Berlin
servers:
  inbox: {{type: local, path: {inbox}}}
{smtp}jobs:
  seed-import:
    type: recipient-import
    list: newsletter
    source: {{server: inbox, path: /import/seed.csv}}
  big-import:
    type: recipient-import
    list: newsletter
    source: {{server: inbox, path: /import/big.csv}}
    max_rejects: 5%
  list-export:
    type: recipient-export
    list: newsletter
    target: {{server: inbox, path: /export/newsletter.csv}}
    fields: [email, first_name, last_name, city, zip]
  welcome:
    type: doi-dispatch
    list: newsletter
    mailings: mailings
  archived-import:
    type: recipient-import
    list: newsletter
    source: {{server: inbox, path: /import/in.csv, after: archive, archive_dir: /archive}}
"""


@dataclass
class Outcome:
    """What one trial saw; the figures the test reports."""

    kill: Kill
    state: str  # "before" | "after" (the store right after the kill)
    run_status: str | None  # the killed run's status as the history shows it; None: no row


def _config(root: Path, inbox: Path, smtp: SmtpTestServer | None = None) -> Path:
    # Jobs other than dispatch never connect: a closed port stands in when there is no server.
    host, port = (smtp.host, smtp.port) if smtp else ("127.0.0.1", 9)
    smtp_block = f"smtp: {{host: {host}, port: {port}, from: news@example.com, timeout: 5}}\n"
    path = root / "campaign-sync.yaml"
    path.write_text(CONFIG.format(inbox=inbox, smtp=smtp_block), encoding="utf-8")
    return path


def _copy_store(src: Path, dest_dir: Path) -> None:
    """Copy a closed store (no -wal: every connection to it was closed, so it was checkpointed)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    for suffix in ("-wal", "-shm"):
        assert not Path(f"{src}{suffix}").exists() or Path(f"{src}{suffix}").stat().st_size == 0
    shutil.copyfile(src, dest_dir / "store.db")


def _last_run(config: Path, job: str, started_after: int) -> str | None:
    """The status `history` reports for the newest run of `job` with an id above `started_after`.

    Going through the command (not SQL) checks what an operator sees: a dead run reads
    interrupted (the look writes nothing).
    """
    done = run_cli(config, "--json", "history", job, "--limit", "1")
    assert done.returncode == EXIT_OK, done.stderr
    runs = json_out(done)
    if not runs or runs[0]["run_id"] <= started_after:
        return None
    return runs[0]["status"]


def _max_run_id(db: Path) -> int:
    return int(query(db, "SELECT coalesce(max(id), 0) FROM runs")[0][0])


def _report(what: str, outcomes: list[Outcome]) -> str:
    killed = sum(o.kill.killed for o in outcomes)
    states = Counter(o.state for o in outcomes)
    statuses = Counter(str(o.run_status) for o in outcomes)
    line = (
        f"{what}: {len(outcomes)} trials, {killed} killed mid-run, states {dict(states)}, "
        f"killed-run statuses {dict(statuses)}"
    )
    print(line)
    return line


# --------------------------------------------------------------------------- shared fixtures


@dataclass
class Base:
    root: Path
    inbox: Path
    before: Path  # the store before the big import (a smaller, overlapping list)
    after: Path  # the store after it, run uninterrupted
    before_digest: tuple[int, str]
    after_digest: tuple[int, str]
    import_io: int
    import_counts: dict[str, int]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    root = tmp_path_factory.mktemp("crash-base")
    inbox = root / "inbox"
    generate_recipients(inbox / "import" / "big.csv", IMPORT_ROWS, seed=1)
    # The before-state is a list of its own (other seed: mostly other addresses, some shared),
    # so "before" and "after" differ in inserts and updates, not only in row count.
    generate_recipients(inbox / "import" / "seed.csv", 5000, seed=2)
    config = _config(root, inbox)
    done = run_cli(config, "--json", "import", "seed-import")
    assert done.returncode == EXIT_OK, done.stderr
    before = root / "before" / "store.db"
    _copy_store(root / "store.db", before.parent)

    # A rehearsal on a copy first, so the measured run below is a warm one, as trials are.
    rehearsal = root / "rehearsal"
    _copy_store(before, rehearsal)
    io_of_run(start_cli(_config(rehearsal, inbox), "--json", "import", "big-import"))
    import_io, _ = io_of_run(start_cli(config, "--json", "import", "big-import"))
    done = run_cli(config, "--json", "history", "big-import", "--limit", "1")
    assert done.returncode == EXIT_OK, done.stderr
    after = root / "after" / "store.db"
    _copy_store(root / "store.db", after.parent)
    return Base(
        root,
        inbox,
        before,
        after,
        recipient_digest(before),
        recipient_digest(after),
        import_io,
        json_out(done)[0]["counts"],
    )


# --------------------------------------------------------------------------- import


def _import_trial(base: Base, config: Path, at_bytes: int) -> Outcome:
    """Kill one import at `at_bytes` of I/O; check the store; leave it for the next trial."""
    db = config.parent / "store.db"
    last = _max_run_id(db)
    kill = kill_at_io(start_cli(config, "--json", "import", "big-import"), at_bytes)
    where = f"kill at {at_bytes:,} bytes"

    assert integrity(db) == "ok", f"{where}: {integrity(db)}"
    digest = recipient_digest(db)
    assert digest in (base.before_digest, base.after_digest), f"{where}: torn state"
    state = "after" if digest == base.after_digest else "before"
    status = _last_run(config, "big-import", last)
    if kill.killed:
        # Committed together with the data, so the status always agrees with the state.
        expected = {"after": ("succeeded",), "before": ("interrupted", None)}[state]
        assert status in expected, f"{where}: state {state}, run {status}"
    if state == "after":
        # Nothing left to redo: a rerun skips the file (same checksum) and changes nothing;
        # then the chain starts again from the before-state.
        rerun = run_cli(config, "--json", "import", "big-import")
        assert (rerun.returncode, json_out(rerun)["status"]) == (EXIT_OK, "skipped")
        assert recipient_digest(db) == base.after_digest
        _copy_store(base.before, config.parent)
    return Outcome(kill, state, status)


def test_sigkill_during_a_large_import(base: Base, tmp_path: Path) -> None:
    """Trials are chained: each run after a kill is the rerun of the killed one (and may be
    killed in turn), so reruns happen on top of every kind of leftover — dead `running` rows,
    staging files, hot WAL files. The last rerun is uninterrupted and must reach exactly the
    state of the reference run, with the reference run's counts."""
    _copy_store(base.before, tmp_path)
    config = _config(tmp_path, base.inbox)
    # Kill points cover start-up to nearly the end of the reference run's I/O, so every phase
    # (start-up, fetch, checksum, parse, merge, commit, exit) gets hit.
    points = seeded_points(SEED, TRIALS, 0.02, 0.98)
    outcomes = [_import_trial(base, config, int(share * base.import_io)) for share in points]
    _report(f"import of {IMPORT_ROWS} rows", outcomes)

    rerun = run_cli(config, "--json", "import", "big-import")
    assert rerun.returncode == EXIT_OK, rerun.stderr
    result = json_out(rerun)
    assert (result["status"], result["counts"]) == ("succeeded", base.import_counts)
    assert recipient_digest(tmp_path / "store.db") == base.after_digest
    assert integrity(tmp_path / "store.db") == "ok"
    assert sum(o.kill.killed for o in outcomes) >= MIN_KILLED, _report("killed", outcomes)
    assert any(o.state == "before" and o.run_status == "interrupted" for o in outcomes)
    # No killed run is left looking alive.
    assert "running" not in {s for (s,) in query(tmp_path / "store.db", "SELECT status FROM runs")}


# --------------------------------------------------------------------------- export


OLD_EXPORT = b"email,first_name\nold@example.com,Old\n"


@dataclass
class ExportReference:
    content: bytes
    io: int


@pytest.fixture(scope="module")
def export_reference(base: Base, tmp_path_factory: pytest.TempPathFactory) -> ExportReference:
    root = tmp_path_factory.mktemp("export-ref")
    _copy_store(base.after, root)
    inbox = root / "inbox"
    (inbox / "export").mkdir(parents=True)
    config = _config(root, inbox)
    measured = []
    for _ in range(2):  # the first run is cold (page cache, bytecode): keep the warm one
        measured.append(io_of_run(start_cli(config, "--json", "export", "list-export"))[0])
        done = run_cli(config, "--json", "history", "list-export", "--limit", "1")
        assert json_out(done)[0]["counts"]["written"] == base.after_digest[0]
    return ExportReference((inbox / "export" / "newsletter.csv").read_bytes(), measured[-1])


def _export_trial(base: Base, ref: ExportReference, config: Path, at_bytes: int) -> Outcome:
    db = config.parent / "store.db"
    target_dir = config.parent / "inbox" / "export"
    target = target_dir / "newsletter.csv"
    last = _max_run_id(db)
    kill = kill_at_io(start_cli(config, "--json", "export", "list-export"), at_bytes)
    where = f"kill at {at_bytes:,} bytes"

    assert integrity(db) == "ok"
    assert recipient_digest(db) == base.after_digest  # an export changes no data
    # A big export reads its second part in a child process: it ends with its parent.
    assert _export_parts_left(within=5.0) == [], f"{where} left a part process"
    # The partner sees the old file or the complete new one under the final name, never a part.
    content = target.read_bytes()
    assert content in (OLD_EXPORT, ref.content), f"{where}: partial export visible"
    state = "after" if content == ref.content else "before"
    status = _last_run(config, "list-export", last)
    if kill.killed:
        assert status in ("interrupted", "succeeded", None), status
        if state == "before":
            assert status != "succeeded", "recorded as succeeded, but the file was not replaced"
    target.write_bytes(OLD_EXPORT)  # the next trial starts from last week's file again
    return Outcome(kill, state, status)


def _export_parts_left(within: float) -> list[int]:
    """Export part processes of this tree still running after `within` seconds."""
    root = str(Path(__file__).resolve().parent.parent)
    deadline = time.monotonic() + within
    while True:
        left = []
        for entry in os.listdir("/proc"):
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                ours = os.readlink(f"/proc/{entry}/cwd") == root  # it runs in our tree
            except OSError:
                continue  # not a process, or gone
            if ours and b"campaign_sync.store.sqlite.exports" in argv:
                left.append(int(entry))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def test_sigkill_during_an_export(
    base: Base, export_reference: ExportReference, tmp_path: Path
) -> None:
    _copy_store(base.after, tmp_path)
    target_dir = tmp_path / "inbox" / "export"
    target_dir.mkdir(parents=True)
    target = target_dir / "newsletter.csv"
    target.write_bytes(OLD_EXPORT)  # last week's export: what a partner may read meanwhile
    config = _config(tmp_path, tmp_path / "inbox")
    points = seeded_points(SEED + 1, TRIALS, 0.02, 0.98)
    outcomes = [
        _export_trial(base, export_reference, config, int(share * export_reference.io))
        for share in points
    ]
    _report(f"export of {base.after_digest[0]} rows", outcomes)

    rerun = run_cli(config, "--json", "export", "list-export")
    assert rerun.returncode == EXIT_OK, rerun.stderr
    assert target.read_bytes() == export_reference.content
    assert sum(o.kill.killed for o in outcomes) >= MIN_KILLED, _report("killed", outcomes)
    # A killed upload may leave its temporary (hidden) file behind; it is never the final
    # name (checked per trial). The count is reported, not failed on: the promise is no
    # partial file under the final name, not a clean directory after kill -9.
    leftovers = sorted(p.name for p in target_dir.iterdir() if p.name != "newsletter.csv")
    print(f"temporary upload files left by {len(outcomes)} killed exports: {len(leftovers)}")
    assert all(name.startswith(".") for name in leftovers), leftovers


def test_sigterm_during_a_big_export_stops_its_part_process(base: Base, tmp_path: Path) -> None:
    """cron's `timeout` sends SIGTERM: the export rolls back, records `interrupted`, exits 1,
    and takes the child process reading its second part with it."""
    _copy_store(base.after, tmp_path)
    target = tmp_path / "inbox" / "export" / "newsletter.csv"
    target.parent.mkdir(parents=True)
    target.write_bytes(OLD_EXPORT)
    config = _config(tmp_path, tmp_path / "inbox")
    last = _max_run_id(tmp_path / "store.db")
    proc = start_cli(config, "--json", "export", "list-export")
    deadline = time.monotonic() + 60
    while not _export_parts_left(within=0) and proc.poll() is None:
        assert time.monotonic() < deadline, "no part process appeared"
        time.sleep(0.005)
    assert proc.poll() is None, "the export ended before its part process could be seen"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    run = json.loads(out)  # the run itself, as for any other ending
    assert (run["status"], run["error"]) == (
        "interrupted",
        "interrupted; the run was rolled back and recorded",
    )
    assert run["run_id"] == last + 1
    assert _last_run(config, "list-export", last) == "interrupted"
    assert _export_parts_left(within=5.0) == []
    assert target.read_bytes() == OLD_EXPORT


# --------------------------------------------------------------------------- SIGTERM at each point


def _archived_import(root: Path, content: str) -> tuple[Path, Path]:
    """(config, source file) for `archived-import`, with `content` waiting to be imported."""
    source = root / "inbox" / "import" / "in.csv"
    source.parent.mkdir(parents=True)
    source.write_text(content)
    return _config(root, root / "inbox"), source


COMMITTED = (
    "interrupted after the run's changes were committed; what follows the commit "
    "(archiving or deleting the source file) may not have happened"
)
NOTICES = "interrupted while the notices were being sent"
LATE = "SIGTERM arrived after the run had ended; it stopped nothing"
ROLLED_BACK = "interrupted; the run was rolled back and recorded"


# point (faults.SIGNAL_POINTS), run status, warnings in the JSON and in the store, whether the
# source was archived, stderr
SIGNAL_CASES = [
    ("before-commit", "interrupted", [], [], False, f"campaign-sync: error: {ROLLED_BACK}\n"),
    ("after-commit", "succeeded", [COMMITTED], [COMMITTED], False, ""),
    ("after-action", "succeeded", [COMMITTED], [COMMITTED], False, ""),
    ("finishing", "succeeded", [NOTICES], [NOTICES], True, ""),
    ("notice", "succeeded", [NOTICES], [NOTICES], True, ""),
    ("close", "succeeded", [LATE], [], True, ""),
    ("output", "succeeded", [], [], True, f"campaign-sync: warning: {LATE}\n"),
]


@pytest.mark.parametrize(
    ("point", "status", "warnings", "recorded_warnings", "archived", "stderr"),
    SIGNAL_CASES,
    ids=[case[0] for case in SIGNAL_CASES],
)
def test_sigterm_at_each_point_of_an_import_reports_what_the_store_holds(
    tmp_path: Path,
    point: str,
    status: str,
    warnings: list[str],
    recorded_warnings: list[str],
    archived: bool,
    stderr: str,
) -> None:
    """Before the COMMIT returns, a SIGTERM rolls back and the run is `interrupted` (exit 1);
    after it, wherever it lands, the run is the succeeded run the store holds (exit 0), with
    a warning, and never a message claiming a rollback."""
    config, source = _archived_import(
        tmp_path, "email,first_name\nanna@example.com,Anna\nben@example.com,Ben\n"
    )

    done = run_cli(config, "--json", "import", "archived-import", signal_at=point)

    assert_no_traceback(done)
    assert done.returncode == (EXIT_OK if status == "succeeded" else EXIT_FAILED), done.stderr
    assert done.stderr == stderr
    run = json_out(done)
    assert (run["status"], run["warnings"]) == (status, warnings)
    assert run["error"] == (None if status == "succeeded" else ROLLED_BACK)
    db = tmp_path / "store.db"
    assert query(db, "SELECT status, warnings FROM runs") == [
        (status, json.dumps(recorded_warnings))
    ]
    assert query(db, "SELECT count(*) FROM recipients") == [(2 if status == "succeeded" else 0,)]
    assert (tmp_path / "inbox" / "archive" / "in.csv").exists() is archived
    assert source.exists() is not archived


def test_sigterm_as_a_run_starts_changes_nothing_and_says_so(tmp_path: Path) -> None:
    config, source = _archived_import(tmp_path, "email\nanna@example.com\n")

    done = run_cli(config, "--json", "import", "archived-import", signal_at="start")

    error = "interrupted before anything was changed"
    assert (done.returncode, done.stderr) == (EXIT_FAILED, f"campaign-sync: error: {error}\n")
    assert json_out(done) == {"error": error, "exit_code": EXIT_FAILED}
    assert query(tmp_path / "store.db", "SELECT count(*) FROM runs") == [(0,)]
    assert source.exists()


# --------------------------------------------------------------------------- dispatch


DISPATCH_RECIPIENTS = 120
FIRST_SEEN = "2026-01-01T00:00:00.000000+00:00"


def _mailing(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "welcome.eml").write_text(
        "From: News <news@example.com>\nSubject: Welcome {{first_name}}\n"
        "Date: Mon, 02 Nov 2026 10:00:00 +0100\nMessage-ID: <welcome@templates.example.com>\n"
        "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\nHello {{first_name}}!\n",
        encoding="utf-8",
    )


def _seed_dispatch(db: Path) -> None:
    """Newly confirmed recipients (DOI after the job's first run), straight into a new store."""
    conn = sqlite3.connect(db)
    try:
        with conn:
            conn.execute("INSERT INTO jobs (name, first_seen) VALUES ('welcome', ?)", (FIRST_SEEN,))
            conn.execute(
                "INSERT INTO lists (name, created_at) VALUES ('newsletter', ?)", (FIRST_SEEN,)
            )
            conn.executemany(
                "INSERT INTO recipients (list_id, email, fields, doi_confirmed_at, created_at, "
                "updated_at) VALUES (1, ?, ?, ?, ?, ?)",
                [
                    (
                        f"r{i:04d}@example.com",
                        json.dumps({"first_name": f"R{i}"}),
                        f"2026-06-01T00:00:{i % 60:02d}.{i:06d}+00:00",
                        FIRST_SEEN,
                        FIRST_SEEN,
                    )
                    for i in range(DISPATCH_RECIPIENTS)
                ],
            )
    finally:
        conn.close()


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpTestServer]:
    with SmtpTestServer() as server:
        yield server


@pytest.fixture(scope="module")
def dispatch_base(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpTestServer) -> Path:
    """A store with the schema (made by the CLI itself) and DISPATCH_RECIPIENTS due sends."""
    root = tmp_path_factory.mktemp("dispatch-base")
    (root / "inbox").mkdir()
    _mailing(root / "mailings")
    config = _config(root, root / "inbox", smtp)
    # A real run with nobody to send to creates the schema (a dry run leaves no store).
    done = run_cli(config, "--json", "dispatch", "welcome")
    assert done.returncode == EXIT_OK, done.stderr
    conn = sqlite3.connect(root / "store.db")
    conn.execute("DELETE FROM jobs")
    conn.execute("DELETE FROM runs")
    conn.commit()
    conn.close()
    _seed_dispatch(root / "store.db")
    return root / "store.db"


def _received(smtp: SmtpTestServer) -> Counter[str]:
    return Counter(rcpt for message in smtp.messages for rcpt in message.rcpt_tos)


def _sends(db: Path) -> dict[str, str]:
    return dict(query(db, "SELECT email, state FROM sends WHERE job = 'welcome'"))


def _dispatch_trial(
    base_store: Path, smtp: SmtpTestServer, workdir: Path, at_bytes: int
) -> tuple[Outcome, dict[str, Any]]:
    _copy_store(base_store, workdir)
    _mailing(workdir / "mailings")
    (workdir / "inbox").mkdir()
    config = _config(workdir, workdir / "inbox", smtp)
    db = workdir / "store.db"
    smtp.clear()
    kill = kill_at_io(start_cli(config, "--json", "dispatch", "welcome"), at_bytes)

    assert integrity(db) == "ok"
    first = _received(smtp)
    assert max(first.values(), default=0) <= 1, "a recipient got the mailing twice"
    # Every send recorded as sent really reached the server (sent is recorded after the reply).
    sent = {email for email, state in _sends(db).items() if state == "sent"}
    assert sent <= set(first), sorted(sent - set(first))[:3]
    status = _last_run(config, "welcome", 0)
    if kill.killed:
        assert status in ("interrupted", None, "succeeded"), status

    rerun = run_cli(config, "--json", "dispatch", "welcome")
    assert rerun.returncode == EXIT_OK, rerun.stderr
    total = _received(smtp)
    sends = _sends(db)
    # Converged: every recipient was sent the mailing exactly once, or — the one send in
    # flight when the process died — is reported unknown and never repeated.
    assert max(total.values()) == 1, "a recipient got the mailing twice across the crash"
    unknown = {email for email, state in sends.items() if state == "unknown"}
    assert len(unknown) <= 1, unknown
    assert set(total) | unknown == {f"r{i:04d}@example.com" for i in range(DISPATCH_RECIPIENTS)}
    assert {state for email, state in sends.items() if email not in unknown} == {"sent"}
    state = "after" if len(first) == DISPATCH_RECIPIENTS else "before" if not first else "partial"
    return Outcome(kill, state, status), {"unknown": len(unknown), "sent_before_kill": len(first)}


def test_sigkill_during_a_dispatch(
    dispatch_base: Path, smtp: SmtpTestServer, tmp_path: Path
) -> None:
    # Reference runs give the I/O of an uninterrupted dispatch, and how much of it start-up
    # takes (up to the first message): start-up is most of a short dispatch's I/O, so one
    # trial in five aims there and the rest at the sending. The first reference run also
    # pays for cold caches; the second is kept, as the trials run warm.
    for attempt in range(2):
        ref = tmp_path / f"ref{attempt}"
        _copy_store(dispatch_base, ref)
        _mailing(ref / "mailings")
        (ref / "inbox").mkdir()
        smtp.clear()
        config = _config(ref, ref / "inbox", smtp)
        proc = start_cli(config, "--json", "dispatch", "welcome")
        total, first_message = io_of_run(proc, mark=lambda: bool(smtp.messages))
        expected = Counter(f"r{i:04d}@example.com" for i in range(DISPATCH_RECIPIENTS))
        assert _received(smtp) == expected
    assert first_message is not None
    start_up = TRIALS // 5
    points = [
        *(int(share * first_message) for share in seeded_points(SEED + 2, start_up, 0.2, 1.0)),
        *(
            int(first_message + share * (total - first_message))
            for share in seeded_points(SEED + 3, TRIALS - start_up, 0.0, 0.98)
        ),
    ]

    # Sequential: the trials share the SMTP server, whose message log each one reads.
    outcomes, details = [], []
    for index, at_bytes in enumerate(points):
        outcome, detail = _dispatch_trial(dispatch_base, smtp, tmp_path / f"t{index}", at_bytes)
        outcomes.append(outcome)
        details.append(detail)
    _report(f"dispatch to {DISPATCH_RECIPIENTS} recipients", outcomes)
    print("unknown sends after kills:", sum(d["unknown"] for d in details))
    assert sum(o.kill.killed for o in outcomes) >= MIN_KILLED, _report("killed", outcomes)


# --------------------------------------------------------------------------- leftovers


def _wait_for_staging(folder: Path, proc: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if folder.exists() and any(p.is_file() and p.stat().st_size > 0 for p in folder.rglob("*")):
            return
        time.sleep(0.005)
    raise AssertionError("the run never staged a file")


def test_a_rerun_removes_the_staging_file_a_killed_run_left(base: Base, tmp_path: Path) -> None:
    _copy_store(base.before, tmp_path)
    config = _config(tmp_path, base.inbox)
    staging = tmp_path / "var" / "staging"
    proc = start_cli(config, "--json", "import", "big-import")
    _wait_for_staging(staging, proc)
    proc.kill()
    proc.communicate(timeout=30)
    assert _files(staging), "the kill left no staging file: nothing to check"

    rerun = run_cli(config, "--json", "import", "big-import")
    assert rerun.returncode == EXIT_OK, rerun.stderr
    assert _files(staging) == []


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())
