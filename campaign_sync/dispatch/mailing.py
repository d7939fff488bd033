"""The mailings of a doi-dispatch job: .eml files in a folder, personalised per recipient.

The latest mailing is the one with the newest Date header (not the newest file: copying a
folder changes modification times, a Date header travels with the file). A file that cannot
be read or has no usable Date fails the run, because it might have been the newest one.

Every text/plain and text/html part is decoded once, strictly, when the mailing is loaded: an
unknown charset, 8-bit bytes without a charset or bytes invalid in the declared charset fail
the run (naming the file and the part) instead of reaching recipients as U+FFFD. Parts are
sent as UTF-8; an HTML `<meta charset>` is rewritten to match.

Personalisation fills `{{field}}` placeholders in the headers and in the text/plain and
text/html parts; values are HTML-escaped in HTML parts, and a placeholder whose field the
recipient does not have renders empty, never as the raw `{{…}}`. Attachments (and attached
messages, whole) are sent as they are. In a header a value is one line without control
characters; inside `<…>` (a URI) it is percent-encoded, inside a quoted display name its
quotes are escaped, and in an address it cannot add an address of its own.
"""

from __future__ import annotations

import codecs
import copy
import datetime
import email
import email.policy
import hashlib
import html
import re
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parsedate_to_datetime
from pathlib import Path

from ..errors import InputError, one_line

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
    "Sender",
    "Authentication-Results",
    "Received-SPF",
)
# Whole families of such headers, by name prefix (lower-case).
_REPLACED_PREFIXES = ("resent-", "arc-")
# Set per recipient or by re-encoding the parts: never rendered.
_NOT_RENDERED = ("mime-version",)
# Headers holding addresses: a value in them is quoted or encoded to stay inside its address.
_ADDRESS_HEADERS = frozenset(
    (
        "from",
        "reply-to",
        "mail-reply-to",
        "mail-followup-to",
        "errors-to",
        "return-receipt-to",
        "disposition-notification-to",
    )
)
# C0 controls and DEL (whitespace among them is collapsed to a space before this).
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")
# What no header value may hold once set (a tab is whitespace of an unfolded header).
_BREAKING = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# The charset of an HTML <meta charset=…> or <meta http-equiv … content="…; charset=…">.
_META_CHARSET = re.compile(r"""(<meta\b[^>]*?\bcharset\s*=\s*["']?)([^"'\s;/>]+)""", re.IGNORECASE)
# Kept across re-encoding a text part (set_content clears every Content-* header).
_KEPT_TEXT_PARAMS = ("format", "delsp")
_KEPT_PART_HEADERS = ("Content-Disposition", "Content-ID", "Content-Language", "Content-Location")


@dataclass(frozen=True)
class Mailing:
    path: Path
    date: datetime.datetime
    template: EmailMessage  # text parts already decoded and re-encoded as UTF-8
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
    for number, part in _text_parts(parsed):
        _set_text(part, _decode(part, path, number))
    message_id = str(parsed.get("Message-ID", "")).strip()
    return Mailing(path, date, parsed, message_id or hashlib.sha256(data).hexdigest())


def _text_parts(message: EmailMessage) -> Iterator[tuple[int, EmailMessage]]:
    """(number, part) of the text/plain and text/html parts that are personalised.

    Numbered as `walk()` counts all parts, from 1 for the message itself. Attachments and
    message/* parts (a forwarded message) are skipped with everything inside them.
    """
    number = 0

    def visit(part: EmailMessage) -> Iterator[tuple[int, EmailMessage]]:
        nonlocal number
        number += 1
        if part.get_content_maintype() == "message" or (
            part.is_attachment() and part is not message
        ):
            number += sum(1 for _ in part.walk()) - 1  # keep the numbering of walk()
            return
        if part.is_multipart():
            for child in part.iter_parts():
                assert isinstance(child, EmailMessage)
                yield from visit(child)
        elif part.get_content_type() in ("text/plain", "text/html"):
            yield number, part

    yield from visit(message)


def _decode(part: EmailMessage, path: Path, number: int) -> str:
    """The text of a part, decoded strictly; InputError naming the file and the part."""
    where = f"mailing {path}: part {number} ({part.get_content_type()})"
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    charset = part.get_param("charset")
    if not isinstance(charset, str) or not charset.strip():
        if not data.isascii():
            raise InputError(f"{where} has 8-bit bytes but declares no charset")
        return data.decode("ascii")
    charset = charset.strip()
    try:
        codecs.lookup(charset)
    except LookupError:
        raise InputError(f"{where} declares unknown charset {one_line(repr(charset))}") from None
    try:
        return data.decode(charset)
    except LookupError:  # a codec that is no text encoding (hex, rot13, …)
        shown = one_line(repr(charset))
        raise InputError(f"{where} declares {shown}, not a text charset") from None
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{where} is not valid {one_line(charset)} text (byte 0x{data[exc.start]:02x} at "
            f"offset {exc.start} of the decoded part)"
        ) from None


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
    for name in _REPLACED_HEADERS:
        del msg[name]
    _render_headers(msg, fields)
    if msg.get("From") is None:
        msg["From"] = sender
    msg["To"] = recipient
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = message_id
    for _, part in _text_parts(msg):
        html_part = part.get_content_subtype() == "html"
        _set_text(part, render(part.get_content(), fields, html_part=html_part))
    if msg.get("MIME-Version") is None:
        msg["MIME-Version"] = "1.0"
    return msg


