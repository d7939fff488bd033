"""Connections to a PostgreSQL store, and PostgreSQL's errors in the operator's words.

The driver is psycopg 3, an optional extra: it is imported here, on first use, so an SQLite
installation neither needs nor loads it.

Which schema. The store's tables live in one schema, `public` unless the config says
`store_schema: NAME` beside `store: postgresql://…`. A config key rather than libpq's
`options=-csearch_path=NAME` in the URL, because:

* the schema is part of the store's identity (lock keys are namespaced by it, `store copy`
  and messages name it): one validated identifier, not a search path (`a,b,"$user"`) that
  would have to be parsed back out of a startup option;
* connection poolers (PgBouncer in transaction mode) refuse the `options` startup parameter;
* the URL stays what libpq, psql and the platform's other tools already accept.

Every connection: autocommit (transactions are explicit, so a reader never holds a snapshot
by accident), `search_path` set to that schema alone, TCP keepalives on both ends so that a
host that vanishes without closing its socket loses its session, and with it its job locks,
within about a minute instead of after the kernel's two hours.
"""

from __future__ import annotations

import os
import re
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ...config.model import SCHEMA_NAME
from ...errors import StoreError, StoreUnusable

if TYPE_CHECKING:
    import psycopg

INSTALL = "pip install 'campaign-sync[postgres]'"

# libpq settings we add unless the URL (or, where libpq has one, its variable) sets them.
_CLIENT_DEFAULTS = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "fallback_application_name": "campaign-sync",
}
_CONNECT_TIMEOUT = "10"
# The server's end of the same socket: it notices a vanished client as quickly.
_SERVER_SETTINGS = {
    "tcp_keepalives_idle": "30",
    "tcp_keepalives_interval": "10",
    "tcp_keepalives_count": "3",
}

def driver() -> ModuleType:
    """psycopg, or a one-line StoreUnusable (exit 2) saying how to install it."""
    try:
        import psycopg
    except ImportError:
        raise StoreUnusable(
            f"a PostgreSQL store needs the psycopg driver, which is not installed; "
            f"install it with: {INSTALL}"
        ) from None
    return psycopg


def check_schema_name(schema: str) -> str:
    """`schema` if it is a plain PostgreSQL identifier (letters, digits, _ and $, not
    starting with a digit, at most 63 bytes); else a one-line StoreUnusable."""
    if not SCHEMA_NAME.fullmatch(schema):
        raise StoreUnusable(
            f"store_schema '{schema}' is not a plain schema name; use letters, digits and _ "
            "(not starting with a digit, at most 63 characters)"
        )
    return schema


def display(url: str) -> str:
    """`url` as messages show it: scheme, user, host, port and database; never a password
    (in the URL's user part or its query), never its other parameters."""
    if "://" not in url:  # a key=value conninfo string: any part of it may be the password
        return "the PostgreSQL store in `store`"
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # e.g. a port that is not a number
        return "the PostgreSQL store in `store`"
    user = f"{parts.username}@" if parts.username else ""
    scheme = parts.scheme or "postgresql"
    return f"{scheme}://{user}{host}{port}{parts.path}"


def connect(url: str, schema: str = "public") -> psycopg.Connection[Any]:
    """An autocommit connection to the store at `url`, with `schema` as its search path.

    The schema need not exist yet (see schema.exists); every failure is one StoreError line
    that names the store by display(url)."""
    psycopg = driver()
    check_schema_name(schema)
    params = _params(psycopg, url)
    try:
        conn = psycopg.connect(**params, autocommit=True)
    except psycopg.Error as exc:
        raise failure("cannot connect to the store", url, exc) from None
    try:
        _configure(conn, schema)
    except psycopg.Error as exc:
        conn.close()
        raise failure("cannot set up the connection to the store", url, exc) from None
    return conn


def _params(psycopg: ModuleType, url: str) -> dict[str, Any]:
    try:
        params: dict[str, Any] = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        raise StoreUnusable(
            f"store {display(url)} is not a valid PostgreSQL URL; write it as "
            "postgresql://USER@HOST:PORT/DATABASE (settings such as ?sslmode=verify-full "
            "after it)"
        ) from None
    for name, value in _CLIENT_DEFAULTS.items():
        params.setdefault(name, value)
    if "connect_timeout" not in params and "PGCONNECT_TIMEOUT" not in os.environ:
        params["connect_timeout"] = _CONNECT_TIMEOUT
    return params


def _configure(conn: psycopg.Connection[Any], schema: str) -> None:
    settings = {"search_path": _quote(schema), **_SERVER_SETTINGS}
    if conn.info.server_version >= 140000:
        # While a long statement runs, look every few seconds whether the client is still
        # there: a killed run's session (and its job lock) then ends within seconds instead
        # of when the statement would have finished.
        settings["client_connection_check_interval"] = "5000"
    calls = ", ".join("set_config(%s, %s, false)" for _ in settings)
    values = [item for pair in settings.items() for item in pair]
    conn.execute(f"SELECT {calls}", values)


def _quote(identifier: str) -> str:
    """A checked identifier, double-quoted so case and `$` survive (check_schema_name)."""
    return '"' + identifier + '"'


