"""Recipient statuses in PostgreSQL's SQL, for exports and the `lists` command (rules:
statuses.py; the same results as store/sqlite/statuses.py for the same store content).

An export runs in a READ ONLY snapshot, where PostgreSQL allows no temporary tables, so the
address sets SQLite keeps in its temp database are sub-selects here, each built once into a
hash table by the server (a hashed SubPlan), and the blocked addresses and domains are array
constants (hashed too). Checks as expressions, not joins: the list is then read in the
primary key's order with each check a hash lookup per row, and no sort of the whole result
is needed (joins made the planner sort a million wide rows on disk; 4.5x slower). An active
export looks each row up once in the union of the never-active sets, as SQLite does. A bigger
work_mem for the snapshot keeps even large sets hashed (EXPORT_WORK_MEM).

Blocklist patterns are sorted as on SQLite (statuses.sort_patterns); the few that need the
Python matcher are tried, inside the same snapshot, on the list's addresses that could match,
and the addresses they block join the literal ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...config.model import BounceLimits
from ...core.addresses import Blocklist
from ...core.dates import latest_allowed
from ..statuses import (
    blocked_domains,
    candidate_ends,
    one_address_checks,
    sort_patterns,
    status_expression,
    unsubscription_wins,
)
from . import NOW_SQL

if TYPE_CHECKING:
    import psycopg

    Connection = psycopg.Connection[Any]
else:
    Connection = Any

# A stored address has exactly one @. (split_part: 0.15 s less per million rows than substr
# and strpos.)
DOMAIN_SQL = "split_part(r.email, '@', 2)"
# Memory for the server's hash tables of address sets (and its sorts) in an export's or a
# count's transaction: about 1.5 M addresses stay one in-memory hash table per check.
EXPORT_WORK_MEM = "64MB"


@dataclass
class Plan:
    """SQL over ``recipients AS r`` being built: psycopg named parameters and conditions.
    Parameters also work in COPY (psycopg binds them into the statement text there)."""

    params: dict[str, object] = field(default_factory=dict)
    conditions: list[str] = field(default_factory=list)
    # Sub-selects of addresses that are never active (unsubscribed, outbounced): an active
    # export looks each row up once in their union.
    inactive: list[str] = field(default_factory=list)

    def param(self, name: str, value: object) -> str:
        self.params[name] = value
        return f"%({name})s"

    def in_values(self, name: str, values: set[str], key: str = "r.email") -> str:
        """The condition that `key` is one of `values` (an array constant)."""
        return f"{key} = ANY({self.param(name, sorted(values))}::text[])"


def prepare(conn: Connection) -> None:
    """Settings for the reads of one export or count, in its transaction only."""
    conn.execute(f"SET LOCAL work_mem = '{EXPORT_WORK_MEM}'")


def _over_limits(hard: str, soft: str) -> str:
    """SQL: a group of one address's bounces reaches a limit (the outbounced rule)."""
    return (
        f"count(*) FILTER (WHERE type = 'hard') >= {hard} "
        f"OR count(*) FILTER (WHERE type = 'soft') >= {soft}"
    )


def outbounced_sql(limits: BounceLimits) -> tuple[str, tuple[int, int]]:
    """A sub-select of the addresses at or over a bounce limit, with its parameters."""
    return (
        f"SELECT email FROM bounces GROUP BY email HAVING {_over_limits('%s', '%s')}",
        (limits.hard_limit, limits.soft_limit),
    )


def _outbounced(plan: Plan, limits: BounceLimits) -> str:
    hard = plan.param("hard", limits.hard_limit)
    soft = plan.param("soft", limits.soft_limit)
    return f"SELECT email FROM bounces GROUP BY email HAVING {_over_limits(hard, soft)}"


def address_checks(limits: BounceLimits) -> tuple[dict[str, str], dict[str, object]]:
    """The status checks (in status order) for one address's membership row ``r`` of list
    ``l``, with their parameters but for ``email`` (the address), ``latest`` (latest_allowed
    of now) and ``blocklisted`` (whether a pattern matches it: a pass over the pattern
    table, core.addresses). The rules of status_checks, each looked up by the address
    through an index instead of collected for a whole list."""
    named = "%({})s".format
    checks = one_address_checks(named, _over_limits(named("hard"), named("soft")))
    return checks, {"hard": limits.hard_limit, "soft": limits.soft_limit}


def now(conn: Connection) -> str:
    row = conn.execute(f"SELECT {NOW_SQL}").fetchone()
    assert row is not None
    return str(row[0])


