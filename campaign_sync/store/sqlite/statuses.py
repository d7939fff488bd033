"""Recipient statuses in SQLite's SQL, for exports and the `lists` command (rules: statuses.py).

The checks are conditions on ``recipients AS r``; what they need (address sets, blocklist
matchers) is set up once in the connection's temp database, which writes nothing to the store
and leaves a read snapshot as it is. A big export copies that setup into its child processes
(SqlPlan says what to copy).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field

from ... import store
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

__all__ = [
    "address_checks",
    "outbounced_sql",
    "count_statuses",
    "list_names",
    "SqlPlan",
    "status_checks",
]


def _over_limits(hard: str, soft: str) -> str:
    """SQL: a group of one address's bounces reaches a limit (the outbounced rule)."""
    return f"sum(type = 'hard') >= {hard} OR sum(type = 'soft') >= {soft}"


def outbounced_sql(limits: BounceLimits) -> tuple[str, tuple[int, int]]:
    """A sub-select of the addresses at or over a bounce limit, with its parameters
    (SQLite's placeholders)."""
    return (
        f"SELECT email FROM bounces GROUP BY email HAVING {_over_limits('?', '?')}",
        (limits.hard_limit, limits.soft_limit),
    )


def address_checks(limits: BounceLimits) -> tuple[dict[str, str], dict[str, object]]:
    """The status checks (in status order) for one address's membership row ``r`` of list
    ``l``, with their parameters but for ``email`` (the address), ``latest`` (latest_allowed
    of now) and ``blocklisted`` (whether a pattern matches it: a pass over the pattern
    table, core.addresses). The rules of status_checks, each looked up by the address
    through an index instead of collected for a whole list."""
    named = ":{}".format
    checks = one_address_checks(named, _over_limits(named("hard"), named("soft")))
    return checks, {"hard": limits.hard_limit, "soft": limits.soft_limit}


@dataclass
class SqlPlan:
    """SQL over ``recipients AS r`` being built: named parameters, conditions, and what the
    checks set up in the connection (temp tables, blocklist matcher functions), so that it
    can be copied into another connection or dropped."""

    params: dict[str, object] = field(default_factory=dict)
    conditions: list[str] = field(default_factory=list)
    temp_tables: list[str] = field(default_factory=list)
    matchers: dict[str, list[str]] = field(default_factory=dict)  # SQL function: patterns
    # Temp tables of addresses that are never active (unsubscribed, outbounced).
    inactive_sets: list[str] = field(default_factory=list)

    def param(self, name: str, value: object) -> str:
        self.params[name] = value
        return f":{name}"

    def drop(self, conn: sqlite3.Connection) -> None:
        """Drop the temp tables made for this plan."""
        for table in self.temp_tables:
            conn.execute(f"DROP TABLE IF EXISTS temp.{table}")


def list_names(conn: sqlite3.Connection) -> list[str]:
    """Every list the store knows."""
    return [str(row[0]) for row in conn.execute("SELECT name FROM lists")]


def count_statuses(conn: sqlite3.Connection, name: str, limits: BounceLimits) -> dict[str, int]:
    """Members of list `name` per status (removed ones left out); {} for an unknown list."""
    row = conn.execute("SELECT id FROM lists WHERE name = ?", (name,)).fetchone()
    if row is None:
        return {}
    plan = SqlPlan()
    plan.param("list_id", int(row[0]))
    plan.param("list_name", name)
    conn.execute("BEGIN")  # one snapshot for the address sets and the count
    try:
        status = status_expression(status_checks(conn, plan, limits))
        rows = conn.execute(
            f"SELECT {status} AS status, count(*) FROM recipients AS r "
            "WHERE r.list_id = :list_id AND r.status != 'removed' GROUP BY 1",
            plan.params,
        ).fetchall()
    finally:
        conn.execute("ROLLBACK")  # also drops the plan's temp tables, made in this transaction
    return {str(status): int(count) for status, count in rows}