# --------------------------------------------------------------------------- headers


def _render_headers(msg: EmailMessage, fields: Mapping[str, object]) -> None:
    """Drop the stale trace headers and fill the placeholders of the others, in place."""
    items = []
    for name, value in msg.items():
        lower = name.lower()
        if lower.startswith(_REPLACED_PREFIXES):
            continue
        text = str(value)
        if lower.startswith("content-") or lower in _NOT_RENDERED or not PLACEHOLDER.search(text):
            items.append((name, value))
        else:
            items.append((name, render_header(text, fields, address=lower in _ADDRESS_HEADERS)))
    for name in {name for name, _ in msg.items()}:
        del msg[name]
    for name, value in items:
        msg[name] = value
    # The email package decodes RFC 2047 words in what it is given: whatever a value
    # smuggled in that way, no header may end up holding a line break or control character.
    for name, value in msg.items():
        text = str(value)
        if _BREAKING.search(text) or len(text.splitlines()) > 1:  # also U+2028, U+0085
            raise ValueError(f"the {name} header would hold a control character or line break")


def header_value(found: object) -> str:
    """A field value as it may appear in a header: one line, no control characters, and no
    `=?` that could open an RFC 2047 encoded word (which the email package would decode,
    control characters and line breaks included)."""
    text = "" if found is None else str(found)
    return _CONTROLS.sub("", " ".join(text.split())).replace("=?", "= ?")


def render_header(template: str, fields: Mapping[str, object], *, address: bool) -> str:
    """Fill the placeholders of one header value (already decoded), by where each one stands.

    Inside `<…>` the value is percent-encoded (a URI or an address); inside a quoted string
    its quotes and backslashes are escaped. In an address header, elsewhere, a placeholder
    in an address is percent-encoded and one in a display name becomes a quoted string, so
    no value can add or change an address.
    """
    out: list[str] = []
    quoted = angle = escaped = False
    position = 0
    for match in PLACEHOLDER.finditer(template):
        for char in template[position : match.start()]:
            if escaped:
                escaped = False
            elif quoted and char == "\\":
                escaped = True
            elif char == '"' and not angle:
                quoted = not quoted
            elif char == "<" and not quoted:
                angle = True
            elif char == ">" and not quoted:
                angle = False
        out.append(template[position : match.start()])
        position = match.end()
        value = header_value(fields.get(match.group(1).lower()))
        if angle or (address and not quoted and _in_addr_spec(template, match)):
            out.append(urllib.parse.quote(value, safe=""))
        elif quoted:
            out.append(value.replace("\\", "\\\\").replace('"', '\\"'))
        elif address:
            escaped_value = value.replace("\\", "\\\\").replace('"', '\\"')
            out.append(f'"{escaped_value}"' if value else "")
        else:
            out.append(value)
    out.append(template[position:])
    return " ".join("".join(out).split())


def _in_addr_spec(template: str, match: re.Match[str]) -> bool:
    """Whether an unquoted placeholder is part of a bare address (its word holds an @)."""
    stops = ' \t,;<>"()'
    start = match.start()
    while start > 0 and template[start - 1] not in stops:
        start -= 1
    end = match.end()
    while end < len(template) and template[end] not in stops:
        end += 1
    return "@" in PLACEHOLDER.sub("", template[start:end])


# --------------------------------------------------------------------------- parts


def _set_text(part: EmailMessage, text: str) -> None:
    """Replace the content of a text part with `text`, as UTF-8."""
    subtype = part.get_content_subtype()
    if subtype == "html":
        text = _META_CHARSET.sub(lambda m: m.group(1) + "utf-8", text)
    kept = [(name, part[name]) for name in _KEPT_PART_HEADERS if part.get(name) is not None]
    # format=flowed text stays flowed: quoted-printable keeps its trailing spaces.
    params = {
        key: value for key in _KEPT_TEXT_PARAMS if isinstance(value := part.get_param(key), str)
    }
    is_root = part.get("MIME-Version") is not None
    # Quoted-printable keeps non-ASCII text 7-bit clean for servers without 8BITMIME.
    cte = None if text.isascii() else "quoted-printable"
    part.set_content(text, subtype=subtype, charset="utf-8", cte=cte, params=params)
    if not is_root:
        del part["MIME-Version"]  # set_content adds it; it belongs on the message only
    for name, value in kept:
        part[name] = value
