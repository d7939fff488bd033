"""Mailings: choosing the latest .eml by Date header, and personalising it per recipient."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from campaign_sync.dispatch.mailing import latest_mailing, load_mailing, personalise, render
from campaign_sync.errors import InputError

SENDER = "news@example.com"
VALID_DATE = "Thu, 01 Jan 2026 00:00:00 +0000"


def write_eml(
    folder: Path,
    name: str,
    *,
    date: str | None = "Mon, 02 Nov 2026 10:00:00 +0100",
    subject: str = "Welcome {{first_name}}",
    text: str = "Hello {{first_name}} {{last_name}},\nyour address is {{email}}.\n",
    html: str | None = "<p>Hello <b>{{first_name}}</b> {{ nickname }}</p>",
    message_id: str | None = "<template-1@example.com>",
) -> Path:
    msg = EmailMessage()
    msg["From"] = "Newsletter <news@example.com>"
    msg["To"] = "placeholder@example.com"
    msg["Subject"] = subject
    if date is not None:
        msg["Date"] = VALID_DATE  # the real value goes in as bytes below, even if invalid
    if message_id is not None:
        msg["Message-ID"] = message_id
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    data = msg.as_bytes()
    if date is not None:
        data = data.replace(f"Date: {VALID_DATE}".encode(), f"Date: {date}".encode())
    path.write_bytes(data)
    return path


def reparse(msg: EmailMessage) -> EmailMessage:
    """The message as a receiver would parse it from the wire form."""
    data = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


# --------------------------------------------------------------------------- choosing


def test_latest_is_chosen_by_date_header_not_by_name_or_mtime(tmp_path: Path) -> None:
    write_eml(tmp_path, "z-old.eml", date="Sun, 01 Nov 2026 09:00:00 +0000", subject="old")
    write_eml(tmp_path, "a-new.eml", date="Sun, 01 Nov 2026 11:00:00 +0100", subject="new")
    # 10:00 UTC vs 09:00 UTC: a-new is newer although its name sorts first and it was
    # written before z-old2 below.
    write_eml(tmp_path, "z-old2.eml", date="Sun, 01 Nov 2026 09:30:00 +0000", subject="mid")
    (tmp_path / "notes.txt").write_text("not a mailing")

    mailing = latest_mailing(tmp_path)

    assert mailing.name == "a-new.eml"
    assert mailing.subject == "new"
    assert mailing.mailing_id == "<template-1@example.com>"


def test_mailing_without_message_id_is_identified_by_checksum(tmp_path: Path) -> None:
    path = write_eml(tmp_path, "m.eml", message_id=None)
    mailing = load_mailing(path)
    assert len(mailing.mailing_id) == 64


def test_no_mailing_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"holds no \.eml file"):
        latest_mailing(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        latest_mailing(tmp_path / "missing")


@pytest.mark.parametrize(
    ("date", "problem"),
    [
        (None, "no Date header"),
        ("next tuesday", "Date header 'next tuesday' is not an RFC 5322 date"),
    ],
)
def test_unusable_date_names_the_file(tmp_path: Path, date: str | None, problem: str) -> None:
    write_eml(tmp_path, "good.eml")
    bad = write_eml(tmp_path, "bad.eml", date=date)
    with pytest.raises(InputError) as info:
        latest_mailing(tmp_path)
    assert str(info.value) == f"mailing {bad}: {problem}" + (
        " (the latest mailing is chosen by it)" if date is None else ""
    )


def test_mailing_without_text_body_is_refused(tmp_path: Path) -> None:
    msg = EmailMessage()
    msg["Date"] = "Mon, 02 Nov 2026 10:00:00 +0100"
    msg.set_content(b"\x00\x01", maintype="application", subtype="octet-stream")
    (tmp_path / "bin.eml").write_bytes(msg.as_bytes())
    with pytest.raises(InputError, match="no text/plain or text/html body"):
        latest_mailing(tmp_path)


# --------------------------------------------------------------------------- rendering


def test_render_fills_escapes_and_empties_unknown_placeholders() -> None:
    fields = {"first_name": 'Ann & <Bo> "x"', "count": 3, "none": None}
    template = "{{first_name}}|{{ FIRST_NAME }}|{{count}}|{{none}}|{{missing}}|{{bad name}}|{x}"
    assert render(template, fields, html_part=False) == ('Ann & <Bo> "x"|Ann & <Bo> "x"|3||||{x}')
    assert render("{{first_name}}", fields, html_part=True) == (
        "Ann &amp; &lt;Bo&gt; &quot;x&quot;"
    )


def test_personalise_sets_envelope_headers_and_fills_every_text_part(tmp_path: Path) -> None:
    mailing = load_mailing(write_eml(tmp_path, "m.eml"))
    fields = {"email": "anna@example.com", "first_name": "Anna <3", "last_name": "Ärger"}

    msg = reparse(
        personalise(
            mailing,
            recipient="anna@example.com",
            fields=fields,
            sender=SENDER,
            message_id="<ours-1@example.com>",
        )
    )

    assert msg["To"] == "anna@example.com"
    assert msg["From"] == "Newsletter <news@example.com>"
    assert msg["Message-ID"] == "<ours-1@example.com>"
    assert msg["Subject"] == "Welcome Anna <3"
    assert msg["MIME-Version"] == "1.0"
    assert msg["Date"] and msg["Date"] != "Mon, 02 Nov 2026 10:00:00 +0100"
    assert msg.get_content_type() == "multipart/alternative"
    plain = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert plain is not None and html is not None
    assert plain.get_content().replace("\r\n", "\n") == (
        "Hello Anna <3 Ärger,\nyour address is anna@example.com.\n"
    )
    assert html.get_content().strip() == "<p>Hello <b>Anna &lt;3</b> </p>"
    assert plain["MIME-Version"] is None  # only on the message itself
    assert all(not part.defects for part in msg.walk())
    # the template itself is untouched for the next recipient
    assert mailing.template["To"] == "placeholder@example.com"
    assert "{{first_name}}" in str(mailing.template["Subject"])


def test_field_value_cannot_inject_headers(tmp_path: Path) -> None:
    mailing = load_mailing(write_eml(tmp_path, "m.eml", html=None))
    msg = personalise(
        mailing,
        recipient="x@example.com",
        fields={"first_name": "Eve\r\nBcc: victim@example.com"},
        sender=SENDER,
        message_id="<ours-2@example.com>",
    )
    parsed = reparse(msg)
    assert parsed["Bcc"] is None
    assert parsed["Subject"] == "Welcome Eve Bcc: victim@example.com"
    assert parsed.get_content_type() == "text/plain"


# --------------------------------------------------------------------------- charsets


def write_raw(folder: Path, name: str, head: str, body: bytes) -> Path:
    """A mailing written byte for byte (the email package would fix what these tests break)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    header = f"From: a@example.com\nSubject: x\nDate: {VALID_DATE}\nMIME-Version: 1.0\n{head}"
    path.write_bytes(header.encode("ascii") + b"\n" + body)
    return path


