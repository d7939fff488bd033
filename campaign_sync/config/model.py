"""The configuration as the rest of the program sees it: frozen dataclasses and the
vocabulary of job types, modes and fields. Built by load.py, checked by validate*.py."""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

IMPORT_TYPES = ("recipient-import", "blocklist-import", "unsubscriber-import", "bounce-import")
EXPORT_TYPES = ("recipient-export", "blocklist-export", "unsubscriber-export", "bounce-export")
DISPATCH_TYPES = ("doi-dispatch",)
JOB_TYPES = IMPORT_TYPES + EXPORT_TYPES + DISPATCH_TYPES
# Job types that work on one recipient list and therefore need `list`.
LIST_JOB_TYPES = ("recipient-import", "recipient-export", "doi-dispatch")

IMPORT_MODES = ("upsert", "add-only", "update-only", "replace")
# What a file can give each import type. Recipient files take any field name except the ones
# kept in their own columns or managed by campaign-sync; the other types know their fields.
RESERVED_FIELDS = ("status", "created_at", "updated_at", "list", "fields")
FILE_FIELDS = {
    "blocklist-import": ("pattern", "reason"),
    "unsubscriber-import": ("email", "list", "date", "reason"),
    "bounce-import": ("email", "type", "date"),
}
# The fields every row needs, from a column or a default; the first identifies the row and
# comes from the file only.
REQUIRED_FIELDS = {
    "recipient-import": ("email",),
    "blocklist-import": ("pattern",),
    "unsubscriber-import": ("email",),
    "bounce-import": ("email", "type"),
}
# The field read as a date, per import type.
DATE_FIELD = {
    "recipient-import": "doi_confirmed_at",
    "unsubscriber-import": "date",
    "bounce-import": "date",
}
BOUNCE_TYPES = ("hard", "soft")
FIELD_NAME = re.compile(r"[a-z_][a-z0-9_]*\Z")
# The names of OpenPGP files: a source named so is decrypted.
ENCRYPTED_SUFFIXES = (".pgp", ".gpg", ".asc")
# An OpenPGP key's full fingerprint (v4: 40 hex digits, v5: 64), as compared once spaces are
# removed and letters upper-cased.
FINGERPRINT = re.compile(r"[0-9A-F]{40}(?:[0-9A-F]{24})?\Z")
JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
# Names the store's own runs are recorded under (no configured job can have one: a job's
# name starts with a letter or digit). `history NAME` shows them.
FORGET_JOB = "@forget"
RESERVED_JOBS = (FORGET_JOB,)


@dataclass(frozen=True)
class Limit:
    """A count (``50``) or a share of the data rows (``1%``)."""

    value: float
    percent: bool

    def allowed(self, total: int) -> int:
        return int(total * self.value / 100) if self.percent else int(self.value)

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.percent else str(int(self.value))


@dataclass(frozen=True)
class ServerConfig:
    name: str
    type: str  # ssh | local
    path: Path | None = None  # local: the folder remote paths are relative to
    host: str = ""
    port: int = 22
    user: str | None = None
    key_file: Path | None = None
    key_passphrase: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    known_hosts: Path | None = None
    host_key: str | None = None
    protocol: str = "scp"  # scp | sftp
    timeout: float = 30.0
    retries: int = 3
    agent: bool = False
    # ssh: the server this one is reached through (`jump: NAME`), itself perhaps through another.
    jump: ServerConfig | None = None


@dataclass(frozen=True)
class SmtpConfig:
    host: str = "localhost"
    port: int = 25
    starttls: bool = False
    ssl: bool = False
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    sender: str = "campaign-sync@localhost"
    timeout: float = 30.0
    # AUTH without TLS, for a relay on this machine only (checked again on the socket).
    allow_plaintext_auth: bool = False


@dataclass(frozen=True)
class NotifyConfig:
    to: tuple[str, ...] = ()
    webhook: str | None = None
    webhook_timeout: float = 10.0
    # Apprise URLs (chat and push services); each is a credential, so never in a repr.
    urls: tuple[str, ...] = field(default=(), repr=False)
    urls_timeout: float = 10.0


@dataclass(frozen=True)
class PgpConfig:
    """OpenPGP: the GnuPG home folder with the keys, and the secret key's passphrase."""

    home: Path
    passphrase: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class BounceLimits:
    hard_limit: int = 3
    soft_limit: int = 10


