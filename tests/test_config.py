"""Config: every key of SPEC's example is accepted; every mistake names file, key path, reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Workspace

from campaign_sync import config
from campaign_sync.errors import ConfigError

SPEC_EXAMPLE = """\
store: campaign-sync.db
work_dir: var
timezone: Europe/Berlin
servers:
  campaign:
    type: ssh
    host: upload.example.net
    port: 22
    user: client-4711
    key_file: id_test
    key_passphrase: ${CAMPAIGN_KEY_PASSPHRASE}
    known_hosts: known_hosts
    host_key: SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
    protocol: scp
    timeout: 30
    retries: 3
  inbox:
    type: local
    path: /srv/campaign/inbox
smtp:
  host: localhost
  port: 25
  starttls: false
  allow_plaintext_auth: true
  user: mailer
  password: ${SMTP_PASSWORD}
  from: campaign-sync@example.com
notify:
  to: [crm-ops@example.com]
  webhook: https://hooks.example.com/campaign
bounces:
  hard_limit: 3
  soft_limit: 10
jobs:
  newsletter-import:
    type: recipient-import
    list: newsletter
    schedule: daily 02:30
    source:
      server: campaign
      path: /import/newsletter_{date:%Y%m%d}.csv
      missing: fail
      after: archive
      archive_dir: /import/done
    format: {delimiter: ";", quotechar: '"', encoding: utf-8}
    columns: {E-Mail: email, Vorname: first_name, Nachname: last_name, DOI: doi_confirmed_at}
    mode: upsert
    max_rejects: 1%
    max_removals: 10%
    notify: [newsletter-team@example.com]
  newsletter-export:
    type: recipient-export
    list: newsletter
    schedule: weekly mon 06:00
    target: {server: campaign, path: "/export/newsletter_{date:%Y%m%d}.csv.gz"}
    fields: [email, first_name, last_name, updated_at]
    include: active
    changes_only: false
  welcome:
    type: doi-dispatch
    list: newsletter
    schedule: hourly :15
    mailings: mailings/newsletter
"""

ENV = {"CAMPAIGN_KEY_PASSPHRASE": "s3cret-pass", "SMTP_PASSWORD": "mail-pass"}


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "id_test").write_text("not really a key")
    path = tmp_path / "campaign-sync.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_spec_example_loads_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    loaded = config.load(str(write(tmp_path, SPEC_EXAMPLE)), env=ENV)
    server = loaded.servers["campaign"]
    assert server.key_passphrase == "s3cret-pass"
    assert server.key_file == tmp_path / "id_test"
    assert loaded.store == str(tmp_path / "campaign-sync.db")
    assert loaded.smtp is not None and loaded.smtp.password == "mail-pass"
    job = loaded.jobs["newsletter-import"]
    assert job.format.delimiter == ";"
    assert str(job.max_rejects) == "1%"
    assert job.max_rejects is not None and job.max_rejects.allowed(1000) == 10
    assert loaded.jobs["welcome"].mailings == tmp_path / "mailings/newsletter"
    assert "s3cret-pass" not in repr(loaded)  # secrets never show in a repr


def test_default_value_interpolation(tmp_path: Path) -> None:
    text = SPEC_EXAMPLE.replace("${SMTP_PASSWORD}", "${SMTP_PASSWORD:-fallback}")
    loaded = config.load(str(write(tmp_path, text)), env={"CAMPAIGN_KEY_PASSPHRASE": "x"})
    assert loaded.smtp is not None and loaded.smtp.password == "fallback"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("    retries: 3\n", "    retries: 3\n    retires: 4\n"),
            "At 'servers.campaign.retires': unknown key",
        ),
        (("    port: 22\n", "    port: twenty\n"), "At 'servers.campaign.port': expected a whole"),
        (
            ("target: {server: campaign,", "target: {server: elsewhere,"),
            "At 'jobs.newsletter-export.target.server': no server named 'elsewhere'",
        ),
        (
            ("schedule: daily 02:30", "schedule: daily 25:00"),
            "At 'jobs.newsletter-import.schedule': 'daily 25:00' is not a valid schedule",
        ),
        (
            ("key_file: id_test", "key_file: missing_key"),
            "At 'servers.campaign.key_file': cannot read key file",
        ),
        (
            ("  password: ${SMTP_PASSWORD}", "  password: 0123"),
            "At 'smtp.password': expected text, got int; put it in quotes",
        ),
        (
            ("mode: upsert", "mode: merge"),
            "At 'jobs.newsletter-import.mode': 'merge' is not one of",
        ),
        (("max_rejects: 1%", "max_rejects: lots"), "expected a count or a percentage"),
        (("timezone: Europe/Berlin", "timezone: Mars/Olympus"), "unknown time zone 'Mars/Olympus'"),
        (
            ("{E-Mail: email,", "{E-Mail: E-Mail,"),
            "At 'jobs.newsletter-import.columns.E-Mail': 'E-Mail' is not a field name",
        ),
    ],
)
def test_mistakes_name_file_key_path_and_reason(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    path = write(tmp_path, SPEC_EXAMPLE.replace(*change))
    with pytest.raises(ConfigError) as caught:
        config.load(str(path), env=ENV)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_unset_variable_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, SPEC_EXAMPLE)
    with pytest.raises(ConfigError) as caught:
        config.load(str(path), env={"SMTP_PASSWORD": "x"})
    assert str(caught.value) == (
        f"{path}: At 'servers.campaign.key_passphrase': environment variable "
        "CAMPAIGN_KEY_PASSPHRASE is not set (set it, or write ${CAMPAIGN_KEY_PASSPHRASE:-default})"
    )


def test_duplicate_key_and_bad_yaml_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="line 2: key 'store' is given twice"):
        config.load(str(write(tmp_path, "store: a.db\nstore: b.db\n")), env={})
    with pytest.raises(ConfigError, match="invalid YAML"):
        config.load(str(write(tmp_path, "jobs: [unclosed\n")), env={})
    # SPEC's own example writes a {date} path inside a {…} mapping unquoted: say what to do.
    with pytest.raises(ConfigError, match=r"line 1: .*quote values that contain \{ or \}"):
        config.load(str(write(tmp_path, "target: {path: /x_{date:%Y}.csv}\n")), env={})


def test_validate_lists_every_problem_and_exits_2(ws: Workspace) -> None:
    ws.write_config(
        text=ws.config.read_text()
        .replace("schedule: daily 02:30", "schedule: at noon")
        .replace("path: /export/newsletter.csv", "path: /export/x.csv, colour: red")
    )
    done = ws.run("validate")
    assert done.returncode == 2
    problems = done.stdout.splitlines()
    assert len(problems) == 2, done.stdout
    assert "At 'jobs.newsletter-import.schedule'" in problems[0]
    assert "At 'jobs.newsletter-export.target.colour': unknown key" in problems[1]


VALIDATE_MANY = """\
store: store.db
bogus: 1
servers:
  s1: {type: ssh, host: h, key_file: /nonexistent/key, port: "abc"}
