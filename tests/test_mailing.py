"""Mailings: choosing the latest .eml by Date header, and personalising it per recipient."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from campaign_sync.errors import InputError
from campaign_sync.mailing import latest_mailing, load_mailing, personalise, render

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
