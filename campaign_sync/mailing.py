"""The mailings of a doi-dispatch job: .eml files in a folder, personalised per recipient.

The latest mailing is the one with the newest Date header (not the newest file: copying a
folder changes modification times, a Date header travels with the file). A file that cannot
be read or has no usable Date fails the run, because it might have been the newest one.

Personalisation fills `{{field}}` placeholders in the Subject and in the text/plain and
text/html parts; values are HTML-escaped in HTML parts, and a placeholder whose field the
recipient does not have renders empty, never as the raw `{{…}}`.
"""

from __future__ import annotations

import copy
import datetime
import email
import email.policy
import hashlib
import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parsedate_to_datetime
from pathlib import Path

from .errors import InputError

# `{{ name }}`; anything between the braces counts, so that a misspelt or unknown field
# also renders empty rather than reaching a recipient as raw template syntax.
PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")

# Headers of the stored file that would be wrong on the message we send: trace and
# signature headers belong to the copy that was saved, the rest we set per recipient.
_REPLACED_HEADERS = (
    "To",
    "Cc",
    "Bcc",
    "Message-ID",
    "Date",
    "Return-Path",
    "Received",
    "Delivered-To",
    "X-Original-To",
    "DKIM-Signature",
)
# Kept across re-encoding a text part (set_content clears every Content-* header).
_KEPT_PART_HEADERS = ("Content-Disposition", "Content-ID", "Content-Language", "Content-Location")


@dataclass(frozen=True)
class Mailing:
    path: Path
    date: datetime.datetime
    template: EmailMessage
    mailing_id: str  # the file's own Message-ID, or its SHA-256 when it has none

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def subject(self) -> str:
        return str(self.template.get("Subject", ""))


def latest_mailing(folder: Path) -> Mailing:
    """The mailing in `folder` with the newest Date header; InputError if there is none."""
    if not folder.is_dir():
        raise InputError(f"mailings folder {folder} does not exist or is not a folder")
    files = sorted(
        p for p in folder.iterdir() if p.suffix.lower() == ".eml" and not p.name.startswith(".")
    )
    if not files:
        raise InputError(f"no mailing: {folder} holds no .eml file")
    mailings = [load_mailing(path) for path in files]
    # Equal dates: the last file name wins, so the choice never depends on directory order.
    return max(mailings, key=lambda m: (m.date, m.name))


def load_mailing(path: Path) -> Mailing:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"mailing {path}: cannot read it: {exc.strerror or exc}") from None
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    date = _date(parsed, path)
    if parsed.get_body(preferencelist=("html", "plain")) is None:
        raise InputError(f"mailing {path}: no text/plain or text/html body")
    message_id = str(parsed.get("Message-ID", "")).strip()
    return Mailing(path, date, parsed, message_id or hashlib.sha256(data).hexdigest())


def _date(message: EmailMessage, path: Path) -> datetime.datetime:
    # The raw text: the parsed Date header object renders an unparseable date as ''.
    raw = next((value for name, value in message.raw_items() if name.lower() == "date"), None)
    if raw is None:
        raise InputError(f"mailing {path}: no Date header (the latest mailing is chosen by it)")
    try:
        moment = parsedate_to_datetime(str(raw))
    except (TypeError, ValueError, IndexError):
        moment = None
    if moment is None:
        shown = " ".join(str(raw).split())[:60]
        raise InputError(f"mailing {path}: Date header '{shown}' is not an RFC 5322 date")
    if moment.tzinfo is None:  # "-0000": UTC, origin unknown
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment


# --------------------------------------------------------------------------- personalisation


def render(template: str, fields: Mapping[str, object], *, html_part: bool) -> str:
    """Fill the placeholders of `template` from `fields` (names are compared lower-case)."""

    def value(match: re.Match[str]) -> str:
        found = fields.get(match.group(1).lower())
        text = "" if found is None else str(found)
        return html.escape(text, quote=True) if html_part else text

    return PLACEHOLDER.sub(value, template)


def new_message_id(sender: str) -> str:
    """A Message-ID of our own, under the sender's domain."""
    return make_msgid(domain=sender.rpartition("@")[2] or None)


def personalise(
    mailing: Mailing,
    *,
    recipient: str,
    fields: Mapping[str, object],
    sender: str,
    message_id: str,
) -> EmailMessage:
    """The message for one recipient: To, a fresh Date and Message-ID, filled placeholders."""
    msg = copy.deepcopy(mailing.template)
    subject = msg.get("Subject")
    for name in (*_REPLACED_HEADERS, "Subject"):
        del msg[name]
    if msg.get("From") is None:
        msg["From"] = sender
    msg["To"] = recipient
    if subject is not None:
        # A field value must not smuggle a line break (another header) into the Subject.
        msg["Subject"] = " ".join(render(str(subject), fields, html_part=False).split())
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = message_id
    for part in msg.walk():
        _personalise_part(part, fields)
    if msg.get("MIME-Version") is None:
        msg["MIME-Version"] = "1.0"
    return msg


def _personalise_part(part: EmailMessage, fields: Mapping[str, object]) -> None:
    if part.is_multipart() or part.is_attachment() or part.get_content_maintype() != "text":
        return
    subtype = part.get_content_subtype()
    if subtype not in ("plain", "html"):
        return
    filled = render(part.get_content(), fields, html_part=subtype == "html")
    kept = [(name, part[name]) for name in _KEPT_PART_HEADERS if part.get(name) is not None]
    is_root = part.get("MIME-Version") is not None
    # Quoted-printable keeps non-ASCII text 7-bit clean for servers without 8BITMIME.
    cte = None if filled.isascii() else "quoted-printable"
    part.set_content(filled, subtype=subtype, charset="utf-8", cte=cte)
    if not is_root:
        del part["MIME-Version"]  # set_content adds it; it belongs on the message only
    for name, value in kept:
        part[name] = value
