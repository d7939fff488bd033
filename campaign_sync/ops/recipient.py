"""`campaign-sync recipient ADDRESS`: everything the store holds about one address, and
whether it is mailed and exported now, and if not, why.

Read-only: the store is read in one snapshot (store/<kind>/recipient.py), no job lock is
taken and nothing is written, so it answers at once while a run holds the store. Each part
is an index lookup by the address (store/recipient.py); the blocklist is one pass over its
(small) pattern table. A membership's status is the statuses rules' (the one exports and
`lists` use); whether a dispatch job's next run mails the address is dispatch's own reading
(dispatch.why_not_due) of the same data.
"""

from __future__ import annotations

from typing import Any

from ..config.model import Config
from ..core.addresses import check, compile_pattern, normalise
from ..core.dates import latest_allowed
from ..dispatch import why_not_due
from ..errors import UsageError
from ..store.base import Store


def address_argument(raw: str) -> str:
    """The stored form of an address given on the command line; UsageError (exit 2) with
    the reason when it is not an address."""
    address = normalise(raw)
    problem = check(address)
    if problem:
        raise UsageError(
            f"'{raw.strip()}' is not an address: {problem}; give one like anna@example.com"
        )
    return address


def lookup(config: Config, store: Store | None, address: str) -> dict[str, Any]:
    """The recipient document for `address` (normalised, see address_argument)."""
    if store is None:  # no run has created the store: it holds nothing about anyone
        return _document(config, address, [], [], [], [], [], {})
    sql = store.sql("recipient")
    with sql.snapshot(store):
        patterns = [
            {"pattern": pattern, "reason": reason}
            for pattern, reason in sql.patterns(store)
            if compile_pattern(pattern).matches(address)
        ]
        params = {
            "email": address,
            "latest": latest_allowed(store.now()),
            "blocklisted": bool(patterns),
        }
        found = {
            name: sql.read(store, name, config.bounces, params)
            for name in ("memberships", "unsubscriptions", "bounces", "sends")
        }
        sends_sql = store.sql("sends")
        cutoffs = {
            name: sends_sql.cutoff(store, name)
            for name, job in config.jobs.items()
            if job.type == "doi-dispatch"
        }
    return _document(
        config,
        address,
        found["memberships"],
        found["unsubscriptions"],
        found["bounces"],
        patterns,
        found["sends"],
        cutoffs,
    )


def _document(
    config: Config,
    address: str,
    memberships: list[dict[str, Any]],
    unsubscriptions: list[dict[str, Any]],
    bounces: list[dict[str, Any]],
    patterns: list[dict[str, str]],
    sends: list[dict[str, Any]],
    cutoffs: dict[str, str | None],
) -> dict[str, Any]:
    unsubscribed = [
        {"list": row["list"] or None, **{k: row[k] for k in ("unsubscribed_at", "reason")}}
        for row in unsubscriptions
    ]
    bounce_counts = {
        kind: sum(1 for row in bounces if row["type"] == kind) for kind in ("hard", "soft")
    }
    facts = _Facts(config, address, unsubscribed, bounce_counts, patterns, sends, cutoffs)
    return {
        "address": address,
        "lists": [facts.membership(row) for row in memberships],
        "unsubscriptions": unsubscribed,
        "bounces": bounces,
        "bounce_counts": bounce_counts,
        "blocklist": patterns,
        "sends": sends,
    }


class _Facts:
    """What is known about the address besides one membership, to explain each."""

    def __init__(
        self,
        config: Config,
        address: str,
        unsubscribed: list[dict[str, Any]],
        bounce_counts: dict[str, int],
        patterns: list[dict[str, str]],
        sends: list[dict[str, Any]],
        cutoffs: dict[str, str | None],
    ) -> None:
        self.config = config
        self.address = address
        self.unsubscribed = unsubscribed
        self.bounce_counts = bounce_counts
        self.patterns = patterns
        self.sends = {send["job"]: send for send in sends}
        self.cutoffs = cutoffs

    def membership(self, row: dict[str, Any]) -> dict[str, Any]:
        name, status = row["name"], row["effective"]
        why = None if status == "active" else self.why_inactive(status, name, row["status"])
        return {
            "list": name,
            "member_status": row["status"],
            "status": status,
            "active": status == "active",
            "why_not": why,
            "doi_confirmed_at": row["doi_confirmed_at"],
            "fields": row["fields"],
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
            "dispatch": [
                self.dispatch(job_name, row, why)
                for job_name, job in self.config.jobs.items()
                if job.type == "doi-dispatch" and job.list == name
            ],
        }

    def dispatch(self, job: str, row: dict[str, Any], inactive: str | None) -> dict[str, Any]:
        why = inactive or why_not_due(
            self.address, row["doi_confirmed_at"], self.cutoffs.get(job), self.sends.get(job)
        )
        return {"job": job, "next_run_sends": why is None, "why_not": why}

    def why_inactive(self, status: str, list_name: str, stored: str) -> str:
        if status == "removed":
            return "removed from the list by a replace import"
        if status == "unsubscribed":
            return self._why_unsubscribed(list_name, stored)
        if status == "blocklisted":
            shown = ", ".join(f"'{p['pattern']}'" for p in self.patterns)
            return f"blocklisted by {shown}"
        limits = self.config.bounces
        return (
            f"outbounced: {self.bounce_counts['hard']} hard, {self.bounce_counts['soft']} soft "
            f"bounces (limits {limits.hard_limit} hard, {limits.soft_limit} soft)"
        )

    def _why_unsubscribed(self, list_name: str, stored: str) -> str:
        reasons = ["marked unsubscribed in the list"] if stored == "unsubscribed" else []
        applying = [u for u in self.unsubscribed if u["list"] in (None, list_name)]
        if applying:
            latest = max(applying, key=lambda u: u["unsubscribed_at"])
            scope = "all lists" if latest["list"] is None else "this list"
            on_list = f"on the unsubscriber list ({scope}, {latest['unsubscribed_at']})"
            if stored != "unsubscribed":  # then only the list holds it: no newer DOI lifts it
                on_list += " with no newer double opt-in confirmation"
            reasons.append(on_list)
        return "; ".join(reasons)
