"""`campaign-sync sends`: a doi-dispatch job's sends, and settling one of unknown outcome.

A send is `unknown` when its run ended during the SMTP transaction: nobody knows whether the
message went out, so dispatch never repeats it on its own (see campaign_sync.dispatch). The
operator looks the Message-ID up in the relay's log and settles it here:

* delivered: it becomes `sent` (what dispatch would have recorded), never sent again;
* not delivered: it becomes `deferred`, which the next dispatch claims and sends, as it
  does any deferred send.

Each settlement is recorded as a run of its own, under the job name ``JOB:settle`` (a name
no configured job can have: job names have no colon) with the type ``sends-settle``. So
`history` shows it, while the job's own runs, which `list-jobs`, `check` and the metrics
read for its state and last run, stay what dispatch made them.
"""

from __future__ import annotations

from typing import Any

from ..config.model import Config, JobConfig
from ..errors import UsageError
from ..store.base import Store

SETTLE_TYPE = "sends-settle"


def dispatch_job(config: Config, name: str) -> JobConfig:
    """The doi-dispatch job `name`; ConfigError for an unknown job, UsageError for a job
    of another type (both exit 2)."""
    job = config.job(name)
    if job.type != "doi-dispatch":
        raise UsageError(f"'{name}' is a {job.type} job; `sends` takes a doi-dispatch job")
    return job


def job_sends(store: Store | None, job: JobConfig, state: str | None) -> list[dict[str, Any]]:
    """The job's sends (of `state`, if given), oldest first; none before the store exists."""
    if store is None:
        return []
    return list(store.sql("sends").job_sends(store, job.name, state))


def settle(store: Store | None, job: JobConfig, address: str, *, delivered: bool) -> dict[str, Any]:
    """Settle the job's `unknown` send to `address` (normalised) and record it as a run.
    UsageError (exit 2), nothing changed, when there is no such send or it is not unknown."""
    state = "sent" if delivered else "deferred"
    how = "delivered" if delivered else "not delivered"
    outcome = "it stays sent" if delivered else "the next dispatch sends it"
    message = f"{address}: settled as {how} by an operator; {outcome}"
    record = {
        "job": f"{job.name}:settle",
        "type": SETTLE_TYPE,
        "counts": {"delivered": int(delivered), "not_delivered": int(not delivered)},
        "message": message,
    }
    before, run_id = (None, None)
    if store is not None:
        before, run_id = store.sql("sends").settle_unknown(
            store, job.name, address, state, f"settled as {how} by an operator", record
        )
    if before is None:
        raise UsageError(f"job '{job.name}' has no send to {address}; nothing to settle")
    if before != "unknown":
        raise UsageError(
            f"the send of '{job.name}' to {address} is {before}, not unknown; only a send "
            "of unknown outcome can be settled"
        )
    return {
        "job": job.name,
        "email": address,
        "settled": "delivered" if delivered else "not-delivered",
        "state": state,
        "run_id": run_id,
        "message": message,
    }
