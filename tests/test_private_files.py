"""Everything campaign-sync writes for itself is owner-only (folders 0700, files 0600) whatever
the umask and whichever is made first; a local server's folders follow their parent.

Each case runs the installed console script with umask 022 (cron's usual one, which gives
0755 folders and 0644 files), in a workspace where none of the folders exists yet, then walks
every path it made.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import BASE_CONFIG, SAMPLE
from smtp_server import SilentServer

UMASK = 0o022
WITH_A_BAD_ROW = SAMPLE + "not-an-address;A;B;\n"  # 1 of 4 rejected: a rejects file
DAY = "2026-11-01"  # the day whose file the imports take (--date)

# Where the log file and the store go: inside work_dir (`var`) or in a folder of their own.
LOG_FILES = {"log in work_dir": "var/log/campaign-sync.log", "log outside": "logs/cs.log"}
STORES = {"store in work_dir": "var/db/store.db", "store outside": "data/store.db"}


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed command, as cron runs it: umask 022."""
    return subprocess.run(
        ["campaign-sync", "--config", str(root / "campaign-sync.yaml"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        umask=UMASK,
    )


def config(root: Path, store: str, log_file: str | None, extra: str = "") -> None:
    """The tests' usual config with this store and log file; `extra` goes after its jobs."""
    log_line = f"\nlog_file: {log_file}" if log_file else ""
    text = BASE_CONFIG.format(extra=extra).replace("store: store.db", f"store: {store}{log_line}")
    (root / "campaign-sync.yaml").write_text(text, encoding="utf-8")


def workspace(tmp_path: Path) -> Path:
    """A folder holding only the config's own things: the config and the local server."""
    root = tmp_path / "site"
    (root / "inbox" / "import").mkdir(parents=True)
    (root / "inbox" / "import" / "newsletter_20261101.csv").write_text(WITH_A_BAD_ROW)
    return root


def made_by_campaign_sync(root: Path) -> dict[str, int]:
    """Every path below `root` but the test's own (config, local server): its mode."""
    found = {}
    for folder, names, files in os.walk(root):
        here = Path(folder)
        if here == root / "inbox" or root / "inbox" in here.parents:
            continue
        for name in names + files:
            path = here / name
            if path in (root / "inbox", root / "campaign-sync.yaml"):
                continue
            found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def not_private(modes: dict[str, int], root: Path) -> dict[str, str]:
    """The paths whose mode is not owner-only (0700 for a folder, 0600 for a file)."""
    return {
        name: oct(mode)
        for name, mode in modes.items()
        if mode != (0o700 if (root / name).is_dir() else 0o600)
    }


# Each step makes one of the three things first (log file, work_dir, store): the steps in
# every order, so each of them is made first, second and third by some case.
def step_log(root: Path, store: str, log: str) -> None:
    config(root, store, log)  # the log is set up by any command: a status one makes nothing else
    assert cli(root, "list-jobs").returncode == 0


def step_work_dir(root: Path, store: str, log: str) -> None:
    # A dry run before any run uses a store in memory: work_dir (locks, staging) only.
    done = cli(root, "import", "newsletter-import", "--date", DAY, "--dry-run")
    assert done.returncode == 0, done.stderr


def step_store(root: Path, store: str, log: str) -> None:
    done = cli(root, "--json", "import", "newsletter-import", "--date", DAY)
    assert done.returncode == 0, done.stderr
    assert '"rejects_file": "' in done.stdout  # a rejects file was written too


STEPS: dict[str, Callable[[Path, str, str], None]] = {
    "log": step_log,
    "work_dir": step_work_dir,
    "store": step_store,
}
ORDERS = list(itertools.permutations(STEPS))


@pytest.mark.parametrize("order", ORDERS, ids="-".join)
@pytest.mark.parametrize("log_where", LOG_FILES)
@pytest.mark.parametrize("store_where", STORES)
def test_every_file_and_folder_is_owner_only_whatever_is_made_first(
    tmp_path: Path, order: tuple[str, ...], log_where: str, store_where: str
) -> None:
    root = workspace(tmp_path)
    store, log = STORES[store_where], LOG_FILES[log_where]
    config(root, store, None)  # no log file until its step
    for name in order:
        STEPS[name](root, store, log)
    # And what an export writes for itself (its staging file).
    assert cli(root, "export", "newsletter-export").returncode == 0

    modes = made_by_campaign_sync(root)

    assert not_private(modes, root) == {}
    expected = {"var", "var/locks", "var/staging", "var/rejects", store, log}
    assert expected <= set(modes), sorted(modes)
    assert any(name.startswith("var/rejects/") for name in modes)
    assert any(name.startswith("var/locks/") for name in modes)


def test_the_stores_wal_and_shm_are_owner_only(tmp_path: Path) -> None:
    """-wal and -shm exist while the store is open: held open by a dispatch that waits for a
    mail server that never answers, they are seen as that run made them."""
    root = workspace(tmp_path)
    (root / "mailings").mkdir()
    (root / "mailings" / "welcome.eml").write_text(
        "From: news@example.com\nSubject: Welcome\nDate: Mon, 02 Nov 2026 10:00:00 +0100\n"
        "Message-ID: <w@example.com>\n\nHello\n",
        encoding="utf-8",
    )
    with SilentServer() as server:
        extra = (
            "  welcome: {type: doi-dispatch, list: newsletter, mailings: mailings}\n"
            f"smtp: {{host: {server.host}, port: {server.port}, timeout: 60}}\n"
        )
        config(root, "data/store.db", None, extra)
        assert cli(root, "dispatch", "welcome").returncode == 0  # sets the cut-off
        assert cli(root, "import", "newsletter-import", "--date", DAY).returncode == 0
        store = root / "data" / "store.db"
        with sqlite3.connect(store) as conn:  # anna confirmed after the job's cut-off
            conn.execute("UPDATE jobs SET first_seen = '2020-01-01T00:00:00.000000+00:00'")
        conn.close()
        assert not Path(f"{store}-wal").exists()  # the last connection removed them

        dispatch = subprocess.Popen(
            ["campaign-sync", "--config", str(root / "campaign-sync.yaml"), "dispatch", "welcome"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            umask=UMASK,
        )
        try:
            deadline = time.monotonic() + 60
            while server.connections == 0 and dispatch.poll() is None:
                assert time.monotonic() < deadline, "the dispatch never reached the mail server"
                time.sleep(0.05)
            # Join as a reader, so that the run's close leaves both files in place.
            reader = sqlite3.connect(store)
            reader.execute("SELECT count(*) FROM runs").fetchone()
            modes = {
                suffix: stat.S_IMODE(os.stat(f"{store}{suffix}").st_mode)
                for suffix in ("", "-wal", "-shm")
            }
        finally:
            server.stop()
            dispatch.wait(timeout=120)
    reader.close()
    assert modes == {"": 0o600, "-wal": 0o600, "-shm": 0o600}


def test_init_writes_owner_only_folders_and_files(tmp_path: Path) -> None:
    done = subprocess.run(
        ["campaign-sync", "init", str(tmp_path / "new" / "site")],
        capture_output=True,
        text=True,
        timeout=60,
        umask=UMASK,
    )
    assert done.returncode == 0, done.stderr
    modes = made_by_campaign_sync(tmp_path)
    assert "new/site/campaign-sync.yaml" in modes and "new/site/inbox/archive" in modes
    assert not_private(modes, tmp_path) == {}


@pytest.mark.parametrize("inbox_mode", [0o700, 0o750, 0o2770, 0o755])
def test_a_local_servers_new_folders_take_their_parents_mode(
    tmp_path: Path, inbox_mode: int
) -> None:
    """The archive folder is the partner's side: as open as the inbox it is made in, no more."""
    root = workspace(tmp_path)
    config(root, "store.db", None)
    text = (root / "campaign-sync.yaml").read_text(encoding="utf-8")
    text = text.replace('.csv"}', '.csv", after: archive, archive_dir: /import/done}', 1)
    (root / "campaign-sync.yaml").write_text(text, encoding="utf-8")
    os.chmod(root / "inbox" / "import", inbox_mode)

    assert cli(root, "import", "newsletter-import", "--date", DAY).returncode == 0

    archive = root / "inbox" / "import" / "done"
    assert (archive / "newsletter_20261101.csv").exists()
    assert stat.S_IMODE(archive.stat().st_mode) == inbox_mode


def test_a_link_planted_at_the_log_file_is_never_written_through(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    (root / "logs").mkdir()
    (root / "logs" / "cs.log").symlink_to(tmp_path / "victim.log")
    config(root, "store.db", "logs/cs.log")

    done = cli(root, "list-jobs")

    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "campaign-sync: error: At 'log_file': cannot write the log "
        f"file {root}/logs/cs.log: it is a symbolic link, and the log is never written through "
        "one; set `log_file` to a file in a writable folder"
    ]
    assert not (tmp_path / "victim.log").exists()
