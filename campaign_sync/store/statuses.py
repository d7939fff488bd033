"""A recipient's status: removed, unsubscribed, blocklisted, outbounced or active.

The first that applies:

* ``removed``: dropped from the list by a replace import;
* ``unsubscribed``: the record says so, or the unsubscriber list has the address for this list
  or for all lists, and no double opt-in confirmation is newer than that unsubscription
  (the rule an import uses to re-activate someone, unsubscription_wins);
* ``blocklisted``: the address matches a blocklist pattern;
* ``outbounced``: at least ``hard_limit`` hard or ``soft_limit`` soft bounces;
* ``active``: everyone else.

Exports and the `lists` command both build their SQL from the backend's statuses module
(store/<kind>/statuses.py), so they always agree. What is the same on every backend lives
here: the rules as SQL text both dialects read, and how blocklist patterns are sorted into
address sets, domain sets and the few that need the Python matcher.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.addresses import Blocklist, normalise, pattern_ends


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


def one_address_checks(named: Callable[[str], str], over_limits: str) -> dict[str, str]:
    """SQL: the checks of status_expression for one address's membership row ``r`` of list
    ``l``, each an index lookup by the address. `named` spells a named parameter in the
    backend's style; the parameters are ``latest`` (as in unsubscription_wins),
    ``blocklisted`` (whether a blocklist pattern matches the address, found by a pass over
    the pattern table) and those of `over_limits`, the backend's bounce-limit condition on
    a group of bounces. The same rules as the list-wide checks of exports and `lists`."""
    wins = unsubscription_wins("r.doi_confirmed_at", "u.unsubscribed_at", named("latest"))
    return {
        "removed": "r.status = 'removed'",
        "unsubscribed": "r.status = 'unsubscribed' OR EXISTS (SELECT 1 FROM unsubscribers "
        f"AS u WHERE u.email = r.email AND u.list IN ('', l.name) AND {wins})",
        "blocklisted": named("blocklisted"),
        "outbounced": "EXISTS (SELECT 1 FROM bounces WHERE email = r.email "
        f"GROUP BY email HAVING {over_limits})",
    }


def status_expression(checks: dict[str, str]) -> str:
    """SQL: the first status whose check holds (checks in the order of STATUSES), else active."""
    whens = " ".join(f"WHEN {condition} THEN '{name}'" for name, condition in checks.items())
    return f"CASE {whens} ELSE 'active' END"


# --------------------------------------------------------------------------- blocklist patterns

_WILD = frozenset("*?\\")


def _literal(text: str) -> bool:
    return not _WILD.intersection(text)


@dataclass
class SortedPatterns:
    """Blocklist patterns by what it takes to find the addresses they match.

    A stored address has exactly one @, so:

    * a pattern without wildcards is one address (`exact`);
    * ``*@D`` with a literal D blocks one domain (`domains`, with the @ stripped);
    * other ``*@…`` and ``*.tld``-like patterns only look at the domain (`by_domain`): they are
      tried once per distinct domain of the list (blocked_domains);
    * any other pattern (`rest`) needs the matcher, for the addresses candidate_ends allows.
    """

    exact: set[str] = field(default_factory=set)
    domains: set[str] = field(default_factory=set)
    by_domain: list[str] = field(default_factory=list)
    rest: list[str] = field(default_factory=list)


def sort_patterns(patterns: list[str]) -> SortedPatterns:
    found = SortedPatterns()
    for pattern in patterns:
        if _literal(pattern):
            found.exact.add(normalise(pattern))
        elif pattern.startswith("*@") and "@" not in pattern[2:]:
            if _literal(pattern[2:]):
                found.domains.add(normalise(pattern)[2:])  # with the @, so A-labels are decoded
            else:
                found.by_domain.append(pattern)
        elif pattern[1:2] == "." and _literal(pattern[1:]) and "@" not in pattern:
            found.by_domain.append(pattern)  # "*.de": a suffix of the domain
        else:
            found.rest.append(pattern)
    return found


def blocked_domains(patterns: list[str], domains: list[str]) -> set[str]:
    """Which of `domains` the domain-only `patterns` block (each domain tried once)."""
    matcher = Blocklist(patterns)
    # Any local part will do: these patterns do not look at it.
    return {domain for domain in domains if matcher.matches("x@" + domain) is not None}


def candidate_ends(
    patterns: list[str],
) -> tuple[dict[int, set[str]], dict[int, set[str]]] | None:
    """Literal heads and tails, by length, that an address must have for one of `patterns`
    to match it; None when some pattern has neither (``*spam*``: every address is one).

    A pattern matches only addresses that start with its literal head (the text before its
    first wildcard, escapes resolved) and end with its literal tail, normalised like stored
    addresses (A-labels decoded): the raw text would miss them.
    """
    heads: dict[int, set[str]] = {}
    tails: dict[int, set[str]] = {}
    for pattern in patterns:
        head, tail = pattern_ends(pattern)
        if len(tail) >= len(head) and tail:
            tails.setdefault(len(tail), set()).add(tail)
        elif head:
            heads.setdefault(len(head), set()).add(head)
        else:
            return None
    return heads, tails
