"""`campaign-sync init`: a commented starter config that validates and runs as it is.

Local folders stand in for the partner's server (`inbox` for files to import, `outbox` for
exports), so an operator can try every job type before any SSH server or mail relay exists,
then replace the parts one at a time. Nothing that exists is ever overwritten.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..core.private import create_private_file, make_private_folders
from ..errors import UsageError

CONFIG_NAME = "campaign-sync.yaml"

CONFIG = """\
# campaign-sync configuration, written by `campaign-sync init`.
# Every key is described in docs/configuration.md. After each change run:
#   campaign-sync --config campaign-sync.yaml validate
# Relative paths are relative to this file.

store: var/campaign-sync.db   # the SQLite store (created on the first run, owner-only)
work_dir: var                 # staging copies, rejects files and locks (owner-only)
# timezone: Europe/Berlin     # for schedules and {date}; the machine's zone when not set
# log_file: var/campaign-sync.log

servers:
  # Two folders on this machine stand in for the partner's server. When the partner's SCP
  # or SFTP server is ready, replace them, e.g.:
  #   partner: {type: ssh, host: sftp.example.net, user: campaign,
  #             key_file: ~/.ssh/campaign, known_hosts: ~/.ssh/known_hosts, protocol: sftp}
  inbox:
    type: local
    path: inbox     # partners drop files to import here
  outbox:
    type: local
    path: outbox    # exports are written here

smtp:               # the dispatch job and the notices send through this relay
  host: localhost
  port: 25
  from: campaign-sync@localhost
  # user: campaign          # a login needs starttls: true (or ssl: true)
  # password: ${SMTP_PASSWORD}
  # starttls: true

notify:
  to: []            # who gets a notice after each run, e.g. [ops@example.com]
  # webhook: https://hooks.example.com/campaign-sync   # the run as JSON, POSTed

jobs:
  newsletter-import:             # campaign-sync import newsletter-import
    type: recipient-import
    list: newsletter
    schedule: daily 02:30
    source:
      server: inbox
      path: "/newsletter_{date:%Y%m%d}.csv"   # today's file, e.g. newsletter_20261205.csv
      missing: skip              # no file today is a skipped run, not a failure
      after: archive             # move an imported file into archive_dir
      archive_dir: /archive
    format: {delimiter: ",", encoding: utf-8}
    columns:                     # header in the file: field in the store
      email: email
      first_name: first_name
      last_name: last_name
      doi_confirmed_at: doi_confirmed_at
    mode: upsert                 # add and update; `replace` also removes who is missing
    max_rejects: 10%             # fail the run (and change nothing) above this

  newsletter-export:             # campaign-sync export newsletter-export
    type: recipient-export
    list: newsletter
    schedule: weekly mon 06:00
    target: {server: outbox, path: "/newsletter_{date:%Y%m%d}.csv"}
    fields: [email, first_name, last_name]
    include: active              # not unsubscribed, blocklisted or bounced

  welcome:                       # campaign-sync dispatch welcome
    type: doi-dispatch           # the list's latest mailing, once, to who confirmed since
    list: newsletter
    schedule: hourly :15
    mailings: mailings/newsletter
"""

MAILING = """\
From: Newsletter <newsletter@localhost>
Subject: Welcome, {{first_name}}!
Date: Mon, 16 Nov 2026 09:00:00 +0100
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

Hello {{first_name}} {{last_name}},

thank you for confirming your subscription to our newsletter.
"""

FOLDERS = ("inbox", "inbox/archive", "outbox", "mailings/newsletter")
FILES = {CONFIG_NAME: CONFIG, "mailings/newsletter/welcome.eml": MAILING}


def write_starter(folder: Path) -> list[Path]:
    """Write the starter config, its folders and a mailing into `folder`; the paths made.

    Refuses (UsageError, nothing written) when any of the files exists already.
    """
    for name in FILES:
        if os.path.lexists(folder / name):
            raise UsageError(
                f"{folder / name} exists already; init never overwrites: choose an empty "
                "folder (campaign-sync init DIR)"
            )
    made = []
    try:
        for name in FOLDERS:
            make_private_folders(folder / name)  # 0700, like every folder campaign-sync makes
        for name, text in FILES.items():
            path = folder / name
            # Created 0600 (the config will hold the servers and the relay, often secrets),
            # exclusively: never through a name that exists already, a link included.
            if not create_private_file(path):
                raise OSError(errno.EEXIST, "File exists", str(path))
            with open(path, "w", encoding="utf-8") as out:
                out.write(text)
            made.append(path)
    except OSError as exc:
        raise UsageError(f"cannot write into {folder}: {exc.strerror}") from None
    return made
