#!/usr/bin/env bash
# Install everything the test suite needs, then run it: ruff, mypy, the docs build, pytest.
# Developers and CI (.ci/run) use this same script. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# The SSH tests start a real OpenSSH sshd on loopback.
if [ ! -x /usr/sbin/sshd ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client >/dev/null
  else
    echo "tests/run.sh: the tests need OpenSSH's sshd: sudo apt-get install openssh-server" >&2
    exit 1
  fi
fi

# The jump host tests put sshd in network namespaces of their own (iproute2's `ip netns`).
if ! command -v ip >/dev/null && [ ! -x /usr/sbin/ip ] && [ ! -x /sbin/ip ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
  else
    echo "tests/run.sh: the tests need iproute2's ip: sudo apt-get install iproute2" >&2
    exit 1
  fi
fi

# The systemd tests check generated timers with the real systemd-analyze.
if ! command -v systemd-analyze >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
  else
    echo "tests/run.sh: the tests need systemd-analyze: sudo apt-get install systemd" >&2
    exit 1
  fi
fi

# The PostgreSQL tests need the server binaries (initdb, pg_ctl, postgres, psql).
if ! python3 tests/pgserver.py bindir >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "tests/run.sh: the tests need PostgreSQL: sudo apt-get install postgresql" >&2
    exit 1
  fi
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test,docs]'
python3 -m ruff check .
python3 -m mypy campaign_sync cli
# The docs site must build without a warning: a broken link or anchor fails here. Its log is
# shown only then (mkdocs --quiet would also hide the warnings, and strict mode then passes).
docs_site=$(mktemp -d)
docs_log=$(python3 -m mkdocs build --strict --site-dir "$docs_site" 2>&1) || {
  printf '%s\n' "$docs_log" >&2
  exit 1
}
rm -rf "$docs_site"

# A throwaway PostgreSQL for the suite: it exports CAMPAIGN_SYNC_TEST_PG (the superuser's URL),
# CAMPAIGN_SYNC_TEST_PG_DIR (its folder) and PGPASSFILE. Stopped and removed on any exit,
# also after a failure or ctrl-c.
pg_exports=$(python3 tests/pgserver.py start)
eval "$pg_exports"
stop_pg() { python3 tests/pgserver.py stop "$CAMPAIGN_SYNC_TEST_PG_DIR" || true; }
trap stop_pg EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

python3 -m pytest "$@"
