"""Merging a parsed CSV file into the store, one module per job type; common.py holds
what they share. The caller owns the transaction (see common.py)."""

from __future__ import annotations

from collections import Counter

from ..csvio.read import CsvRows
from ..errors import InputError
from .blocklist import merge_blocklist
from .bounces import merge_bounces
from .common import MergeContext, Rejects, erased_check
from .recipients import merge_recipients
from .unsubscribers import merge_unsubscribers

MERGERS = {
    "recipient-import": merge_recipients,
    "blocklist-import": merge_blocklist,
    "unsubscriber-import": merge_unsubscribers,
    "bounce-import": merge_bounces,
}


def merge(ctx: MergeContext, src: CsvRows, name: str) -> tuple[Counter[str], Rejects]:
    """Merge a file into the store according to the job's type."""
    if ctx.job.type not in MERGERS:
        raise InputError(f"{ctx.job.type} jobs cannot import files")
    # Read inside the run's write transaction: an erasure committed before it is seen.
    ctx.erased = erased_check(ctx.store)
    return MERGERS[ctx.job.type](ctx, src, name)