jobs:
  a-import:
    type: recipient-import
    list: l
    source: {server: nosuch, path: /x.csv, missing: maybe}
    mode: merge
    max_rejects: lots
    columns: {E-Mail: Email}
  b-export:
    type: recipient-export
    list: l
    target: {server: s1, path: /x.csv, colour: red, atomic: perhaps}
    fields: [email, "Bad Field"]
    include: some
"""


def test_validate_reports_every_problem_of_a_section_not_only_its_first(ws: Workspace) -> None:
    ws.write_config(text=VALIDATE_MANY)
    done = ws.run("validate")
    assert done.returncode == 2
    where = [line.split("': ")[0].split("At '")[1] for line in done.stdout.splitlines()]
    assert where == [
        "bogus",
        "servers.s1.key_file",
        "servers.s1.port",
        "jobs.a-import.source.server",
        "jobs.a-import.source.missing",
        "jobs.a-import.columns.E-Mail",
        "jobs.a-import.mode",
        "jobs.a-import.max_rejects",
        "jobs.b-export.target.colour",
        "jobs.b-export.target.atomic",
        "jobs.b-export.fields[1]",
        "jobs.b-export.include",
    ]
    # Loading (every other command) still stops at the first problem.
    assert ws.run("list-jobs").stderr.startswith(f"campaign-sync: error: {ws.config}: At 'bogus'")


def assert_valid_json(ws: Workspace, warnings: list[str]) -> None:
    done = ws.run("--json", "validate")
    assert done.returncode == 0
    assert json.loads(done.stdout) == {
        "config": str(ws.config),
        "valid": True,
        "problems": [],
        "warnings": warnings,
    }


def test_validate_ok_and_json(ws: Workspace) -> None:
    assert_valid_json(ws, [])


def test_config_error_exits_2_without_traceback(ws: Workspace) -> None:
    ws.write_config(text="jobs:\n  x:\n    type: teleport\n")
    done = ws.run("list-jobs")
    assert done.returncode == 2
    assert "At 'jobs.x.type': 'teleport' is not one of" in done.stderr
    assert "Traceback" not in done.stderr


def test_config_is_found_through_the_environment(ws: Workspace, tmp_path: Path) -> None:
    import subprocess

    done = subprocess.run(
        ["campaign-sync", "--json", "list-jobs"],
        capture_output=True,
        text=True,
        env={"PATH": __import__("os").environ["PATH"], "CAMPAIGN_SYNC_CONFIG": str(ws.config)},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 2


# --------------------------------------------------------------------------- SMTP AUTH and TLS

SMTP_NO_TLS = (
    "At 'smtp.starttls': required when smtp.user is set, or the password would be sent "
    "unencrypted: set starttls: true (or ssl: true for port 465); for a relay on this "
    "machine, allow_plaintext_auth: true"
)


def smtp_block(tmp_path: Path, lines: str) -> Path:
    return write(tmp_path, f"smtp:\n  from: a@example.com\n{lines}jobs: {{}}\n")


def test_spec_example_without_the_opt_in_is_refused(tmp_path: Path) -> None:
    # The specification's example logs in to localhost:25 without TLS: that needs the opt-in.
    path = write(tmp_path, SPEC_EXAMPLE.replace("  allow_plaintext_auth: true\n", ""))
    with pytest.raises(ConfigError) as caught:
        config.load(str(path), env=ENV)
    assert str(caught.value) == f"{path}: {SMTP_NO_TLS}"


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ("  host: mail.example.com\n  user: mailer\n  password: long-enough-1\n", SMTP_NO_TLS),
        ("  host: mail.example.com\n  user: mailer\n", SMTP_NO_TLS),  # AUTH, empty password
        (
            "  host: mail.example.com\n  user: mailer\n  allow_plaintext_auth: true\n",
            "At 'smtp.allow_plaintext_auth': only for a relay on this machine (localhost, "
            "127.0.0.1, ::1), not 'mail.example.com'; use starttls: true (or ssl: true) instead",
        ),
        (
            "  host: 10.0.0.1\n  starttls: true\n  allow_plaintext_auth: true\n",
            "At 'smtp.allow_plaintext_auth': only for a relay on this machine (localhost, "
            "127.0.0.1, ::1), not '10.0.0.1'; use starttls: true (or ssl: true) instead",
        ),
        ("  user: mailer\n  allow_plaintext_auth: maybe\n", "expected true or false"),
    ],
)
def test_smtp_auth_without_tls_is_refused(tmp_path: Path, lines: str, problem: str) -> None:
    path = smtp_block(tmp_path, lines)
    with pytest.raises(ConfigError) as caught:
        config.load(str(path), env={})
    assert str(caught.value).startswith(f"{path}: At 'smtp.")
    assert problem in str(caught.value)
    assert config.problems(str(path)) == [str(caught.value)]


@pytest.mark.parametrize(
    "lines",
    [
        "  host: mail.example.com\n  starttls: true\n  user: mailer\n",
        "  host: mail.example.com\n  port: 465\n  ssl: true\n  user: mailer\n",
        "  host: localhost\n  user: mailer\n  allow_plaintext_auth: true\n",
        "  host: 127.0.0.1\n  user: mailer\n  allow_plaintext_auth: yes\n",
        "  host: 127.8.9.10\n  user: mailer\n  allow_plaintext_auth: true\n",
        "  host: '::1'\n  user: mailer\n  allow_plaintext_auth: true\n",
        "  host: mail.example.com\n",  # no user: no AUTH, nothing to protect
    ],
)
def test_smtp_auth_settings_that_keep_the_password_private(tmp_path: Path, lines: str) -> None:
    path = smtp_block(tmp_path, lines)
    assert config.problems(str(path)) == []
    loaded = config.load(str(path), env={})
    assert loaded.smtp is not None
    assert loaded.smtp.allow_plaintext_auth == ("allow_plaintext_auth" in lines)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("LOCALHOST.", True),
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("localhost.example.com", False),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("0.0.0.0", False),
        ("mail.example.com", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert config.is_loopback(host) is expected


# --------------------------------------------------------------------------- weak secrets

WEAK = (
    "{path}: At '{key}': weak secret (fewer than 8 characters): too short to be masked in "
    "output, so it is not; use a longer one"
)


def test_validate_warns_about_weak_secrets_and_still_exits_0(ws: Workspace) -> None:
    text = ws.config.read_text().replace(
        "    type: local\n    path: inbox\n",
        "    type: local\n    path: inbox\n"
        "  partner: {type: ssh, host: h.example.net, password: '2026',\n"
        "            key_passphrase: pass-long-enough}\n",
    )
    text += (
        "smtp:\n  host: localhost\n  user: mailer\n  password: e\n  allow_plaintext_auth: true\n"
        "notify:\n  webhook: https://ops:p@hooks.example.com/x\n"
    )
    ws.write_config(text=text)
    expected = [
        WEAK.format(path=ws.config, key=key)
        for key in ("smtp.password", "servers.partner.password", "notify.webhook")
    ]
    done = ws.run("validate")
    assert (done.returncode, done.stdout) == (0, f"{ws.config}: OK\n")
    assert done.stderr.splitlines() == [f"campaign-sync: warning: {w}" for w in expected]
    assert_valid_json(ws, expected)
