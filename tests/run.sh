#!/usr/bin/env bash
# Install everything the test suite needs, then run it: ruff, then pytest.
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

python3 -m pip install -q --disable-pip-version-check -e '.[test]'
python3 -m ruff check .
python3 -m mypy campaign_sync cli
python3 -m pytest "$@"
