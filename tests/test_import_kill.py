"""One transaction per run: kill -9 in the middle of a big import leaves the store as it was,
and the rerun imports the whole file."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from faults import io_bytes, io_of_run

ROOT = Path(__file__).resolve().parent.parent
ROWS = 150_000

CONFIG = """\
store: store.db
work_dir: var
timezone: UTC
jobs:
  rec: {type: recipient-import, list: news, mode: replace, max_removals: 100%}
"""

CHILD = """\
import sys
sys.path.insert(0, {root!r})
from pathlib import Path
from campaign_sync import config
from campaign_sync.ops import runner
result = runner.run_job(
    config.load({config!r}), "rec", "import", runner.RunOptions(file=Path({file!r}))
)
print(result.status, result.counts, result.error)
"""


def write_file(path: Path, rows: int, *, tag: str) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.write("email,first_name,city\n")
        for n in range(rows):
            out.write(f"user{n}@example.com,{tag}{n},City {n % 97}\n")


def start(root: Path, file: Path) -> subprocess.Popen[str]:
    script = CHILD.format(root=str(ROOT), config=str(root / "c.yaml"), file=str(file))
    return subprocess.Popen(
        [sys.executable, "-c", script], cwd=root, stdout=subprocess.PIPE, text=True
    )


def snapshot(store: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(store) as conn:
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            for table in ("lists", "recipients", "blocklist", "unsubscribers", "bounces")
        }


def runs(store: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(store) as conn:
        return conn.execute("SELECT id, status FROM runs ORDER BY id").fetchall()


def recorded_runs(store: Path) -> list[tuple[Any, ...]]:
    """runs(), while the child may not have made the store yet (and without making it)."""
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT id, status FROM runs ORDER BY id").fetchall()
    except sqlite3.OperationalError:
        return []


@pytest.fixture(scope="module")
def clean_run_io(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, int]:
    """The I/O (bytes read and written) of an uninterrupted import of the big file: in all,
    and up to the moment its run was recorded."""
    root = tmp_path_factory.mktemp("reference")
    (root / "c.yaml").write_text(CONFIG)
    write_file(root / "big.csv", ROWS, tag="New")
    total, recorded = io_of_run(
        start(root, root / "big.csv"), mark=lambda: bool(recorded_runs(root / "store.db"))
    )
    assert recorded is not None
    return total, recorded


# Kill points as shares of a clean run's I/O after its run is recorded: a share of its length
# in seconds would move with the machine's load; the bytes it reads and writes do not.
@pytest.mark.parametrize("share", [0.0, 0.3, 0.6])
def test_kill_9_mid_import_leaves_the_store_unchanged_and_a_rerun_converges(
    tmp_path: Path, share: float, clean_run_io: tuple[int, int]
) -> None:
    total, recorded = clean_run_io
    (tmp_path / "c.yaml").write_text(CONFIG)
    first, big = tmp_path / "first.csv", tmp_path / "big.csv"
    write_file(first, 1000, tag="Old")
    write_file(big, ROWS, tag="New")
    done = start(tmp_path, first)
    assert done.communicate(timeout=60)[0].startswith("succeeded")
    before = snapshot(tmp_path / "store.db")

    child = start(tmp_path, big)
    # Wait until the run is recorded (the import has begun) and its I/O reaches the share.
    at_bytes = recorded + share * (total - recorded)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        if len(runs(tmp_path / "store.db")) == 2 and (io_bytes(child.pid) or 0) >= at_bytes:
            break
        time.sleep(0.001)
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    assert runs(tmp_path / "store.db") == [(1, "succeeded"), (2, "running")], "killed too late"
    assert snapshot(tmp_path / "store.db") == before

    rerun = start(tmp_path, big)
    output = rerun.communicate(timeout=300)[0]
    assert output.startswith("succeeded"), output
    assert runs(tmp_path / "store.db") == [(1, "succeeded"), (2, "interrupted"), (3, "succeeded")]
    with sqlite3.connect(tmp_path / "store.db") as conn:
        assert conn.execute("SELECT status, count(*) FROM recipients GROUP BY 1").fetchall() == [
            ("active", ROWS)
        ]
        assert conn.execute(
            "SELECT fields FROM recipients WHERE email = 'user999@example.com'"
        ).fetchall() == [('{"first_name":"New999","city":"City 29"}',)]
        counts = conn.execute("SELECT counts FROM runs WHERE id = 3").fetchone()[0]
    assert '"inserted": 149000' in counts and '"updated": 1000' in counts