@pytest.mark.parametrize(
    ("head", "body", "problem"),
    [
        (
            "Content-Type: text/plain; charset=x-bogus\n",
            b"Hi\n",
            "part 1 (text/plain) declares unknown charset 'x-bogus'",
        ),
        (
            "Content-Type: text/plain; charset=hex\n",
            b"Hi\n",
            "part 1 (text/plain) declares 'hex', not a text charset",
        ),
        (
            "Content-Type: text/plain\n",
            b"Gr\xfc\xdfe {{x}}\n",
            "part 1 (text/plain) has 8-bit bytes but declares no charset",
        ),
        (
            'Content-Type: multipart/alternative; boundary="B"\n',
            b"--B\nContent-Type: text/plain; charset=utf-8\n\nok\n"
            b"--B\nContent-Type: text/html; charset=utf-8\n\n<p>Gr\xfc\xdfe</p>\n--B--\n",
            "part 3 (text/html) is not valid utf-8 text (byte 0xfc at offset 5 of the decoded "
            "part)",
        ),
    ],
)
def test_text_that_cannot_be_decoded_fails_loading_naming_file_and_part(
    tmp_path: Path, head: str, body: bytes, problem: str
) -> None:
    path = write_raw(tmp_path, "m.eml", head, body)
    with pytest.raises(InputError) as info:
        latest_mailing(tmp_path)
    assert str(info.value) == f"mailing {path}: {problem}"


