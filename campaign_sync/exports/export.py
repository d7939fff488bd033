"""Writing store data to a private CSV staging file, ready to be uploaded.

This module decides what a file holds: which job type writes which columns, the header
(a recipient export's fields, its status column), which columns are addresses written
verbatim. The rows come from the store's exports module (store/<kind>/exports.py), which
streams them in chunks into the CSV writer (gzip-compressed for .gz targets, one zip member
for .zip targets, then OpenPGP-encrypted when the target says so): memory stays
flat whatever the list size, and both stores write the same bytes for the same content.

Recipient statuses are statuses.py's: ``include: active`` writes the active members only;
``removed`` shows up only in changes-only exports. The caller holds the export's read
snapshot (Store.begin_snapshot), whose watermark is the next changes-only run's start.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from ..config.model import BounceLimits, JobConfig, PgpConfig
from ..csvio.packing import staging_suffix, without_encryption, zip_member_name
from ..csvio.write import CsvWriter
from ..errors import ConfigError, InputError
from ..store.base import Store

# Columns of the recipients table itself; every other field lives in the JSON `fields`.
BUILTIN_FIELDS = ("email", "status", "doi_confirmed_at", "created_at", "updated_at")

# Columns holding an address (or a blocklist pattern): written exactly as stored, even
# when they start like a formula (csvio/write.py; docs/decisions.md says why).
ADDRESS_COLUMNS = ("email", "pattern")

# The small exports: their header, and the store function giving their rows. Header
# names follow each import's own, so a file can go back in.
SMALL_EXPORTS = {
    "blocklist-export": (["pattern", "reason", "created", "modified"], "blocklist_rows"),
    "unsubscriber-export": (["email", "list", "date", "reason"], "unsubscriber_rows"),
    "bounce-export": (["email", "hard_bounces", "soft_bounces", "last_bounce"], "bounce_rows"),
}


def write_export(
    store: Store,
    job: JobConfig,
    bounces: BounceLimits,
    staging: Path,
    *,
    changed_since: str | None,
    timezone: str | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    name: str | None = None,
    pgp: PgpConfig | None = None,
) -> int:
    """Write the job's rows to `staging`; returns the number of data rows written.

    `store` is the open Store (inside its export snapshot). `changed_since` is the
    watermark of the job's last successful run when the job is `changes_only` (None on its
    first run, which exports everything). `timezone` is the config's (None: the machine's
    zone): a job's `date_format` writes dates in it. `progress` is told the rows written so
    far after each chunk.

    `name` is the file's final name (default: the staging file's): one ending in .gz is
    gzipped, one ending in .zip is a zip archive with one member named after it
    (packing.zip_member_name). A job whose target has `encrypt_to` writes the CSV to a
    private file beside `staging` first and encrypts it into `staging` with `pgp`
    (ASCII-armoured when the name ends in .asc); the plaintext is removed.
    """
    final = name or staging.name
    target = job.target
    if target is None or not target.encrypt_to:
        return _write_csv(store, job, bounces, staging, final, changed_since, timezone, progress)
    from ..csvio.pgp import encrypt, private_sibling

    if pgp is None:
        raise ConfigError("encrypting needs the top-level `pgp` (home: the GnuPG folder)")
    inner = without_encryption(final)
    plain = private_sibling(staging, staging_suffix(inner))
    try:
        rows = _write_csv(store, job, bounces, plain, inner, changed_since, timezone, progress)
        encrypt(
            plain,
            staging,
            pgp,
            to=target.encrypt_to,
            sign=target.sign,
            armor=final.lower().endswith(".asc"),
            label=final,
        )
    finally:
        plain.unlink(missing_ok=True)
    return rows


def _write_csv(
    store: Store,
    job: JobConfig,
    bounces: BounceLimits,
    staging: Path,
    final: str,
    changed_since: str | None,
    timezone: str | None,
    progress: Callable[[int, int | None], None] | None,
) -> int:
    """Write the job's rows as CSV to `staging`, packed as the name `final` says."""
    sql: ModuleType = store.sql("exports")
    conn = store.conn
    if job.type != "recipient-export" and job.type not in SMALL_EXPORTS:
        raise InputError(f"{job.type} is not an export job type")
    lowered = final.lower()
    writer = CsvWriter(
        staging,
        job.format,
        compress=lowered.endswith(".gz"),
        zip_member=zip_member_name(final) if lowered.endswith(".zip") else None,
    )
    writer.progress = progress
    try:
        if job.type == "recipient-export":
            _write_recipients(sql, conn, job, bounces, writer, changed_since, timezone)
        else:
            header, function = SMALL_EXPORTS[job.type]
            writer.write_header(header, verbatim=ADDRESS_COLUMNS)
            for rows in getattr(sql, function)(conn, job, bounces, changed_since, timezone):
                writer.write_many(rows)
    finally:
        writer.close()
    return writer.rows


def _write_recipients(
    sql: ModuleType,
    conn: Any,
    job: JobConfig,
    bounces: BounceLimits,
    writer: CsvWriter,
    changed_since: str | None,
    timezone: str | None,
) -> None:
    assert job.list is not None, "validated: a recipient-export names its list"
    list_id = sql.list_id(conn, job.list)
    fields = _recipient_fields(sql, conn, job, list_id)
    # A changes-only job always has the status column, so its first (full) file and every
    # later file of changes share one layout.
    with_status = job.include == "all" or job.changes_only
    header = [*fields, "status"] if with_status and "status" not in fields else fields
    # Only the address: a recipient field may be called "pattern" and hold anything.
    writer.write_header(header, verbatim=("email",))
    if list_id is None:
        return  # the list was never imported into: an empty file with its header
    sql.write_recipients(conn, writer, job, bounces, list_id, changed_since, timezone)


def _recipient_fields(sql: ModuleType, conn: Any, job: JobConfig, list_id: int | None) -> list[str]:
    if job.fields:
        return list(job.fields)
    if list_id is None:
        return ["email"]
    # No fields configured: the address, then every field any member has, sorted.
    found = sql.field_names(conn, list_id)
    return ["email", *(key for key in found if key not in BUILTIN_FIELDS)]
