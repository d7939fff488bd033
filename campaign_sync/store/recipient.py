"""One address across the whole store, for `campaign-sync recipient`: the SQL both backends
read (each backend's recipient module runs it in its own snapshot and placeholder style).

Every query looks the address up through an index, never by reading a table through:

* memberships: the (small) lists table, then each list's primary key (list_id, email);
* unsubscriptions: the unsubscribers' primary key (email, list);
* bounces: bounces_by_email;
* sends: the (small) jobs table, then the sends' unique key (job, email). Every job that
  ever sent has a row in jobs: its first run, the DOI cut-off, is recorded before it sends.

A membership's status comes from the statuses rules (statuses.one_address_checks, through
the backend's statuses.address_checks), so it is the status exports and `lists` give.
Blocklist patterns are the exception: the caller matches the address against each pattern
in Python, one pass over the pattern table (patterns are few; a pattern such as `*spam*`
has no index that could find it).
"""

from __future__ import annotations

from collections.abc import Callable

from .statuses import status_expression


def queries(named: Callable[[str], str], checks: dict[str, str]) -> dict[str, str]:
    """The per-address queries by name, with named parameters spelled by `named`; the
    address is the parameter ``email``. `checks`: the backend's address_checks."""
    email = named("email")
    return {
        "memberships": (
            "SELECT l.name, r.status, r.fields, r.doi_confirmed_at, r.created_at, "
            f"r.updated_at, {status_expression(checks)} AS effective "
            f"FROM lists AS l JOIN recipients AS r ON r.list_id = l.id AND r.email = {email} "
            "ORDER BY l.name"
        ),
        "unsubscriptions": (
            "SELECT list, unsubscribed_at, reason FROM unsubscribers "
            f"WHERE email = {email} ORDER BY list"
        ),
        "bounces": (
            "SELECT type, bounced_at, source, detail FROM bounces "
            f"WHERE email = {email} ORDER BY bounced_at, id"
        ),
        "sends": (
            "SELECT s.job, s.list, s.mailing, s.state, s.attempts, s.message_id, s.run_id, "
            "s.created_at, s.updated_at, s.detail "
            f"FROM jobs AS j JOIN sends AS s ON s.job = j.name AND s.email = {email} "
            "ORDER BY s.job"
        ),
    }


# The blocklist, read whole: patterns are matched in Python (see the module's docstring).
PATTERNS = "SELECT pattern, reason FROM blocklist ORDER BY pattern"
