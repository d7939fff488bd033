"""A second process for the PostgreSQL store tests (another cron job, or another host's).

    python tests/pgchild.py migrate URL SCHEMA   # prints the version reached
    python tests/pgchild.py hold URL SCHEMA JOB  # takes the job lock, prints "held", waits
    python tests/pgchild.py try URL SCHEMA JOB   # exit 0 if the lock was free, else its code

Errors of campaign-sync print as one line on stderr and exit with their code, as the CLI does.
"""

from __future__ import annotations

import sys
from pathlib import Path

from campaign_sync.errors import CampaignSyncError


def _store_package() -> None:
    """Until campaign_sync/store/ becomes a package (the layout change gives it its
    __init__), let campaign_sync.store.postgres import from beside store.py. A no-op after."""
    import campaign_sync.store as store

    if not hasattr(store, "__path__"):
        store.__path__ = [str(Path(store.__file__).with_suffix(""))]  # type: ignore[attr-defined]


_store_package()

from campaign_sync.store.postgres import connection, locks, schema  # noqa: E402

CHILD = __file__


def main(action: str, url: str, name: str, *rest: str) -> int:
    conn = connection.connect(url, name)
    if action == "migrate":
        print(schema.migrate(conn, url, name), flush=True)
    elif action == "hold":
        with locks.job_lock(conn, name, rest[0]):
            print("held", flush=True)
            sys.stdin.read()  # until the test closes our stdin, or kills us
    elif action == "try":
        with locks.job_lock(conn, name, rest[0]):
            pass
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(*sys.argv[1:]))
    except CampaignSyncError as exc:
        print(exc, file=sys.stderr)
        sys.exit(exc.exit_code)