def test_legacy_charsets_are_decoded_and_html_meta_charset_follows(tmp_path: Path) -> None:
    path = write_raw(
        tmp_path,
        "m.eml",
        "Content-Type: text/html; charset=windows-1252\nContent-Transfer-Encoding: 8bit\n",
        b'<html><head><meta charset="windows-1252">'
        b'<META http-equiv="Content-Type" content="text/html; charset=Windows-1252">'
        b"</head><p>Hi {{first_name}} \x80</p></html>\n",
    )
    msg = reparse(
        personalise(
            load_mailing(path),
            recipient="x@example.com",
            fields={"first_name": "Zoë"},
            sender=SENDER,
            message_id="<ours-3@example.com>",
        )
    )
    assert msg.get_content_charset() == "utf-8"
    assert msg.get_content().strip() == (
        '<html><head><meta charset="utf-8">'
        '<META http-equiv="Content-Type" content="text/html; charset=utf-8">'
        "</head><p>Hi Zoë €</p></html>"
    )


# --------------------------------------------------------------------------- attachments


def test_attached_messages_and_attachments_are_not_personalised(tmp_path: Path) -> None:
    inner = EmailMessage()
    inner["Subject"] = "fwd {{first_name}}"
    inner.set_content("inner {{first_name}}\n")
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg["Subject"] = "s"
    msg["Date"] = VALID_DATE
    msg.set_content("outer {{first_name}}\n")
    msg.add_attachment(inner)  # message/rfc822, Content-Disposition: attachment
    msg.add_attachment("notes {{first_name}}\n", filename="notes.txt")
    (tmp_path / "m.eml").write_bytes(msg.as_bytes())

    sent = reparse(
        personalise(
            load_mailing(tmp_path / "m.eml"),
            recipient="x@example.com",
            fields={"first_name": "Zoë"},
            sender=SENDER,
            message_id="<ours-4@example.com>",
        )
    )

    body = sent.get_body(preferencelist=("plain",))
    assert body is not None and body.get_content().replace("\r\n", "\n") == "outer Zoë\n"
    forwarded, notes = list(sent.iter_attachments())
    attached = forwarded.get_content()
    assert attached["Subject"] == "fwd {{first_name}}"
    assert attached.get_content().replace("\r\n", "\n") == "inner {{first_name}}\n"
    assert notes.get_content().replace("\r\n", "\n") == "notes {{first_name}}\n"


# --------------------------------------------------------------------------- headers


def test_placeholders_in_other_headers_are_filled_safely(tmp_path: Path) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(
        b'From: "{{first_name}} Shop" <a@example.com>\n'
        b"Subject: Hi {{first_name}}\n"
        b"List-Unsubscribe: <https://ex.com/u?e={{email}}&n={{first_name}}>\n"
        b"Reply-To: reply+{{email}}@example.com\n"
        b"X-Campaign: for {{first_name}}\n"
        b"Date: " + VALID_DATE.encode() + b"\n"
        b"Sender: old@example.com\n"
        b"Resent-To: old2@example.com\n"
        b"Resent-Date: " + VALID_DATE.encode() + b"\n"
        b"Authentication-Results: mx.example.com; dkim=pass\n"
        b"Received-SPF: pass\n"
        b"ARC-Seal: i=1; a=rsa-sha256; b=xxx\n"
        b"ARC-Message-Signature: i=1; b=yyy\n"
        b"DKIM-Signature: v=1; b=zzz\n"
        b"Content-Type: text/plain; charset=utf-8\n\nHallo\n"
    )
    fields = {"first_name": 'Zoë "Q" <i>, x@evil.example', "email": "x+y@example.com"}
    msg = reparse(
        personalise(
            load_mailing(path),
            recipient="x+y@example.com",
            fields=fields,
            sender=SENDER,
            message_id="<ours-5@example.com>",
        )
    )

    [sender] = msg["From"].addresses
    assert (sender.display_name, sender.addr_spec) == (
        'Zoë "Q" <i>, x@evil.example Shop',
        "a@example.com",
    )
    assert msg["List-Unsubscribe"] == (
        "<https://ex.com/u?e=x%2By%40example.com&n=Zo%C3%AB%20%22Q%22%20%3Ci%3E%2C%20x%40evil.example>"
    )
    [reply] = msg["Reply-To"].addresses
    assert reply.addr_spec == "reply+x%2By%40example.com@example.com"
    assert msg["X-Campaign"] == 'for Zoë "Q" <i>, x@evil.example'
    for name in (
        "Sender",
        "Resent-To",
        "Resent-Date",
        "Authentication-Results",
        "Received-SPF",
        "ARC-Seal",
        "ARC-Message-Signature",
        "DKIM-Signature",
    ):
        assert msg[name] is None, name
    assert all(not part.defects for part in msg.walk())


