"""The store: one SQLite file holding lists, recipients, blocklist, unsubscribers, bounces, runs.

WAL mode so status commands read while a job writes; a busy timeout so two jobs writing
the same store wait for each other instead of failing. The schema is versioned with
`PRAGMA user_version` and migrated forward in order, each step in its own transaction.
"""

from __future__ import annotations

import datetime
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..core.private import create_private_file, make_private_folders
from ..errors import ConfigError, StoreError, StoreNotCreated, StoreUnusable

BUSY_TIMEOUT_MS = 60_000


def _decode_a_labels(conn: sqlite3.Connection) -> None:
    from .a_labels import decode_a_labels  # only when an old store is opened

    decode_a_labels(conn, now())


# Each entry migrates from version i to i+1. Append only; never edit a released step.
# A step is SQL, or a function for what SQL cannot do; each runs in its own transaction.
MIGRATIONS: list[str | Callable[[sqlite3.Connection], None]] = [
    """
    CREATE TABLE lists (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL
    );
    CREATE TABLE recipients (
        list_id INTEGER NOT NULL REFERENCES lists(id),
        email TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'active'
            CHECK (status IN ('active', 'unsubscribed', 'removed')),
        fields TEXT NOT NULL DEFAULT '{}',          -- JSON object: every other field
        doi_confirmed_at TEXT,                       -- double opt-in confirmation, UTC ISO
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (list_id, email)
    ) WITHOUT ROWID;
    CREATE INDEX recipients_by_update ON recipients (list_id, updated_at);
    CREATE TABLE blocklist (
        pattern TEXT PRIMARY KEY,                    -- lower-cased; * ? and \\ escapes
        reason TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        modified_at TEXT NOT NULL
    );
    CREATE TABLE unsubscribers (
        email TEXT NOT NULL,
        list TEXT NOT NULL DEFAULT '',               -- '' means every list
        unsubscribed_at TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (email, list)
    ) WITHOUT ROWID;
    CREATE TABLE bounces (
        id INTEGER PRIMARY KEY,
        email TEXT NOT NULL,
        type TEXT NOT NULL CHECK (type IN ('hard', 'soft')),
        bounced_at TEXT NOT NULL,
        source TEXT NOT NULL DEFAULT '',             -- the job that recorded it
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX bounces_by_email ON bounces (email);
    CREATE TABLE jobs (
        name TEXT PRIMARY KEY,
        first_seen TEXT NOT NULL                     -- when the job first ran (DOI cut-off)
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        job TEXT NOT NULL,
        type TEXT NOT NULL,
        status TEXT NOT NULL
            CHECK (status IN ('running', 'succeeded', 'failed', 'skipped', 'interrupted')),
        pid INTEGER,
        host TEXT,
        started TEXT NOT NULL,
        finished TEXT,
        file_path TEXT,
        file_bytes INTEGER,
        file_sha256 TEXT,
        counts TEXT NOT NULL DEFAULT '{}',
        rejects_file TEXT,
        error TEXT,
        message TEXT,
        warnings TEXT NOT NULL DEFAULT '[]',
        watermark TEXT                               -- export: changes up to here are out
    );
    CREATE INDEX runs_by_job ON runs (job, id);
    CREATE INDEX runs_by_checksum ON runs (job, file_sha256) WHERE status = 'succeeded';
    """,
    # v2: doi-dispatch sends. One row per job and address, claimed (`sending`, committed)
    # before the SMTP transaction: the UNIQUE key makes the claim exactly-once even for
    # overlapping runs, and a `sending` row left by a dead run becomes `unknown`, never resent.
    """
    CREATE TABLE sends (
        id INTEGER PRIMARY KEY,
        job TEXT NOT NULL,
        email TEXT NOT NULL,
        list TEXT NOT NULL,
        mailing TEXT NOT NULL,                       -- the .eml file name
        mailing_id TEXT NOT NULL,                    -- its Message-ID (or SHA-256)
        message_id TEXT NOT NULL,                    -- the Message-ID we sent it under
        state TEXT NOT NULL
            CHECK (state IN ('sending', 'sent', 'deferred', 'failed', 'unknown')),
        attempts INTEGER NOT NULL DEFAULT 1,
        run_id INTEGER,                              -- the run that last tried it
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '',             -- server reply or error
        UNIQUE (job, email)
    );
    CREATE INDEX sends_by_state ON sends (job, state);
    """,
    # v3: no index on (list_id, updated_at). No query uses it (changes-only exports page
    # through a list by its primary key and filter), and keeping it cost an import of a
    # million new members ~1.5 s CPU and a fifth of the file's size.
    """
    DROP INDEX IF EXISTS recipients_by_update;
    """,
    # v4: `changed_at` on unsubscribers and bounces: when the row was written or last changed
    # in the store (the partner's dates can lie anywhere in the past). Changes-only exports
    # compare it with their watermark, as they do recipients.updated_at. Existing rows take
    # their own date. Code sets it to the run's change time; the default (the same text
    # form, taken inside the writing transaction) covers any other writer. SQLite cannot add
    # a column with such a default, hence the copies.
    """
    CREATE TABLE unsubscribers_v4 (
        email TEXT NOT NULL,
        list TEXT NOT NULL DEFAULT '',
        unsubscribed_at TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        changed_at TEXT NOT NULL
            DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')),
        PRIMARY KEY (email, list)
    ) WITHOUT ROWID;
    INSERT INTO unsubscribers_v4 (email, list, unsubscribed_at, reason, changed_at)
        SELECT email, list, unsubscribed_at, reason, unsubscribed_at FROM unsubscribers;
    DROP TABLE unsubscribers;
    ALTER TABLE unsubscribers_v4 RENAME TO unsubscribers;
    CREATE TABLE bounces_v4 (
        id INTEGER PRIMARY KEY,
        email TEXT NOT NULL,
        type TEXT NOT NULL CHECK (type IN ('hard', 'soft')),
        bounced_at TEXT NOT NULL,
        source TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '',
        changed_at TEXT NOT NULL
            DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now'))
    );
    INSERT INTO bounces_v4 (id, email, type, bounced_at, source, detail, changed_at)
        SELECT id, email, type, bounced_at, source, detail, bounced_at FROM bounces;
    DROP TABLE bounces;
    ALTER TABLE bounces_v4 RENAME TO bounces;
    CREATE INDEX bounces_by_email ON bounces (email);
    """,
    # v5: addresses and patterns stored with an A-label domain (xn--…) take the Unicode form
    # imports now give them, merged with that form's rows where both exist.
    _decode_a_labels,
    # v6: erasure (`forget`). `erased` keeps, per erased address, only the keyed hash that
    # keeps it out of later imports; `erasure_secret` holds that key, made by the first
    # forget (not at creation: `store copy` wants an empty target to hold no row at all).
    # Hex text rather than blobs: both backends and `store copy` treat them alike.
    """
    CREATE TABLE erasure_secret (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        secret TEXT NOT NULL,                        -- 32 random bytes, hex: the HMAC key
        created_at TEXT NOT NULL
    );
    CREATE TABLE erased (
        hash TEXT PRIMARY KEY,                       -- HMAC-SHA256(secret, address), hex
        erased_at TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
    # v7: runs by status. Status reads (list-jobs, the HTTP service) ask for the running runs
    # and for the newest runs of a status; without it each such query read every run
    # (~75 ms at 200,000 runs, on every request).
    """
    CREATE INDEX runs_by_status ON runs (status, id);
    """,
    # v8: the checksums of imported files in a table of their own, kept for good: run records
    # are pruned after `retention.runs`, and a file must never be imported twice however old
    # its run (a pattern source with `after: keep` sees the same files every day). Filled
    # from the runs so far. An index on runs' start, which retention prunes by.
    """
    CREATE TABLE imported_files (
        job TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        run_id INTEGER NOT NULL,                     -- the newest run that imported it
        imported_at TEXT NOT NULL,
        PRIMARY KEY (job, sha256)
    ) WITHOUT ROWID;
    INSERT INTO imported_files (job, sha256, run_id, imported_at)
        SELECT job, file_sha256, max(id), max(coalesce(finished, started)) FROM runs
        WHERE status = 'succeeded' AND file_sha256 IS NOT NULL AND type LIKE '%-import'
        GROUP BY job, file_sha256;
    CREATE INDEX runs_by_start ON runs (started);
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


def now() -> str:
    """The current time as stored everywhere: UTC, ISO 8601, microseconds, so text sorts."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")


def connect(location: str, *, create: bool = True) -> sqlite3.Connection:
    """Open the store, creating and migrating it as needed.

    Transactions are explicit (`transaction()`); the connection runs in autocommit mode
    otherwise, so a reader never holds a snapshot open by accident.
    """
    if "://" in location:
        raise StoreError(
            f"store '{location}': only SQLite files are supported by this version; "
            "set `store` to a file path"
        )
    path = Path(location)
    if path.is_dir():
        raise ConfigError(f"{path} is a directory; set `store` to a file path", key="store")
    if not create and not path.exists():
        raise StoreNotCreated(
            f"store {path} does not exist yet (it is created by the first run)"
        )
    try:
        make_private_folders(path.parent)  # every folder made for it 0700, as the file
        _create_private(path)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the folder of {path}: {exc.strerror}; set `store` to a path in "
            "a writable folder",
            key="store",
        ) from None
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _enable_wal(conn)
        # FULL: a committed import must survive a power cut, not only a process crash.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA cache_size = -65536")  # 64 MiB, bounded whatever the list size
        _migrate(conn, path)
    except sqlite3.DatabaseError as exc:
        raise failure("cannot open the store", path, exc) from None
    return conn


# A read-only connection waits this long for a lock (a reader of a WAL store rarely needs
# one: only while another connection recovers or resets the log); a request must not hang.
READ_ONLY_BUSY_TIMEOUT_MS = 5_000


def connect_read_only(location: str) -> sqlite3.Connection:
    """Open an existing store for reading only: SQLite's read-only mode plus query_only, no
    file or folder made, no journal-mode change, no migration. A store at another schema
    version is refused (StoreUnusable); a missing one is StoreNotCreated."""
    from urllib.parse import quote

    path = Path(location)
    if not path.is_file():
        raise StoreNotCreated(f"store {path} does not exist yet (it is created by the first run)")
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        conn = sqlite3.connect(
            uri, uri=True, isolation_level=None, timeout=READ_ONLY_BUSY_TIMEOUT_MS / 1000,
        )  # fmt: skip
        conn.execute(f"PRAGMA busy_timeout = {READ_ONLY_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA query_only = ON")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise failure("cannot open the store", path, exc) from None
    if version != SCHEMA_VERSION:
        conn.close()
        raise StoreUnusable(_version_mismatch(path, version))
    return conn


def _version_mismatch(path: Path, version: int) -> str:
    if version > SCHEMA_VERSION:
        return (
            f"store {path} has schema version {version}, newer than this campaign-sync "
            f"understands ({SCHEMA_VERSION}); upgrade campaign-sync"
        )
    return (
        f"store {path} has schema version {version}, older than this campaign-sync's "
        f"({SCHEMA_VERSION}); run any job once to upgrade it (reading changes nothing)"
    )


# What an SQLite error means to the operator, by its primary result code: the reason in our
# words, what to do, and whether the store is unusable as configured (exit 2, like a bad path)
# or only this run failed (exit 1). Python 3.10 gives no code: its message is matched instead.
_USER = "the user the jobs run as"
_MEANINGS: dict[int, tuple[str, str, bool]] = {
    5: (
        "another process held its write lock past the busy timeout ({seconds:g} s)",
        "find it with `fuser {path}` (often an open sqlite3 shell) and run the job again",
        False,
    ),
    8: (
        "it is read-only for this user",
        f"make the file, its folder and any -wal/-shm files beside it writable for {_USER}",
        True,
    ),
    10: ("reading or writing the disk failed (I/O error)", "check the disk", False),
    11: ("the file is damaged", "restore the store from a backup", True),
    13: ("the disk is full", "free space there and run the job again", False),
    14: (
        "the file cannot be opened",
        f"make it and its folder readable and writable for {_USER}",
        True,
    ),
    23: ("access was refused", f"make the file readable and writable for {_USER}", True),
    26: (
        "the file is not a campaign-sync store (not an SQLite database)",
        "set `store` to the store's file",
        True,
    ),
}
_MEANINGS[6] = _MEANINGS[5]  # SQLITE_LOCKED: the same to an operator as SQLITE_BUSY
_MEANINGS[3] = _MEANINGS[23]  # SQLITE_PERM
_CODES_BY_TEXT = {
    "database is locked": 5,
    "attempt to write a readonly database": 8,
    "disk I/O error": 10,
    "database disk image is malformed": 11,
    "database or disk is full": 13,
    "unable to open database file": 14,
    "file is not a database": 26,
}


def failure(doing: str, location: str | Path, exc: sqlite3.Error) -> StoreError:
    """The one-line error for `exc`, met while `doing` something with the store at
    `location`: what failed, where, why in plain words, and what to do."""
    code = getattr(exc, "sqlite_errorcode", None)
    code = _CODES_BY_TEXT.get(str(exc), -1) if code is None else code & 0xFF
    meaning = _MEANINGS.get(code)
    if meaning is None:  # a bug rather than the machine: name the code, not a sentence
        name = getattr(exc, "sqlite_errorname", type(exc).__name__)
        return StoreError(f"{doing} {location}: unexpected SQLite error {name}")
    reason, action, unusable = meaning
    fill = {"seconds": BUSY_TIMEOUT_MS / 1000, "path": location}
    message = f"{doing} {location}: {reason.format(**fill)}; {action.format(**fill)}"
    return StoreUnusable(message) if unusable else StoreError(message)


def _create_private(path: Path) -> None:
    """Make a new store file readable by its owner only, whatever the umask: it holds the
    partners' recipients. SQLite gives its -wal and -shm files the same mode."""
    if str(path) != ":memory:":
        create_private_file(path)


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL, waiting out another process that is creating the same store.

    Changing the journal mode needs an exclusive lock and SQLite does not always run the
    busy handler for it: two jobs starting on a new store at once would see "database is
    locked" at once. Retry within the busy timeout instead.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause = 0.01
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreUnusable(_version_mismatch(path, version))
    for target in range(version + 1, SCHEMA_VERSION + 1):
        with transaction(conn):
            # Re-check inside the write lock: another process may have migrated meanwhile.
            if conn.execute("PRAGMA user_version").fetchone()[0] >= target:
                continue
            step = MIGRATIONS[target - 1]
            if callable(step):
                step(conn)
            else:
                for statement in _statements(step):
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target}")


def _statements(script: str) -> Iterator[str]:
    """Split a migration script into statements (executescript would commit on its own)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer
            buffer = ""
    if buffer.strip():
        yield buffer


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any exception (including KeyboardInterrupt).

    IMMEDIATE takes the write lock up front, so two writers queue on the busy timeout
    instead of one failing with "database is locked" half-way through.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def list_id(conn: sqlite3.Connection, name: str, *, create: bool) -> int | None:
    """The id of the named list, created on first use when `create` is set."""
    row = conn.execute("SELECT id FROM lists WHERE name = ?", (name,)).fetchone()
    if row:
        return int(row[0])
    if not create:
        return None
    cursor = conn.execute("INSERT INTO lists (name, created_at) VALUES (?, ?)", (name, now()))
    return int(cursor.lastrowid or 0)