@dataclass(frozen=True)
class Retention:
    """How many days run records and rejects files are kept (see docs/configuration.md for
    why these defaults: a year of history plus a month, and one monthly job's cycle)."""

    runs_days: int = 400
    rejects_days: int = 30


@dataclass(frozen=True)
class CsvFormat:
    delimiter: str = ","
    quotechar: str = '"'
    encoding: str = "utf-8"
    date_format: str | None = None  # strptime format; None means ISO 8601
    header: bool = True  # imports: false when the file's first line is already data


@dataclass(frozen=True)
class SourceConfig:
    server: str
    path: str
    missing: str = "fail"  # fail | skip
    after: str = "keep"  # keep | delete | archive
    archive_dir: str | None = None
    member: str | None = None  # the member of a .zip to import (path template)
    decrypt: bool = False  # OpenPGP whatever the name says (.pgp, .gpg and .asc always are)
    verify: str | None = None  # the fingerprint whose signature the file must carry
    # A pattern path: after a file's failed run, stop (the rest wait) or go on with the next.
    on_error: str = "stop"  # stop | continue


@dataclass(frozen=True)
class TargetConfig:
    server: str
    path: str
    atomic: bool = True
    encrypt_to: str | None = None  # OpenPGP: the partner key's fingerprint
    sign: bool = False  # OpenPGP: signed with the keyring's own key


@dataclass(frozen=True)
class JobConfig:
    name: str
    type: str
    list: str | None = None
    schedule: str | None = None
    notify: tuple[str, ...] = ()
    notify_urls: tuple[str, ...] = field(default=(), repr=False)  # Apprise URLs of this job
    # imports
    source: SourceConfig | None = None
    columns: dict[str, str] = field(default_factory=dict)  # header: field
    # format.header false: the field of each column in order (None: the column is skipped)
    column_fields: tuple[str | None, ...] = ()
    defaults: dict[str, str] = field(default_factory=dict)  # field: value for empty cells
    mode: str = "upsert"
    max_rejects: Limit | None = None
    max_removals: Limit | None = None
    # imports and exports
    format: CsvFormat = field(default_factory=CsvFormat)
    # exports
    target: TargetConfig | None = None
    fields: tuple[str, ...] = ()
    include: str = "active"  # active | all
    changes_only: bool = False
    # dispatch
    mailings: Path | None = None
    rate: float | None = None  # messages per second

    @property
    def column_labels(self) -> builtins.list[str]:  # `list` is a field here
        """The header of a file without one: each column's field, `column N` if skipped."""
        return [name or f"column {i}" for i, name in enumerate(self.column_fields, 1)]

    @property
    def kind(self) -> str:
        """`import`, `export` or `dispatch`: the command that runs this job."""
        if self.type in IMPORT_TYPES:
            return "import"
        if self.type in EXPORT_TYPES:
            return "export"
        return "dispatch"


# A PostgreSQL store is named by a URL with one of these schemes; anything else is a file.
STORE_URL_SCHEMES = ("postgresql://", "postgres://")
# A PostgreSQL store's schema: a plain identifier, never quoted by the operator.
SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")


# serve.token: RFC 6750's token characters, long enough not to be guessed.
API_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]{16,}=*")
API_TOKEN_MIN_LENGTH = 16


@dataclass(frozen=True)
class ServeConfig:
    token: str | None = field(default=None, repr=False)  # the API's bearer token


@dataclass(frozen=True)
class Config:
    path: Path
    store: str
    work_dir: Path
    timezone: str | None
    log_file: Path | None
    servers: dict[str, ServerConfig]
    smtp: SmtpConfig | None
    notify: NotifyConfig
    bounces: BounceLimits
    jobs: dict[str, JobConfig]
    store_schema: str = "public"  # a PostgreSQL store's schema
    pgp: PgpConfig | None = None
    serve: ServeConfig = field(default_factory=ServeConfig)
    retention: Retention = field(default_factory=Retention)

    def job(self, name: str) -> JobConfig:
        try:
            return self.jobs[name]
        except KeyError:
            known = ", ".join(sorted(self.jobs)) or "none"
            raise ConfigError(
                f"no job named '{name}' (configured jobs: {known})", path=str(self.path)
            ) from None
