"""Logging to stderr (and optionally a log file): never to stdout, which JSON owns."""

from __future__ import annotations

import logging
from pathlib import Path

_FILE_FORMAT = "%(asctime)s %(process)d %(levelname)s %(message)s"


def setup_logging(verbose: int, quiet: bool, log_file: Path | None) -> None:
    """-q: errors only; default: warnings; -v: info; -vv: debug."""
    level = (
        logging.ERROR
        if quiet
        else (logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG)
    )
    # paramiko logs its own internals (tracebacks of a failed handshake) with no handler of
    # its own, so Python's last-resort handler would print them; our transfer code reports
    # what went wrong in one line instead.
    logging.getLogger("paramiko").addHandler(logging.NullHandler())
    root = logging.getLogger("campaign_sync")
    root.setLevel(min(level, logging.INFO) if log_file else level)
    if not any(getattr(h, "_campaign_sync_stderr", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("campaign-sync: %(levelname)s: %(message)s"))
        handler._campaign_sync_stderr = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    for existing in root.handlers:
        if getattr(existing, "_campaign_sync_stderr", False):
            existing.setLevel(level)
    if log_file and not any(getattr(h, "_campaign_sync_file", False) for h in root.handlers):
        from campaign_sync.core.private import open_private_log

        # Logs name addresses and files: the file and any folder made for it are private,
        # whatever the umask, even when the log is the first thing made in a new work_dir.
        file_handler = logging.StreamHandler(open_private_log(log_file))
        file_handler.setFormatter(logging.Formatter(_FILE_FORMAT))
        file_handler.setLevel(logging.INFO)
        file_handler._campaign_sync_file = True  # type: ignore[attr-defined]
        root.addHandler(file_handler)