def test_control_characters_never_reach_a_header(tmp_path: Path) -> None:
    mailing = load_mailing(write_eml(tmp_path, "m.eml", html=None))
    msg = personalise(
        mailing,
        recipient="x@example.com",
        fields={"first_name": "A\x00B\x07C\x1bD\x7fE\tF"},
        sender=SENDER,
        message_id="<ours-6@example.com>",
    )
    data = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
    head = data.split(b"\r\n\r\n", 1)[0]
    assert not any(byte < 0x20 and byte not in b"\r\n" or byte == 0x7F for byte in head)
    assert reparse(msg)["Subject"] == "Welcome ABCDE F"


@pytest.mark.parametrize(
    "value",
    [
        "=?utf-8?q?a=0D=0AReply-To:_e@evil.example=0D=0A=0D=0AClick_http://evil?=",
        "=?utf-8?b?AA==?=",
        "x =?us-ascii?q?=0A=0ABcc:_victim@example.com?= y",
    ],
)
def test_encoded_words_in_a_value_stay_literal_text(tmp_path: Path, value: str) -> None:
    mailing = load_mailing(write_eml(tmp_path, "m.eml", html=None))
    msg = personalise(
        mailing,
        recipient="x@example.com",
        fields={"first_name": value},
        sender=SENDER,
        message_id="<ours-7@example.com>",
    )
    data = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
    head, _, body = data.partition(b"\r\n\r\n")
    assert not any(byte < 0x20 and byte not in b"\r\n" or byte == 0x7F for byte in head)
    parsed = reparse(msg)
    assert parsed["Reply-To"] is None and parsed["Bcc"] is None
    assert parsed["Subject"] == "Welcome " + value.replace("=?", "= ?")
    assert body.startswith(b"Hello ")  # the headers end where the template's end


@pytest.mark.parametrize(
    "value",
    [
        "?utf-8?q?a=0D=0AB?=",  # the template's "=" opens an encoded word: a line break
        "?utf-8?q?=E2=80=A8X-Evil:_1?=",  # a Unicode line separator
    ],
)
def test_a_header_the_template_and_a_value_break_together_is_refused(
    tmp_path: Path, value: str
) -> None:
    path = write_raw(
        tmp_path,
        "m.eml",
        "Content-Type: text/plain; charset=utf-8\nX-Tag: Hi ={{code}}\n",
        b"Hi\n",
    )
    with pytest.raises(ValueError, match="X-Tag header would hold a control character"):
        personalise(
            load_mailing(path),
            recipient="x@example.com",
            fields={"code": value},
            sender=SENDER,
            message_id="<ours-8@example.com>",
        )


def test_format_flowed_survives_re_encoding(tmp_path: Path) -> None:
    path = write_raw(
        tmp_path,
        "m.eml",
        "Content-Type: text/plain; charset=iso-8859-1; format=flowed; delsp=yes\n",
        b"Gr\xfc\xdfe {{first_name}} \nmore\n",
    )
    msg = reparse(
        personalise(
            load_mailing(path),
            recipient="x@example.com",
            fields={"first_name": "Zoë"},
            sender=SENDER,
            message_id="<ours-7@example.com>",
        )
    )
    assert (msg.get_param("format"), msg.get_param("delsp")) == ("flowed", "yes")
    assert msg.get_content_charset() == "utf-8"
    assert msg.get_content().replace("\r\n", "\n") == "Grüße Zoë \nmore\n"
