"""What erasure (`forget`) asks of a store, in SQL both backends read alike.

The addresses to erase are staged in the temp table `forget_addresses` (value, kind): kind
`email` holds every stored spelling of each address (its normalised form and, for an IDN,
its A-label form, which older stores or other writers may hold), kind `pattern` the
blocklist pattern that matches exactly that address. WHERE_BY_TABLE says, per table, which
of its rows hold one of them; each backend's erasure module counts (--dry-run) or deletes
with it. Run records are not in it: their texts are searched and redacted, not deleted.
"""

from __future__ import annotations

_EMAILS = "(SELECT value FROM forget_addresses WHERE kind = 'email')"

# Every table that holds an address as a value of its own, with the rows that hold one.
# (lists, jobs, meta, erased and erasure_secret hold none; runs are redacted instead.)
WHERE_BY_TABLE: dict[str, str] = {
    # Through the primary key (list_id, email): each list's few rows, not a scan.
    "recipients": f"list_id IN (SELECT id FROM lists) AND email IN {_EMAILS}",
    "unsubscribers": f"email IN {_EMAILS}",
    "bounces": f"email IN {_EMAILS}",
    "sends": f"email IN {_EMAILS}",
    "blocklist": "pattern IN (SELECT value FROM forget_addresses WHERE kind = 'pattern')",
}

# The runs whose texts may hold an address (a dispatch's warnings name the recipients it
# could not mail; an error or a message may quote a server's reply or a file's name).
RUN_TEXTS = (
    "SELECT id, error, message, warnings, file_path FROM runs "
    "WHERE error IS NOT NULL OR message IS NOT NULL OR warnings != '[]' "
    "OR file_path LIKE '%@%' ORDER BY id"
)


def count_sql(table: str) -> str:
    return f"SELECT count(*) FROM {table} WHERE {WHERE_BY_TABLE[table]}"


def delete_sql(table: str) -> str:
    return f"DELETE FROM {table} WHERE {WHERE_BY_TABLE[table]}"