# What a PostgreSQL error means to the operator. Connection failures carry no SQLSTATE, only
# libpq's text, so those are recognised by their wording (a regular expression each); the
# wording itself is never shown (it can echo the host, the user or parts of the URL).
# Each: pattern, reason, what to do, whether the store is unusable as configured.
_BY_TEXT: list[tuple[str, str, str, bool]] = [
    (
        "password authentication failed",
        "the server refused the password of user '{user}'",
        "check the password (PGPASSWORD, PGPASSFILE or ~/.pgpass of the user the jobs run as)",
        True,
    ),
    (
        "no password supplied",
        "no password was found for user '{user}'",
        "put it in ~/.pgpass (or the file PGPASSFILE names) of the user the jobs run as",
        True,
    ),
    (
        "no pg_hba.conf entry",
        "the server does not accept user '{user}' from this host",
        "allow it in the server's pg_hba.conf",
        True,
    ),
    (
        r'database ".*" does not exist',
        "the database '{dbname}' does not exist on the server",
        "create it or correct the database in `store`",
        True,
    ),
    (
        "Connection refused",
        "nothing accepts connections at {host}",
        "check that the server runs and that `store` names its host and port",
        False,
    ),
    (
        "resolve host|translate host name",
        "the host name {hostname} cannot be resolved",
        "check the host in `store` and this machine's DNS",
        False,
    ),
    (
        "timeout expired",
        "the server at {host} did not answer in time",
        "check the network path to it and that it runs",
        False,
    ),
    (
        "SSL|TLS|certificate",
        "the TLS connection to {host} failed",
        "check sslmode in `store` and the server certificate (PGSSLROOTCERT)",
        True,
    ),
    (
        "connection slots|too many connections",
        "the server has no free connection slot",
        "run the job again later, or raise the role's or the server's connection limit",
        False,
    ),
    (
        "the database system is",  # … starting up / shutting down / in recovery mode
        "the server is starting, stopping or recovering",
        "run the job again in a minute",
        False,
    ),
    (
        r"invalid .* value",  # e.g. a port that is not a number
        "the URL has a setting libpq cannot use",
        "write it as postgresql://USER@HOST:PORT/DATABASE?SETTING=VALUE",
        True,
    ),
]

_LOST = (
    "the connection to the server was lost (it restarted, or the network failed)",
    "run the job again; nothing of this run was committed past its last completed step",
    False,
)
# By SQLSTATE class or code, for errors raised once connected.
_BY_STATE: dict[str, tuple[str, str, bool]] = {
    "08": _LOST,
    "57P01": _LOST,  # admin_shutdown: terminated by the server (a restart, pg_terminate)
    "57P02": _LOST,  # crash_shutdown
    "57P03": ("the server is starting up", "run the job again in a minute", False),
    "53": (
        "the server ran out of a resource (disk, memory or connections)",
        "check the server",
        False,
    ),
    "42501": (
        "user '{user}' lacks a privilege it needs",
        "grant it the privileges docs/postgresql.md lists for campaign-sync's role",
        True,
    ),
    "55P03": (
        "another process held a lock past the wait limit",
        "run the job again; look for long transactions in pg_stat_activity",
        False,
    ),
    "40P01": ("a deadlock with another session aborted the step", "run the job again", False),
    "40001": ("a concurrent update aborted the step", "run the job again", False),
}


def failure(doing: str, url: str, exc: Exception) -> StoreError:
    """The one-line error for `exc`, met while `doing` something with the store at `url`:
    what failed, where, why in plain words, and what to do (exit 2 where the store is
    unusable as configured, 1 where only this run failed)."""
    meaning = _meaning(exc)
    where = display(url)
    if meaning is None:  # a bug rather than the setup: name the error class, not libpq's text
        state = getattr(exc, "sqlstate", None)
        code = f" {state}" if state else ""
        return StoreError(
            f"{doing} {where}: unexpected PostgreSQL error {type(exc).__name__}{code}"
        )
    reason, action, unusable = meaning
    fill = _fill(url)
    message = f"{doing} {where}: {reason.format(**fill)}; {action.format(**fill)}"
    return StoreUnusable(message) if unusable else StoreError(message)


def _meaning(exc: Exception) -> tuple[str, str, bool] | None:
    state = getattr(exc, "sqlstate", None)
    if state:
        return _BY_STATE.get(state) or _BY_STATE.get(state[:2])
    text = str(exc)
    for pattern, reason, action, unusable in _BY_TEXT:
        if re.search(pattern, text):
            return reason, action, unusable
    if "server closed the connection" in text or "terminating connection" in text:
        return _LOST
    if "connection" in text and ("closed" in text or "lost" in text or "bad" in text):
        return _LOST
    return None


def _fill(url: str) -> dict[str, str]:
    """The URL's parts that messages may name (never its password)."""
    unknown = {"user": "?", "dbname": "?", "host": "the configured host", "hostname": "?"}
    if "://" not in url:
        return unknown
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
    except ValueError:
        return unknown
    return {
        "user": parts.username or os.environ.get("PGUSER", "?"),
        "dbname": parts.path.lstrip("/") or "?",
        "host": f"{host}:{port}",
        "hostname": host,
    }