def list_id(conn: Connection, name: str) -> int | None:
    """The id of list `name`; None if it was never imported into."""
    row = conn.execute("SELECT id FROM lists WHERE name = %s", (name,)).fetchone()
    return int(row[0]) if row else None


def list_names(conn: Connection) -> list[str]:
    """Every list the store knows."""
    return [str(row[0]) for row in conn.execute("SELECT name FROM lists")]


def count_statuses(conn: Connection, name: str, limits: BounceLimits) -> dict[str, int]:
    """Members of list `name` per status (removed ones left out); {} for an unknown list."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")  # one snapshot
    try:
        found = list_id(conn, name)
        if found is None:
            return {}
        prepare(conn)
        plan = Plan()
        plan.param("list_id", found)
        plan.param("list_name", name)
        status = status_expression(status_checks(conn, plan, limits))
        rows = conn.execute(
            f"SELECT {status} AS status, count(*) FROM recipients AS r "
            "WHERE r.list_id = %(list_id)s AND r.status <> 'removed' GROUP BY 1",
            plan.params,
        ).fetchall()
    finally:
        conn.execute("ROLLBACK")
    return {str(status): int(count) for status, count in rows}


def has_rows(conn: Connection, table: str) -> bool:
    row = conn.execute(f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone()
    return bool(row and row[0])


def status_checks(conn: Connection, plan: Plan, limits: BounceLimits) -> dict[str, str]:
    """SQL conditions for each non-active status, in order; a check on an empty table is
    left out. The plan must have the parameters ``list_id`` and ``list_name``."""
    unsubscribed = "r.status = 'unsubscribed'"
    if has_rows(conn, "unsubscribers"):
        # Same rule as the import's re-activation: a newer DOI confirmation wins.
        latest = plan.param("latest", latest_allowed(now(conn)))
        wins = unsubscription_wins("m.doi_confirmed_at", "u.unsubscribed_at", latest)
        select = (
            "SELECT DISTINCT u.email FROM unsubscribers AS u JOIN recipients AS m "
            "ON m.list_id = %(list_id)s AND m.email = u.email "
            f"WHERE u.list IN ('', %(list_name)s) AND {wins}"
        )
        plan.inactive.append(select)
        unsubscribed += f" OR r.email IN ({select})"
    checks = {"removed": "r.status = 'removed'", "unsubscribed": unsubscribed}
    patterns = [str(row[0]) for row in conn.execute("SELECT pattern FROM blocklist")]
    if patterns:
        checks["blocklisted"] = blocklist_sql(conn, plan, patterns, "cs_blocked")
    if has_rows(conn, "bounces"):
        outbounced = _outbounced(plan, limits)
        plan.inactive.append(outbounced)
        checks["outbounced"] = f"r.email IN ({outbounced})"
    return checks


def blocklist_sql(conn: Connection, plan: Plan, patterns: list[str], name: str) -> str:
    """An SQL condition on r.email, true exactly when one of `patterns` matches it: a join
    on blocked addresses and one on blocked domains."""
    found = sort_patterns(patterns)
    addresses = set(found.exact)
    domains = set(found.domains)
    if found.by_domain:
        listed = conn.execute(
            f"SELECT DISTINCT {DOMAIN_SQL} FROM recipients AS r WHERE r.list_id = %s",
            (plan.params["list_id"],),
        )
        domains.update(blocked_domains(found.by_domain, [str(d) for (d,) in listed]))
    if found.rest:
        addresses.update(_matched(conn, plan, found.rest))
    conditions = []
    if addresses:
        conditions.append(plan.in_values(f"{name}_addresses", addresses))
    if domains:
        conditions.append(plan.in_values(f"{name}_domains", domains, DOMAIN_SQL))
    return " OR ".join(conditions) or "false"  # e.g. only domain patterns no member's matches


def _matched(conn: Connection, plan: Plan, patterns: list[str]) -> set[str]:
    """The list's addresses that `patterns` match, by the Python matcher: only those with a
    literal head or tail of one of them are read (all, if some pattern has neither)."""
    matcher = Blocklist(patterns)
    ends = candidate_ends(patterns)
    params: dict[str, object] = {"list_id": plan.params["list_id"]}
    picks = []
    if ends is not None:
        for kind, by_length in zip(("left", "right"), ends, strict=True):
            for length, values in sorted(by_length.items()):
                key = f"{kind}{length}"
                params[key] = sorted(values)
                picks.append(f"{kind}(email, {length}) = ANY(%({key})s::text[])")
    where = f" AND ({' OR '.join(picks)})" if picks else ""
    rows = conn.execute(f"SELECT email FROM recipients WHERE list_id = %(list_id)s{where}", params)
    return {str(email) for (email,) in rows if matcher.matches(email) is not None}
