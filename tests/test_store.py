"""The store: opening a new one from many processes at once, as simultaneous cron jobs do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

OPEN = """
import sys, time
from campaign_sync import store
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # start together
conn = store.connect(sys.argv[1])
print(conn.execute("PRAGMA journal_mode").fetchone()[0], store.SCHEMA_VERSION)
"""


def test_many_processes_creating_one_store_at_once_all_succeed(tmp_path: Path) -> None:
    import time

    db = tmp_path / "store.db"
    for attempt in range(3):
        db_path = str(db.with_name(f"store{attempt}.db"))
        start = str(time.time() + 1.0)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", OPEN, db_path, start],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(8)
        ]
        results = [proc.communicate(timeout=60) for proc in procs]
        assert [proc.returncode for proc in procs] == [0] * 8, [err for _, err in results]
        assert {out.split()[0] for out, _ in results} == {"wal"}
