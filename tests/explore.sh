#!/usr/bin/env bash
# Explore with the property tests: random seeds, a local example database, and ten times the
# examples CI runs (CAMPAIGN_SYNC_PROPERTY_SCALE overrides the factor). CI never runs this;
# a failure found here becomes an explicit @example in the test before it is fixed.
# Extra arguments go to pytest, e.g. bash tests/explore.sh tests/test_csvread.py
set -euo pipefail
cd "$(dirname "$0")/.."
export CAMPAIGN_SYNC_HYPOTHESIS_PROFILE=explore
export CAMPAIGN_SYNC_PROPERTY_SCALE="${CAMPAIGN_SYNC_PROPERTY_SCALE:-10}"
if [ "$#" -eq 0 ]; then
  # every test file that holds a property test
  set -- $(grep -l "@given" tests/test_*.py)
fi
python3 -m pytest -q -p no:cacheprovider "$@"
