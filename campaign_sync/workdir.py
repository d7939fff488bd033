"""The work directory: private staging files, rejects files and locks live here.

Everything created here is readable by the owner only: partner data must not leak to
other users of the machine through a world-readable temp file.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import tempfile
from pathlib import Path


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def staging_file(work_dir: Path, job: str, suffix: str = "") -> Path:
    """A new, empty, 0600 file under a name we choose, never the final name of anything."""
    folder = _private_dir(work_dir / "staging")
    # ".part" before the real suffix: readers still see ".csv.gz" and gunzip it.
    fd, name = tempfile.mkstemp(prefix=f"{job}-", suffix=f".part{suffix}", dir=folder)
    os.close(fd)
    return Path(name)


def rejects_file(work_dir: Path, job: str, run_id: int | None) -> Path:
    """A new 0600 file for a run's rejected rows; named by job, time and run."""
    folder = _private_dir(work_dir / "rejects")
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    tag = f"run{run_id}" if run_id else "dry-run"
    fd, name = tempfile.mkstemp(prefix=f"{job}-{stamp}-{tag}-", suffix=".csv", dir=folder)
    os.close(fd)
    return Path(name)


def remove_quietly(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
