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


def test_validate_ok_and_json(ws: Workspace) -> None:
    done = ws.run("--json", "validate")
    assert done.returncode == 0
    assert json.loads(done.stdout) == {"config": str(ws.config), "valid": True, "problems": []}


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


# --------------------------------------------------------------------------- columns, defaults

COLUMN_PROBLEMS = """\
store: store.db
timezone: UTC
servers:
  s: {type: local, path: inbox}
jobs:
  status: {type: recipient-import, list: l, columns: {Status: status, E-Mail: email}}
  two-emails: {type: recipient-import, list: l, columns: {E-Mail: email, Mail: email}}
  same-header: {type: recipient-import, list: l, columns: {E-Mail: email, " e-mail ": x}}
  no-email: {type: recipient-import, list: l, columns: {Vorname: first_name}}
  bad-name: {type: recipient-import, list: l, columns: {E-Mail: email, Ort: Stadt}}
  bounce-field: {type: bounce-import, columns: {Adresse: email, Art: kind}}
  bounce-no-type: {type: bounce-import, columns: {Adresse: email}}
  list-with-header: {type: recipient-import, list: l, columns: [email]}
  map-no-header: {type: recipient-import, list: l, format: {header: false}, columns: {E: email}}
  no-columns: {type: bounce-import, format: {header: false}}
  list-twice: {type: recipient-import, list: l, format: {header: false}, columns: [email, ~, email]}
  list-no-email: {type: unsubscriber-import, format: {header: false}, columns: [list, ~]}
  hardd: {type: bounce-import, defaults: {type: hardd}}
  no-date: {type: unsubscriber-import, defaults: {date: yesterday}}
  fmt-date: {type: bounce-import, format: {date_format: "%d.%m.%Y"}, defaults: {date: 2024-05-01}}
  email-default: {type: recipient-import, list: l, defaults: {email: x@y.de}}
  status-default: {type: recipient-import, list: l, defaults: {status: active}}
  unknown-default: {type: blocklist-import, defaults: {list: news}}
  doi-default: {type: recipient-import, list: l, defaults: {doi_confirmed_at: "31.02.2024"}}
  yes-default: {type: recipient-import, list: l, defaults: {vip: yes}}
  export-header:
    {type: recipient-export, list: l, target: {server: s, path: /x}, format: {header: false}}
"""


def test_columns_and_defaults_that_would_fail_every_run_are_config_errors(ws: Workspace) -> None:
    # Everything that can be known without the file: managed, repeated and unknown fields,
    # what each import type needs from columns and defaults, default values checked like
    # cells, header lines against columns lists. validate finds each, naming its key.
    ws.write_config(text=COLUMN_PROBLEMS)
    done = ws.run("validate")
    assert done.returncode == 2
    at = f"{ws.config}: At 'jobs."
    assert done.stdout.splitlines() == [
        f"{at}status.columns.Status': 'status' is managed by campaign-sync, not by an import; "
        "use another name",
        f"{at}two-emails.columns.Mail': 'Mail' and 'E-Mail' both give the field 'email'; map "
        "only one of them",
        f"{at}same-header.columns. e-mail ': ' e-mail ' and 'E-Mail' are the same header "
        "(headers match whatever their case and outer spaces); keep one",
        f"{at}no-email.columns': no column gives 'email' (columns map Vorname → first_name); "
        "with columns, only mapped headers are read: map the file's one too, e.g. columns: "
        "{E-Mail: email, Vorname: first_name}",
        f"{at}bad-name.columns.Ort': 'Stadt' is not a field name (lower-case letters, digits, _)",
        f"{at}bounce-field.columns.Art': a bounce-import job knows the fields email, type, "
        "date, not 'kind'",
        f"{at}bounce-no-type.columns': no column gives 'type' (columns map Adresse → email); "
        "with columns, only mapped headers are read: map the file's one too, e.g. columns: "
        "{Type: type, Adresse: email}, or defaults: {type: …}",
        f"{at}list-with-header.columns': a list of columns is for a file without a header "
        "line: set format.header: false, or map the header's names (e.g. columns: "
        "{E-Mail: email})",
        f"{at}map-no-header.columns': format.header is false, so there are no header names to "
        "map: give a list with the field of each column, ~ to skip one (e.g. columns: "
        "[email, ~, city])",
        f"{at}no-columns.columns': required when format.header is false: a list with the field "
        "of each column, ~ to skip one (e.g. columns: [email, first_name, ~, last_name])",
        f"{at}list-twice.columns[2]': 'email' is already the field of column 1; a field comes "
        "from one column (~ skips a column)",
        f"{at}list-no-email.columns': no column gives 'email' (columns list list, ~); name the "
        "column that holds it in the list, e.g. columns: [email, list, ~]",
        f"{at}hardd.defaults.type': 'hardd' is not a bounce type (hard or soft)",
        f"{at}no-date.defaults.date': 'yesterday' is not an ISO 8601 date (e.g. 2024-05-01 or "
        "2024-05-01T10:00)",
        f"{at}fmt-date.defaults.date': '2024-05-01' is not a date in the job's "
        "format.date_format %d.%m.%Y",
        f"{at}email-default.defaults.email': 'email' identifies each row; it cannot have a default",
        f"{at}status-default.defaults.status': 'status' is managed by campaign-sync, not by an "
        "import; use another name",
        f"{at}unknown-default.defaults.list': a blocklist-import job knows the fields pattern, "
        "reason, not 'list'",
        f"{at}doi-default.defaults.doi_confirmed_at': '31.02.2024' is not an ISO 8601 date "
        "(e.g. 2024-05-01 or 2024-05-01T10:00)",
        f"{at}yes-default.defaults.vip': expected text or a number, got true/false; put it in "
        "quotes",
        f"{at}export-header.format.header': unknown key (allowed here: delimiter, quotechar, "
        "encoding, date_format)",
    ]
    # Every other command stops at the first, with the exit code of a config error.
    done = ws.run("list-jobs")
    assert (done.returncode, done.stderr) == (
        2,
        f"campaign-sync: error: {at}status.columns.Status': 'status' is managed by "
        "campaign-sync, not by an import; use another name\n",
    )


def test_header_false_columns_list_and_defaults(tmp_path: Path) -> None:
    text = """\
jobs:
  plain:
    type: recipient-import
    list: news
    format: {header: "false", delimiter: ";"}
    columns: [email, first_name, ~, last_name]
    defaults: {source: partner-x, zip: 1234, doi_confirmed_at: 2024-05-01}
  hard:
    type: bounce-import
    columns: {Adresse: email}
    defaults: {type: " HARD ", date: "01.05.2024"}
    format: {date_format: "%d.%m.%Y"}
  one-list: {type: unsubscriber-import, defaults: {list: news}}
"""
    loaded = config.load(str(write(tmp_path, text)), env={})
    plain = loaded.jobs["plain"]
    assert (plain.format.header, plain.columns) == (False, {})
    assert plain.column_fields == ("email", "first_name", None, "last_name")
    assert plain.column_labels == ["email", "first_name", "column 3", "last_name"]
    assert plain.defaults == {
        "source": "partner-x",
        "zip": "1234",
        "doi_confirmed_at": "2024-05-01",
    }
    assert loaded.jobs["hard"].defaults == {"type": "hard", "date": "01.05.2024"}
    assert loaded.jobs["hard"].format.header is True
    assert loaded.jobs["one-list"].defaults == {"list": "news"}
