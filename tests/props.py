"""How many examples a property test runs: its own budget, scaled up by tests/explore.sh."""

from __future__ import annotations

import os

SCALE = float(os.environ.get("CAMPAIGN_SYNC_PROPERTY_SCALE", "1"))


def examples(budget: int) -> int:
    """The test's budget in CI, times CAMPAIGN_SYNC_PROPERTY_SCALE when exploring."""
    return max(1, round(budget * SCALE))
