"""A second process for the PostgreSQL store tests (another cron job, or another host's).

    python tests/pgchild.py migrate URL SCHEMA   # prints the version reached
    python tests/pgchild.py hold URL SCHEMA JOB  # takes the job lock, prints "held", waits
    python tests/pgchild.py try URL SCHEMA JOB   # exit 0 if the lock was free, else its code

Errors of campaign-sync print as one line on stderr and exit with their code, as the CLI does.
"""

from __future__ import annotations

import sys

from campaign_sync.errors import CampaignSyncError
from campaign_sync.store.postgres import connection, locks, schema

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