def has_rows(conn: sqlite3.Connection, table: str) -> bool:
    return bool(conn.execute(f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone()[0])


def status_checks(conn: sqlite3.Connection, plan: SqlPlan, limits: BounceLimits) -> dict[str, str]:
    """SQL conditions for each non-active status; a check on an empty table is left out.

    The plan must have the parameters ``list_id`` and ``list_name``.
    """
    unsubscribed = "r.status = 'unsubscribed'"
    if has_rows(conn, "unsubscribers"):
        # Same rule as the import's re-activation: a newer DOI confirmation wins. Collected
        # from the (smaller) unsubscriber side once, then one set lookup per row.
        latest = plan.param("latest", latest_allowed(store.now()))
        select = (
            "SELECT u.email FROM unsubscribers AS u JOIN recipients AS r "
            "ON r.list_id = :list_id AND r.email = u.email WHERE u.list IN ('', :list_name) "
            f"AND {unsubscription_wins('r.doi_confirmed_at', 'u.unsubscribed_at', latest)}"
        )
        temp_set(conn, plan, "cs_unsubscribed", select, plan.params)
        plan.inactive_sets.append("cs_unsubscribed")
        unsubscribed += " OR r.email IN temp.cs_unsubscribed"
    checks = {"removed": "r.status = 'removed'", "unsubscribed": unsubscribed}
    patterns = [row[0] for row in conn.execute("SELECT pattern FROM blocklist")]
    if patterns:
        checks["blocklisted"] = blocklist_sql(conn, plan, patterns, "cs_blocked")
    if has_rows(conn, "bounces"):
        # Once, into a temp table: every chunk query would redo the aggregation.
        outbounced, params = outbounced_sql(limits)
        temp_set(conn, plan, "cs_outbounced", outbounced, params)
        plan.inactive_sets.append("cs_outbounced")
        checks["outbounced"] = "r.email IN temp.cs_outbounced"
    return checks


def blocklist_sql(conn: sqlite3.Connection, plan: SqlPlan, patterns: list[str], name: str) -> str:
    """An SQL condition on r.email, true exactly when one of `patterns` matches it.

    Calling the Python matcher for a million addresses costs more than the rest of the
    export, so the common shapes become set lookups (statuses.sort_patterns); the matcher
    (an SQL function called `name`) runs only for addresses that could match one of the
    other patterns.
    """
    found = sort_patterns(patterns)
    domains = set(found.domains)
    domain = "substr(r.email, instr(r.email, '@') + 1)"
    conditions = []
    if found.exact:
        _temp_values(conn, plan, f"{name}_exact", found.exact)
        conditions.append(f"r.email IN temp.{name}_exact")
    if found.by_domain:
        listed = conn.execute(
            f"SELECT DISTINCT {domain.replace('r.email', 'email')} FROM recipients "
            "WHERE list_id = :list_id",
            {"list_id": plan.params["list_id"]},
        )
        domains.update(blocked_domains(found.by_domain, [str(d) for (d,) in listed]))
    if domains:
        _temp_values(conn, plan, f"{name}_domains", domains)
        conditions.append(f"{domain} IN temp.{name}_domains")
    if found.rest:
        conditions.append(_matcher_sql(conn, plan, found.rest, name))
    return " OR ".join(conditions) or "0"  # e.g. only domain patterns no member's matches


def _matcher_sql(conn: sqlite3.Connection, plan: SqlPlan, patterns: list[str], name: str) -> str:
    """The Python matcher for the remaining patterns, run only where one of them could match:
    candidates are picked by prefix and suffix sets, one per length (statuses.candidate_ends).
    A pattern with a wildcard at both ends (``*spam*``) has neither, and every address then
    goes through the matcher."""
    plan.matchers[name] = patterns
    register_matcher(conn, name, patterns)
    ends = candidate_ends(patterns)
    if ends is None:
        return f"{name}(r.email)"
    candidates = []
    for kind, by_length in zip(("head", "tail"), ends, strict=True):
        for length, values in sorted(by_length.items()):
            table = f"{name}_{kind}{length}"
            _temp_values(conn, plan, table, values)
            start = 1 if kind == "head" else -length
            candidates.append(f"substr(r.email, {start}, {length}) IN temp.{table}")
    return f"(({' OR '.join(candidates)}) AND {name}(r.email))"


def register_matcher(conn: sqlite3.Connection, name: str, patterns: list[str]) -> None:
    matcher = Blocklist(patterns)
    conn.create_function(
        name, 1, lambda email: matcher.matches(email) is not None, deterministic=True
    )


def _temp_values(conn: sqlite3.Connection, plan: SqlPlan, table: str, values: set[str]) -> None:
    select = "SELECT value FROM json_each(?)"
    temp_set(conn, plan, table, select, (json.dumps(sorted(values)),))


def temp_set(
    conn: sqlite3.Connection,
    plan: SqlPlan,
    table: str,
    select: str,
    params: tuple[object, ...] | dict[str, object],
) -> None:
    """A one-column temp table of distinct values for IN lookups (plan.drop drops it)."""
    conn.execute(f"DROP TABLE IF EXISTS temp.{table}")
    conn.execute(f"CREATE TEMP TABLE {table} (value TEXT PRIMARY KEY) WITHOUT ROWID")
    conn.execute(f"INSERT OR IGNORE INTO temp.{table} {select}", params)
    plan.temp_tables.append(table)
