"""A recipient's status as SQL: removed, unsubscribed, blocklisted, outbounced or active.

The first that applies:

* ``removed``: dropped from the list by a replace import;
* ``unsubscribed``: the record says so, or the unsubscriber list has the address for this list
  or for all lists, and no double opt-in confirmation is newer than that unsubscription
  (the rule an import uses to re-activate someone, unsubscription_wins);
* ``blocklisted``: the address matches a blocklist pattern;
* ``outbounced``: at least ``hard_limit`` hard or ``soft_limit`` soft bounces;
* ``active``: everyone else.

Exports and the `lists` command both build their SQL here, so they always agree. The checks
are conditions on ``recipients AS r``; what they need (address sets, blocklist matchers) is
set up once in the connection's temp database, which writes nothing to the store and leaves
a read snapshot as it is.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field

from .. import store
from ..config.model import BounceLimits
from ..core.addresses import Blocklist, normalise, pattern_ends
from ..core.dates import latest_allowed


def unsubscription_wins(confirmed: str, unsubscribed: str, latest: str) -> str:
    """SQL: the unsubscription dated `unsubscribed` holds against the double opt-in
    confirmation `confirmed` (SQL expressions of stored dates; `latest` is latest_allowed()
    of the current run, as SQL).

    Only a confirmation strictly later than the unsubscription lifts it, and only one that
    has happened: a date after `latest` is none. Imports refuse such dates, but a store that
    an older version wrote may hold one, and an unsubscription recorded now must not wait
    for that date to take effect. Imports, exports, `lists` and dispatch all use this rule.
    """
    return f"({confirmed} IS NULL OR {confirmed} <= {unsubscribed} OR {confirmed} > {latest})"


def outbounced_sql(limits: BounceLimits) -> tuple[str, tuple[int, int]]:
    """A sub-select of the addresses at or over a bounce limit, with its parameters."""
    return (
        "SELECT email FROM bounces GROUP BY email "
        "HAVING sum(type = 'hard') >= ? OR sum(type = 'soft') >= ?",
        (limits.hard_limit, limits.soft_limit),
    )


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


def status_expression(checks: dict[str, str]) -> str:
    whens = " ".join(f"WHEN {condition} THEN '{name}'" for name, condition in checks.items())
    return f"CASE {whens} ELSE 'active' END"


# --------------------------------------------------------------------------- blocklist in SQL

_WILD = frozenset("*?\\")


def _literal(text: str) -> bool:
    return not _WILD.intersection(text)


def blocklist_sql(conn: sqlite3.Connection, plan: SqlPlan, patterns: list[str], name: str) -> str:
    """An SQL condition on r.email, true exactly when one of `patterns` matches it.

    Calling the Python matcher for a million addresses costs more than the rest of the
    export, so the common shapes become set lookups. A stored address has exactly one @, so:

    * a pattern without wildcards is one address;
    * ``*@D`` (D without @) and ``*.tld``-like patterns only look at the domain: they are tried
      once per distinct domain of the list, and the blocked domains go into a set;
    * any other pattern whose text after its @ is literal can only match that domain, and one
      whose text before its @ is literal only that local part: the matcher (an SQL function
      called `name`) runs only for addresses with such a domain or local part.

    Only a pattern with wildcards on both sides of its @ (or without @) makes the matcher run
    for every address.
    """
    exact: set[str] = set()
    domains: set[str] = set()
    by_domain: list[str] = []
    rest: list[str] = []
    for pattern in patterns:
        if _literal(pattern):
            exact.add(normalise(pattern))
        elif pattern.startswith("*@") and "@" not in pattern[2:]:
            if _literal(pattern[2:]):
                domains.add(normalise(pattern)[2:])  # with the @, so A-labels are decoded
            else:
                by_domain.append(pattern)
        elif pattern[1:2] == "." and _literal(pattern[1:]) and "@" not in pattern:
            by_domain.append(pattern)  # "*.de": a suffix of the domain
        else:
            rest.append(pattern)
    domain = "substr(r.email, instr(r.email, '@') + 1)"
    conditions = []
    if exact:
        _temp_values(conn, plan, f"{name}_exact", exact)
        conditions.append(f"r.email IN temp.{name}_exact")
    if by_domain:
        domains.update(_blocked_domains(conn, plan, by_domain))
    if domains:
        _temp_values(conn, plan, f"{name}_domains", domains)
        conditions.append(f"{domain} IN temp.{name}_domains")
    if rest:
        conditions.append(_matcher_sql(conn, plan, rest, name))
    return " OR ".join(conditions) or "0"  # e.g. only domain patterns no member's matches


def _blocked_domains(conn: sqlite3.Connection, plan: SqlPlan, patterns: list[str]) -> set[str]:
    """The list's domains that domain-only patterns block, each tried once."""
    matcher = Blocklist(patterns)
    found = conn.execute(
        "SELECT DISTINCT substr(email, instr(email, '@') + 1) FROM recipients "
        "WHERE list_id = :list_id",
        {"list_id": plan.params["list_id"]},
    )
    # Any local part will do: these patterns do not look at it.
    return {domain for (domain,) in found if matcher.matches("x@" + domain) is not None}


def _matcher_sql(conn: sqlite3.Connection, plan: SqlPlan, patterns: list[str], name: str) -> str:
    """The Python matcher for the remaining patterns, run only where one of them could match.

    A pattern matches only addresses that start with its literal head (the text before its
    first wildcard, escapes resolved) and end with its literal tail: those become prefix and suffix
    sets, one per length, that pick the candidates. A pattern with a wildcard at both ends
    (``*spam*``) has neither, and every address then goes through the matcher.
    """
    plan.matchers[name] = patterns
    register_matcher(conn, name, patterns)
    heads: dict[int, set[str]] = {}
    tails: dict[int, set[str]] = {}
    for pattern in patterns:
        # Normalised like stored addresses (A-labels decoded): the raw text would miss them.
        head, tail = pattern_ends(pattern)
        if len(tail) >= len(head) and tail:
            tails.setdefault(len(tail), set()).add(tail)
        elif head:
            heads.setdefault(len(head), set()).add(head)
        else:
            return f"{name}(r.email)"
    candidates = []
    for kind, by_length in (("head", heads), ("tail", tails)):
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
