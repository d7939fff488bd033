"""Typed errors of the engine, each carrying the exit code the CLI reports for it.

The engine raises these; the CLI turns them into one clear line and the exit code.
Anything else escaping the engine is a bug, not a user mistake.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SOURCE_MISSING = 3
EXIT_LOCKED = 75


class CampaignSyncError(Exception):
    """Base of every error a user can cause or fix; the message says what to do."""

    exit_code = EXIT_FAILED


class ConfigError(CampaignSyncError):
    """The configuration file is unreadable or invalid."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None):
        self.path = path
        self.key = key
        where = ""
        if path:
            where += f"{path}: "
        if key:
            where += f"At '{key}': "
        super().__init__(where + message)


class UsageError(CampaignSyncError):
    """The command was called the wrong way (e.g. the wrong kind of job)."""

    exit_code = EXIT_USAGE


class SourceMissing(CampaignSyncError):
    """The import source file does not exist (and the job says `missing: fail`)."""

    exit_code = EXIT_SOURCE_MISSING


class JobLocked(CampaignSyncError):
    """Another run of the same job is in progress."""

    exit_code = EXIT_LOCKED


class InputError(CampaignSyncError):
    """A file to import is unusable as a whole (undecodable, no key column, broken rows)."""


class LimitExceeded(CampaignSyncError):
    """A safety limit (max_rejects, max_removals, empty replace) stopped the run."""


class TransferError(CampaignSyncError):
    """Fetching or uploading a file failed (after retries)."""


class HostKeyError(TransferError):
    """The server's host key is unknown or does not match; never retried."""


class StoreError(CampaignSyncError):
    """The store failed a run: locked past the busy timeout, a full disk, an I/O error."""


class StoreNotCreated(StoreError):
    """A status command asked for a store that no run has created yet (it creates nothing)."""


class StoreUnusable(StoreError):
    """The store cannot be used at all (not a store, unreadable, read-only, newer schema):
    like an unusable path in the config, nothing ran (exit 2)."""

    exit_code = EXIT_USAGE


class MailError(CampaignSyncError):
    """Sending mail failed as a whole (connection, authentication)."""


def one_line(message: str) -> str:
    """The message with control characters escaped: text from a partner's file or a server
    (a newline, CR, an ANSI escape) must not forge lines in a terminal, cron mail or a notice.
    """
    if message.isprintable():
        return message
    return "".join(
        char if char.isprintable() or char == " " else repr(char)[1:-1] for char in message
    )
