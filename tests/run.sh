#!/usr/bin/env bash
# Install everything the test suite needs, then run it: ruff, mypy, the docs build, pytest.
# Developers and CI (.ci/run) use this same script. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests need from Debian: installed with apt when we are root, else named.
need() {  # need WHAT PACKAGE...
  local what=$1
  shift
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "tests/run.sh: the tests need $what: sudo apt-get install $*" >&2
    exit 1
  fi
}

# The SSH tests start a real OpenSSH sshd on loopback.
[ -x /usr/sbin/sshd ] || need "OpenSSH's sshd" openssh-server openssh-client
# The jump host tests put sshd in network namespaces of their own (iproute2's `ip netns`).
{ command -v ip || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ]; } >/dev/null || need "iproute2's ip" iproute2
# The systemd tests check generated timers with the real systemd-analyze.
command -v systemd-analyze >/dev/null || need systemd-analyze systemd
# The OpenPGP tests (tests/test_pgp.py) run the real GnuPG: gpg, gpg-agent and gpgconf.
{ command -v gpg && command -v gpgconf; } >/dev/null || need GnuPG gnupg
# The PostgreSQL tests need the server binaries (initdb, pg_ctl, postgres, psql).
python3 tests/pgserver.py bindir >/dev/null || need PostgreSQL postgresql

# The status page test (test_status_page.py) drives the distribution's headless Chromium.
[ -x /usr/bin/chromium ] || need Chromium chromium chromium-driver

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
