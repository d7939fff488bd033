"""Config: every key of the full example is accepted; every mistake names file, key path, reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Workspace

from campaign_sync import config
from campaign_sync.config.validate_servers import is_loopback
from campaign_sync.errors import ConfigError

FULL_EXAMPLE = """\
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
    loaded = config.load(str(write(tmp_path, FULL_EXAMPLE)), env=ENV)
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
    text = FULL_EXAMPLE.replace("${SMTP_PASSWORD}", "${SMTP_PASSWORD:-fallback}")
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
    path = write(tmp_path, FULL_EXAMPLE.replace(*change))
    with pytest.raises(ConfigError) as caught:
        config.load(str(path), env=ENV)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_unset_variable_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, FULL_EXAMPLE)
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
    # The usual example writes a {date} path inside a {…} mapping unquoted: say what to do.
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


# --------------------------------------------------------------------------- hostile config files


def _problem(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    """The message loading the config fails with (`validate` shows the same first line)."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        config.load(str(path), env=env or ENV)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    return message.removeprefix(f"{path}: ")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://u:p4ss@127.0.0.1:80a/hook", "the port must be a number from 1 to 65535"),
        ("https://u:p4ss@127.0.0.1:99999/hook", "the port must be a number from 1 to 65535"),
        ("https://hooks.example.com:0/hook", "the port must be a number from 1 to 65535"),
        ("https://u:p4ss/hook", "the port must be a number from 1 to 65535"),  # no host: no echo
        ("ftp://hooks.example.com/hook", "the scheme must be http or https"),
        ("hooks.example.com/hook", "the scheme must be http or https"),
        ("https:///hook", "it has no host"),
        ("https://u:p4ss@/hook", "it has no host"),
        ("https://hooks example.com/hook", "it contains a space or a control character"),
        ("https://hooks.example.com/ho\x7fok", "it contains a space or a control character"),
        ("https://hooks.example.com/\u200bhook", "it contains a space or a control character"),
        ("https://[::1/hook", "it is malformed (check the [ ] around an IPv6 address)"),
        ("https://hooks<x>.example.com/", "the host is not a valid host name or IP address"),
    ],
)
def test_webhook_url_is_checked_in_full_without_quoting_it(
    tmp_path: Path, url: str, problem: str
) -> None:
    text = FULL_EXAMPLE.replace("https://hooks.example.com/campaign", json.dumps(url))
    message = _problem(tmp_path, text)
    assert message == f"At 'notify.webhook': expected an http:// or https:// URL: {problem}"


@pytest.mark.parametrize(
    "url",
    [
        "https://u:p4ss@127.0.0.1:8080/hook",
        "HTTP://hooks.example.com/hook?token=1#x",
        "https://[::1]:8443/hook",
        "https://bücher.example/hook",
        "https://hooks.example.com:/hook",
    ],
)
def test_good_webhook_urls_pass(tmp_path: Path, url: str) -> None:
    text = FULL_EXAMPLE.replace("https://hooks.example.com/campaign", json.dumps(url))
    assert config.load(str(write(tmp_path, text)), env=ENV).notify.webhook == url


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("store: a.db\n[1, 2]: {a: 1}\n", "line 2: a key at the top level is a list"),
        ("? {a: 1}\n: x\n", "line 1: a key at the top level is a mapping"),
        (
            "jobs:\n  ? {a: 1}\n  : {type: recipient-export}\n",
            "At 'jobs': line 2: a key is a mapping",
        ),
        ("servers:\n  [1, 2]: {type: local}\n", "At 'servers': line 2: a key is a list"),
        ("smtp:\n  [host]: h\n", "At 'smtp': line 2: a key is a list"),
        (
            "jobs:\n  x:\n    columns: {[E-Mail]: email}\n",
            "At 'jobs.x.columns': line 3: a key is a list",
        ),
        (
            "jobs:\n  x:\n    fields: [a, {? [b]: c}]\n",
            "At 'jobs.x.fields[1]': line 3: a key is a list",
        ),
        ("k: &k [1]\njobs: {*k : x}\n", "At 'jobs': line 1: a key is a list"),  # through an alias
    ],
)
def test_a_list_or_mapping_as_key_is_one_config_error_at_any_depth(
    tmp_path: Path, text: str, problem: str
) -> None:
    assert _problem(tmp_path, text) == (
        f"{problem}; keys must be names or plain values (quote the key if it is meant as text)"
    )


@pytest.mark.parametrize(
    ("names", "where", "kind"),
    [
        ("jobs:\n  2024: {type: recipient-export}\n", "jobs.2024", "int"),
        ("jobs:\n  yes: {type: recipient-export}\n", "jobs.True", "true/false"),
        ("jobs:\n  ~: {type: recipient-export}\n", "jobs.None", "nothing"),
        ("servers:\n  2026-01-01: {type: local, path: x}\n", "servers.2026-01-01", "date"),
        ("servers:\n  .nan: {type: local, path: x}\n", "servers.nan", "float"),
    ],
)
def test_a_name_that_yaml_reads_as_no_text_must_be_quoted(
    tmp_path: Path, names: str, where: str, kind: str
) -> None:
    message = _problem(tmp_path, names)
    assert message == f"At '{where}': a name must be text, got {kind}; put it in quotes"


TIMEOUT = "out of range (0.1..3600)"
FINITE = "expected a finite number, got"
NUMBER_CASES = [
    # (text in FULL_EXAMPLE, its replacement, key path, problem)
    ("timeout: 30", "timeout: .nan", "servers.campaign.timeout", f"{FINITE} nan"),
    ("timeout: 30", "timeout: .inf", "servers.campaign.timeout", f"{FINITE} inf"),
    ("timeout: 30", "timeout: -.inf", "servers.campaign.timeout", f"{FINITE} -inf"),
    ("timeout: 30", "timeout: 1.0e999", "servers.campaign.timeout", f"{FINITE} inf"),
    ("timeout: 30", "timeout: '${T}'", "servers.campaign.timeout", f"{FINITE} nan"),
    ("timeout: 30", "timeout: 0", "servers.campaign.timeout", f"0 is {TIMEOUT}"),
    ("timeout: 30", "timeout: 3601", "servers.campaign.timeout", f"3601 is {TIMEOUT}"),
    (
        "timeout: 30",
        "timeout: 1" + "0" * 40,
        "servers.campaign.timeout",
        f"a number of 41 digits is {TIMEOUT}",
    ),
    ("  from: campaign", "  timeout: .nan\n  from: campaign", "smtp.timeout", f"{FINITE} nan"),
    (
        "  webhook: https",
        "  webhook_timeout: .inf\n  webhook: https",
        "notify.webhook_timeout",
        f"{FINITE} inf",
    ),
    (
        "  webhook: https",
        "  webhook_timeout: 0.01\n  webhook: https",
        "notify.webhook_timeout",
        f"0.01 is {TIMEOUT}",
    ),
    ("retries: 3", "retries: 21", "servers.campaign.retries", "21 is out of range (0..20)"),
    (
        "    port: 22",
        "    port: 65536",
        "servers.campaign.port",
        "65536 is out of range (1..65535)",
    ),
    ("    port: 22", "    port: '²'", "servers.campaign.port", "expected a whole number, got text"),
    ("  port: 25", "  port: .nan", "smtp.port", "expected a whole number, got float"),
    ("hard_limit: 3", "hard_limit: 0", "bounces.hard_limit", "0 is out of range (1..1000)"),
    ("soft_limit: 10", "soft_limit: 1001", "bounces.soft_limit", "1001 is out of range (1..1000)"),
    (
        "soft_limit: 10",
        "soft_limit: .inf",
        "bounces.soft_limit",
        "expected a whole number, got float",
    ),
    (
        "mailings: mailings/newsletter",
        "mailings: m\n    rate: .nan",
        "jobs.welcome.rate",
        f"{FINITE} nan",
    ),
    (
        "mailings: mailings/newsletter",
        "mailings: m\n    rate: 1001",
        "jobs.welcome.rate",
        "1001 is out of range (0.001..1000)",
    ),
    (
        "mailings: mailings/newsletter",
        "mailings: m\n    rate: yes",
        "jobs.welcome.rate",
        "expected a number, got true/false",
    ),
    (
        "max_rejects: 1%",
        "max_rejects: .nan",
        "jobs.newsletter-import.max_rejects",
        "expected a count or a percentage like 1%, got nan",
    ),
    (
        "max_rejects: 1%",
        "max_rejects: 1" + "0" * 400,
        "jobs.newsletter-import.max_rejects",
        "a count must be at most 1000000000 (or a percentage)",
    ),
    (
        "max_removals: 10%",
        "max_removals: 2000000000",
        "jobs.newsletter-import.max_removals",
        "a count must be at most 1000000000 (or a percentage)",
    ),
]


@pytest.mark.parametrize(("old", "new", "key", "problem"), NUMBER_CASES)
def test_every_number_is_finite_and_in_its_range(
    tmp_path: Path, old: str, new: str, key: str, problem: str
) -> None:
    assert old in FULL_EXAMPLE
    text = FULL_EXAMPLE.replace(old, new)
    assert _problem(tmp_path, text, env={**ENV, "T": "nan"}) == f"At '{key}': {problem}"


def test_a_value_yaml_cannot_build_is_a_config_error(tmp_path: Path) -> None:
    for value, kind in (
        ("2024-13-45", "date"),
        ("!!int x", "whole number"),
        ("!!float x", "number"),
    ):
        assert _problem(tmp_path, f"store: a.db\nretention: {value}\n") == (
            f"line 2: not a valid {kind}; quote the value if it is meant as text"
        )


def _alias_bomb(levels: int) -> str:
    """The 'billion laughs': each level a list of nine aliases of the level before."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for previous, name in zip("abcdefghijklmno", "bcdefghijklmnop"[: levels - 1], strict=False):
        lines.append(f"{name}: &{name} [{','.join([f'*{previous}'] * 9)}]")
    return "\n".join(lines) + "\n"


ALIAS_BOMB = (
    "{}: YAML aliases (*name) would expand this file by more than 100000 values, the limit; "
    "use fewer or smaller aliases, or write the repeated parts out"
)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (_alias_bomb(6), ALIAS_BOMB.format("FILE")),
        (
            # Few values, much text: a long string repeated through aliases.
            f"s: &s '{'x' * 100_000}'\nl: &l [{','.join(['*s'] * 101)}]\nm: [*l, *l, *l, *l]\n",
            ALIAS_BOMB.format("FILE").replace("100000 values", "10000000 characters"),
        ),
        (
            "a: &a [*a]\n",
            "FILE: line 1: this value contains an alias to itself; an alias may only repeat a "
            "value, not refer to the one it is part of",
        ),
        (
            "a: &a {b: [1, *a]}\n",
            "FILE: line 1: this value contains an alias to itself; an alias may only repeat a "
            "value, not refer to the one it is part of",
        ),
        (
            "a: " + "[" * 101 + "]" * 101 + "\n",
            "FILE: the file nests more than 100 levels deep (aliases expanded); flatten it",
        ),
        (
            "a: &a " + "[" * 60 + "]" * 60 + "\nb: " + "[" * 50 + "*a" + "]" * 50 + "\n",
            "FILE: the file nests more than 100 levels deep (aliases expanded); flatten it",
        ),
    ],
)
def test_aliases_and_nesting_are_bounded(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        config.load(str(path), env={})
    assert str(caught.value) == problem.replace("FILE", str(path))
    assert config.problems(str(path)) == [str(caught.value)]


def test_ordinary_aliases_and_merge_keys_still_work(tmp_path: Path) -> None:
    text = FULL_EXAMPLE.replace(
        "  inbox:\n    type: local\n    path: /srv/campaign/inbox\n",
        "  inbox: &local\n    type: local\n    path: /srv/campaign/inbox\n"
        "  outbox:\n    <<: *local\n    path: /srv/campaign/outbox\n",
    )
    loaded = config.load(str(write(tmp_path, text)), env=ENV)
    assert loaded.servers["outbox"].path == Path("/srv/campaign/outbox")
    assert loaded.servers["outbox"].type == "local"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        # ws.run's timeout (120 s) bounds this case; before the bound it took minutes and GBs.
        (_alias_bomb(9), ALIAS_BOMB.format("FILE")),
        (
            "store: store.db\njobs:\n  ? {a: 1}\n  : {type: recipient-export}\n",
            "FILE: At 'jobs': line 3: a key is a mapping; keys must be names or plain values "
            "(quote the key if it is meant as text)",
        ),
        (
            'store: store.db\nnotify: {webhook: "https://u:p4ss@127.0.0.1:80a/hook"}\n',
            "FILE: At 'notify.webhook': expected an http:// or https:// URL: "
            "the port must be a number from 1 to 65535",
        ),
    ],
    ids=["alias-bomb", "mapping-as-key", "webhook-port"],
)
def test_every_command_refuses_a_hostile_config_in_one_line(
    ws: Workspace, text: str, problem: str
) -> None:
    ws.write_config(text=text)
    message = problem.replace("FILE", str(ws.config))
    done = ws.run("validate")
    assert (done.returncode, done.stdout, done.stderr) == (2, message + "\n", "")
    done = ws.run("check")
    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        f"campaign-sync: error: {message}\n",
    )
    done = ws.run("--json", "list-jobs")
    assert done.returncode == 2
    assert json.loads(done.stdout) == {"error": message, "exit_code": 2}


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
    path = write(tmp_path, FULL_EXAMPLE.replace("  allow_plaintext_auth: true\n", ""))
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
    assert is_loopback(host) is expected


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
