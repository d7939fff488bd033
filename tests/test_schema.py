"""`campaign-sync schema` and `campaign-sync validate` agree.

The schema printed by the installed CLI is a valid draft 2020-12 schema; it accepts every example
config (config/example*, and what `campaign-sync init` writes); for a table of broken configs
both it and `validate` (exit 2) refuse, for a table of unusual but valid ones both accept. The
few checks a JSON Schema cannot make are listed with their reasons, and the tests hold that they
still differ as described, so the list stays true. Finally the keys, choices and ranges that the
validator spells inline are read from its own messages and compared with the schema's.
"""

from __future__ import annotations

import copy
import datetime
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from campaign_sync.config import problems

REPO = Path(__file__).resolve().parent.parent
DELETE = object()  # a change that removes the key

BASE: dict[str, Any] = {
    "store": "store.db",
    "work_dir": "var",
    "timezone": "Europe/Berlin",
    "servers": {
        "inbox": {"type": "local", "path": "inbox"},
        "partner": {"type": "ssh", "host": "sftp.example.net", "user": "campaign"},
    },
    "smtp": {"host": "localhost", "port": 25, "from": "campaign-sync@example.com"},
    "notify": {"to": ["ops@example.com"], "webhook": "https://hooks.example.com/cs"},
    "bounces": {"hard_limit": 3, "soft_limit": 10},
    "jobs": {
        "recipients": {
            "type": "recipient-import",
            "list": "newsletter",
            "schedule": "daily 02:30",
            "source": {"server": "inbox", "path": "/in_{date:%Y%m%d}.csv"},
            "columns": {"E-Mail": "email", "Vorname": "first_name"},
            "mode": "upsert",
            "max_rejects": "10%",
        },
        "blocklist": {
            "type": "blocklist-import",
            "source": {"server": "inbox", "path": "/blocklist.csv"},
        },
        "unsubscribers": {
            "type": "unsubscriber-import",
            "source": {"server": "partner", "path": "/unsub.csv", "missing": "skip"},
        },
        "bounces": {
            "type": "bounce-import",
            "source": {"server": "partner", "path": "/bounces.csv"},
            "columns": {"Email": "email", "Type": "type"},
        },
        "export": {
            "type": "recipient-export",
            "list": "newsletter",
            "target": {"server": "partner", "path": "/out_{date}.csv"},
            "fields": ["email", "first_name"],
        },
        "blocklist-export": {
            "type": "blocklist-export",
            "target": {"server": "inbox", "path": "/blocklist-out.csv"},
        },
        "welcome": {"type": "doi-dispatch", "list": "newsletter", "mailings": "mailings"},
    },
}


@dataclass
class Case:
    """BASE with changes: {"jobs.export.include": "some"}; DELETE removes a key."""

    id: str
    changes: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    reason: str = ""

    def tree(self) -> dict[str, Any]:
        tree = copy.deepcopy(BASE)
        for path, value in self.changes.items():
            *parents, last = path.split(".")
            node = tree
            for part in parents:
                node = node.setdefault(part, {})
            if value is DELETE:
                del node[last]
            else:
                node[last] = value
        return tree

    def text(self) -> str:
        return yaml.safe_dump(self.tree(), sort_keys=False, allow_unicode=True)


def import_job(**keys: Any) -> dict[str, Any]:
    job = {"type": "recipient-import", "list": "newsletter"}
    job["source"] = {"server": "inbox", "path": "/in.csv"}
    return job | keys


def headerless(*columns: Any, **keys: Any) -> dict[str, Any]:
    return import_job(format={"header": False}, columns=list(columns), **keys)


# Refused by both: by `validate` with exit 2, and by the schema.
BROKEN = [
    Case("unknown top-level key", {"stor": "x.db"}),
    Case("unknown smtp key", {"smtp.hostname": "mail"}),
    Case("unknown job key for its type", {"jobs.export.mode": "upsert"}),
    Case("unknown source key", {"jobs.blocklist.source.dir": "/x"}),
    Case("local server with a host", {"servers.inbox.host": "example.net"}),
    Case("local server without a path", {"servers.inbox.path": DELETE}),
    Case("ssh server with a path", {"servers.partner.path": "/x"}),
    Case("ssh server without a host", {"servers.partner.host": DELETE}),
    Case("bad server type", {"servers.partner.type": "ftp"}),
    Case("bad protocol", {"servers.partner.protocol": "ftp"}),
    Case("bad host key", {"servers.partner.host_key": "MD5:abc"}),
    Case("local server with a jump host", {"servers.inbox.jump": "partner"}),
    Case("jump host not a name", {"servers.partner.jump": ["bastion"]}),
    Case("port not a number", {"smtp.port": "twenty-five"}),
    Case("port out of range", {"smtp.port": 70000}),
    Case("retries out of range", {"servers.partner.retries": 21}),
    Case("timeout zero", {"smtp.timeout": 0}),
    Case("rate too high", {"jobs.welcome.rate": 5000}),
    Case("bounce limit zero", {"bounces.hard_limit": 0}),
    Case("retention without its unit", {"retention.runs": 400}),
    Case("retention in hours", {"retention.rejects": "48h"}),
    Case("boolean neither true nor false", {"smtp.starttls": "maybe"}),
    Case("password as a number", {"smtp.password": 1234}),
    Case("work_dir blank", {"work_dir": "  "}),
    Case("store another kind of URL", {"store": "mysql://db.example.net/cs"}),
    Case("store_schema with an SQLite store", {"store_schema": "campaign"}),
    Case(
        "store_schema not a plain name",
        {"store": "postgresql://cs@db.example.net/cs", "store_schema": "my-schema"},
    ),
    Case("time zone with a space", {"timezone": "Europe/New Berlin"}),
    Case("servers as a list", {"servers": ["inbox"]}),
    Case("smtp as a list", {"smtp": ["localhost"]}),
    Case("jobs as a list", {"jobs": ["welcome"]}),
    Case("job as a list", {"jobs.welcome": ["doi-dispatch"]}),
    Case(
        "job name with a space",
        {
            "jobs.new job": {
                "type": "blocklist-export",
                "target": {"server": "inbox", "path": "/x.csv"},
            }
        },
    ),  # fmt: skip
    Case("job without a type", {"jobs.welcome.type": DELETE}),
    Case("bad job type", {"jobs.welcome.type": "doi-send"}),
    Case("list job without a list", {"jobs.export.list": DELETE}),
    Case("export without a target", {"jobs.export.target": DELETE}),
    Case("target without a path", {"jobs.export.target.path": DELETE}),
    Case("dispatch without mailings", {"jobs.welcome.mailings": DELETE}),
    Case("dispatch without smtp", {"smtp": DELETE}),
    Case("smtp login without TLS", {"smtp.user": "campaign", "smtp.password": "s3cret-pass"}),
    Case("notify.to not an address", {"notify.to": ["ops"]}),
    Case("notify.webhook not http", {"notify.webhook": "ftp://hooks.example.com/cs"}),
    Case("job notify not an address", {"jobs.welcome.notify": "ops"}),
    Case("job notify unknown key", {"jobs.welcome.notify": {"to": ["a@b.c"], "cc": ["d@e.f"]}}),
    Case("job notify to not an address", {"jobs.welcome.notify": {"to": "ops"}}),
    Case("Apprise URL without a scheme", {"notify.urls": ["hooks.example.com/x"]}),
    Case("Apprise URL with a space", {"notify.urls": ["json://localhost/a b"]}),
    Case("Apprise URLs a mapping", {"notify.urls": {"slack": "slack://a/b/c"}}),
    Case("job Apprise URL empty after the scheme", {"jobs.export.notify": {"urls": ["json://"]}}),
    Case("urls_timeout zero", {"notify.urls_timeout": 0}),
    Case("fields a mapping", {"jobs.export.fields": {"email": "E-Mail"}}),
    Case("fields empty", {"jobs.export.fields": []}),
    Case("field name with capitals", {"jobs.export.fields": ["Email"]}),
    Case("include bad choice", {"jobs.export.include": "some"}),
    Case("changes_only not a boolean", {"jobs.export.changes_only": "sometimes"}),
    Case("missing bad choice", {"jobs.blocklist.source.missing": "ignore"}),
    Case("after archive without archive_dir", {"jobs.blocklist.source.after": "archive"}),
    Case("unknown path placeholder", {"jobs.blocklist.source.path": "/x_{day}.csv"}),
    Case("wildcard in a source folder", {"jobs.blocklist.source.path": "/in/*/blocklist.csv"}),
    Case("on_error bad choice", {"jobs.blocklist.source.on_error": "ignore"}),
    Case("unbalanced braces in a path", {"jobs.export.target.path": "/x_{date.csv"}),
    Case("schedule hour 25", {"jobs.recipients.schedule": "daily 25:00"}),
    Case("schedule unknown weekday", {"jobs.export.schedule": "weekly someday 06:00"}),
    Case("schedule monthly 31", {"jobs.export.schedule": "monthly 31 06:00"}),
    Case("schedule unknown kind", {"jobs.export.schedule": "yearly 06:00"}),
    Case("delimiter two characters", {"jobs.recipients.format": {"delimiter": ";;"}}),
    Case("header key on an export", {"jobs.export.format": {"header": False}}),
    Case("columns a list with a header line", {"jobs.recipients.columns": ["email"]}),
    Case("columns a mapping without a header line", {"jobs.recipients.format": {"header": False}}),
    Case("header false without columns", {"jobs.h": headerless()}),
    Case("columns a string", {"jobs.recipients.columns": "email"}),
    Case("columns map no email", {"jobs.recipients.columns": {"Vorname": "first_name"}}),
    Case("columns list no email", {"jobs.h": headerless("first_name", None)}),
    Case("columns give a managed field", {"jobs.recipients.columns.Status": "status"}),
    Case("blocklist column unknown field", {"jobs.blocklist.columns": {"E-Mail": "email"}}),
    Case("bounce columns without type", {"jobs.bounces.columns": {"Email": "email"}}),
    Case("default for the identifying field", {"jobs.recipients.defaults": {"email": "x@y"}}),
    Case("default true/false", {"jobs.recipients.defaults": {"source": True}}),
    Case(
        "bounce type default unknown",
        {"jobs.bounces.columns.Type": DELETE, "jobs.bounces.defaults": {"type": "maybe"}},
    ),  # fmt: skip
    Case("defaults a list", {"jobs.recipients.defaults": ["country"]}),
    Case("bad import mode", {"jobs.recipients.mode": "merge"}),
    Case("replace on a bounce import", {"jobs.bounces.mode": "replace"}),
    Case("max_rejects over 100%", {"jobs.recipients.max_rejects": "150%"}),
    Case("max_rejects negative", {"jobs.recipients.max_rejects": -5}),
    Case("max_removals words", {"jobs.recipients.max_removals": "lots"}),
    Case("max_rejects true", {"jobs.recipients.max_rejects": True}),
]

# Accepted by both.
BASTION = {"type": "ssh", "host": "bastion.example.net"}

UNUSUAL = [
    Case("empty sections", {"notify": None, "bounces": None, "timezone": None}),
    Case(
        "a chain of jump hosts",
        {
            "servers.bastion": BASTION,
            "servers.inner": {**BASTION, "jump": "bastion"},
            "servers.partner.jump": "inner",
        },
    ),
    Case("header-less columns list", {"jobs.h": headerless("email", None, "first_name")}),
    Case(
        "header-less, header as text",
        {"jobs.h": import_job(format={"header": "no"}, columns=["email"])},
    ),  # fmt: skip
    Case(
        "defaults",
        {
            "jobs.recipients.defaults": {"country": "DE", "doi_confirmed_at": "2024-05-01"},
            "jobs.bounces.columns.Type": DELETE,
            "jobs.bounces.defaults": {"type": " Hard "},
        },
    ),
    Case(
        "defaults give a required field",
        {
            "jobs.bounces.columns": ["email"],
            "jobs.bounces.format": {"header": False},
            "jobs.bounces.defaults": {"type": "soft"},
        },
    ),  # fmt: skip
    Case("limits", {"jobs.recipients.max_rejects": "12.5 %", "jobs.recipients.max_removals": 50}),
    Case("limit a whole percent", {"jobs.recipients.max_rejects": "100%"}),
    Case("retention", {"retention": {"runs": "90d", "rejects": " 7d "}}),
    Case(
        "retention from ${VAR}",
        {"retention.rejects": "${KEEP_REJECTS}"},
        env={"KEEP_REJECTS": "14d"},
    ),
    Case(
        "postgres store with schema",
        {
            "store": "postgresql://cs@db.example.net:5432/cs?sslmode=require",
            "store_schema": "campaign_$1",
        },
    ),  # fmt: skip
    Case("postgres scheme", {"store": "postgres://cs@db/cs"}),
    Case(
        "numbers as text", {"smtp.port": "2525", "smtp.timeout": "2.5", "bounces.soft_limit": "20"}
    ),
    Case(
        "numbers from ${VAR}",
        {"smtp.port": "${SMTP_PORT}", "servers.partner.retries": "${RETRIES:-3}"},
        env={"SMTP_PORT": "2525"},
    ),
    Case(
        "choices and booleans from ${VAR}",
        {"jobs.recipients.mode": "${MODE}", "smtp.ssl": "${SSL}", "store": "${STORE}"},
        env={"MODE": "replace", "SSL": "true", "STORE": "cs.db"},
    ),
    Case("booleans as words", {"smtp.starttls": "yes", "servers.partner.agent": "False"}),
    Case("a number as text", {"jobs.export.list": 2024, "servers.partner.host": 10}),
    Case("one address as text", {"notify.to": "ops@example.com", "jobs.welcome.notify": "a@b.c"}),
    Case("addresses from ${VAR}", {"notify.to": ["${ADMIN}"]}, env={"ADMIN": "me@example.com"}),
    Case("tab delimiter", {"jobs.recipients.format": {"delimiter": "\t", "quotechar": "'"}}),
    Case("tab written as \\t", {"jobs.recipients.format": {"delimiter": "\\t"}}),
    Case(
        "schedules",
        {
            "jobs.export.schedule": "WEEKLY Mon, Thu 06:00",
            "jobs.blocklist.schedule": "monthly last 23:59",
            "jobs.welcome.schedule": "hourly :05",
        },
    ),  # fmt: skip
    Case(
        "full ssh server",
        {
            "servers.partner": {
                "type": "ssh",
                "host": "sftp.example.net",
                "port": 2222,
                "user": "cs",
                "key_file": None,
                "password": "",
                "host_key": "SHA256:" + "A" * 43,
                "protocol": "sftp",
                "timeout": 60,
                "retries": 0,
                "agent": True,
            }
        },
    ),  # fmt: skip
    Case(
        "smtp login over TLS",
        {"smtp.user": "cs", "smtp.password": "s3cret-pass", "smtp.starttls": True},
    ),  # fmt: skip
    Case(
        "smtp login to a local relay",
        {"smtp.user": "cs", "smtp.password": "s3cret-pass", "smtp.allow_plaintext_auth": True},
    ),  # fmt: skip
    Case("smtp empty", {"smtp": {}}),
    Case("empty user", {"smtp.user": ""}),
    Case(
        "archive",
        {"jobs.blocklist.source.after": "archive", "jobs.blocklist.source.archive_dir": "/archive"},
    ),  # fmt: skip
    Case(
        "export options",
        {
            "jobs.export.include": "all",
            "jobs.export.changes_only": True,
            "jobs.export.target.atomic": False,
            "jobs.export.format": {"date_format": "%d.%m.%Y"},
        },
    ),  # fmt: skip
    Case(
        "source name pattern",
        {
            "jobs.blocklist.source.path": "/in/{date:%Y}/blocklist_*[0-9]?.csv",
            "jobs.blocklist.source.on_error": "continue",
        },
    ),  # fmt: skip
    Case("adding modes", {"jobs.unsubscribers.mode": "add-only", "jobs.bounces.mode": "upsert"}),
    Case(
        "names with dots and dashes",
        {
            "jobs": BASE["jobs"]
            | {
                "a.b-c_1": {
                    "type": "blocklist-export",
                    "target": {"server": "inbox", "path": "/x.csv"},
                }
            }
        },
    ),  # fmt: skip
    Case("no jobs", {"jobs": None, "smtp": None}),
    Case("log file", {"log_file": "var/cs.log"}),
    Case(
        "Apprise URLs",
        {
            "notify.urls": ["json://localhost:8080/hook", "ntfy://ops-topic"],
            "notify.urls_timeout": 5,
            "jobs.welcome.notify": {"to": ["a@b.c"], "urls": ["json://localhost/welcome"]},
            "jobs.export.notify": {"urls": "json://localhost/export", "to": None},
        },
    ),
    Case(
        "Apprise URL from ${VAR}",
        {"notify.urls": "${CHAT_URL}"},
        env={"CHAT_URL": "json://localhost/hook"},
    ),  # fmt: skip
]

# Where the two cannot agree. Each says which one accepts and why a JSON Schema cannot decide.
SCHEMA_ACCEPTS_VALIDATE_REFUSES = [
    Case(
        "undefined jump host",
        {"servers.partner.jump": "nowhere"},
        reason="a value naming a key elsewhere in the file (servers) cannot be checked",
    ),
    Case(
        "local server as jump host",
        {"servers.partner.jump": "inbox"},
        reason="the type of the server a value names elsewhere in the file cannot be checked",
    ),
    Case(
        "server as its own jump host",
        {"servers.partner.jump": "partner"},
        reason="a value cannot be compared with the key it is under",
    ),
    Case(
        "jump hosts in a loop",
        {"servers.bastion": {**BASTION, "jump": "partner"}, "servers.partner.jump": "bastion"},
        reason="following names from server to server is beyond a JSON Schema",
    ),
    Case(
        "undefined server",
        {"jobs.blocklist.source.server": "nowhere"},
        reason="a value naming a key elsewhere in the file (servers) cannot be checked",
    ),
    Case(
        "unreadable key file",
        {"servers.partner.key_file": "/nonexistent/key"},
        reason="whether a file exists on disk is not in the document",
    ),
    Case(
        "unknown time zone",
        {"timezone": "Mars/Olympus_Mons"},
        reason="the time zone database is the machine's, not the schema's",
    ),
    Case(
        "unknown encoding",
        {"jobs.recipients.format": {"encoding": "utf-99"}},
        reason="the codec names are Python's codec registry",
    ),
    Case(
        "delimiter equal to quotechar",
        {"jobs.recipients.format": {"delimiter": "'", "quotechar": "'"}},
        reason="two values cannot be compared with each other",
    ),  # fmt: skip
    Case(
        "same header twice",
        {"jobs.recipients.columns.e-mail": "last_name"},
        reason="headers match whatever their case: keys cannot be compared case-insensitively",
    ),
    Case(
        "two headers give one field",
        {"jobs.recipients.columns.Mail": "email"},
        reason="values of a mapping cannot be required to differ",
    ),
    Case(
        "default not a date",
        {"jobs.recipients.defaults": {"doi_confirmed_at": "soon"}},
        reason="dates are read with the job's date_format, a strptime pattern",
    ),
    Case(
        "weekday twice",
        {"jobs.export.schedule": "weekly mon,mon 06:00"},
        reason="a repeated word inside a string is beyond a plain pattern",
    ),
    Case(
        "number as text out of range",
        {"smtp.port": "70000"},
        reason="a range applies to numbers, not to digits written as text",
    ),
    Case(
        "whole number written 25.0",
        {"smtp.port": 25.0},
        reason="JSON Schema counts 25.0 as an integer; the validator wants 25",
    ),
    Case(
        "plaintext AUTH to a remote relay",
        {"smtp.host": "mail.example.net", "smtp.allow_plaintext_auth": True},  # fmt: skip
        reason="whether a host is a loopback address is an address computation",
    ),
    Case(
        "webhook with a bad host",
        {"notify.webhook": "https://-bad.example/cs"},
        reason="host names, IPv6 brackets and port ranges of a URL are checked in code",
    ),
    Case(
        "${VAR} with a bad value",
        {"smtp.port": "${SMTP_PORT}"},
        env={"SMTP_PORT": "many"},
        reason="a ${VAR}'s value is known only where the config is read",
    ),
    Case(
        "unset ${VAR}",
        {"smtp.host": "${NO_SUCH_VARIABLE_HERE}"},
        reason="a ${VAR}'s value is known only where the config is read",
    ),
    Case(
        "a job name YAML reads as a number",
        {"jobs": BASE["jobs"] | {2024: BASE["jobs"]["blocklist-export"]}},
        reason="YAML reads 2024: as a number, but a JSON document's keys are all text, so a "
        "JSON Schema validator cannot tell (yaml-language-server does flag the key)",
    ),
    Case(
        "Apprise does not know the service",
        {"notify.urls": ["nosuchservice://x/y"]},
        reason="the services are Apprise's own registry, asked by validate",
    ),  # fmt: skip
    Case(
        "quoted on",
        {"smtp.starttls": "on"},
        reason="YAML 1.2 editors read an unquoted on as text, the loader as true; the schema "
        "accepts the word so that a valid file is not flagged",
    ),
]

VALIDATE_ACCEPTS_SCHEMA_REFUSES = [
    Case("servers an empty list", {"servers": [], "jobs": None, "smtp": None},
         reason="the validator reads any empty value as not set; the schema allows `servers:`"),
    Case("log_file false", {"log_file": False},
         reason="the validator reads any empty value as not set; the schema allows `log_file:`"),
]  # fmt: skip


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    done = subprocess.run(["campaign-sync", "schema"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def checker(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator(schema)


def as_editor_sees(text: str) -> Any:
    """The YAML as JSON values: dates become text, as a YAML 1.2 editor reads them."""

    def plain(value: Any) -> str:
        if isinstance(value, (datetime.date, datetime.datetime)):
            return value.isoformat()
        raise TypeError(type(value).__name__)

    return json.loads(json.dumps(yaml.safe_load(text), default=plain))


def schema_errors(checker: Draft202012Validator, text: str) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in checker.iter_errors(as_editor_sees(text))
    ]


def validate(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """`campaign-sync validate` on text: its exit code and output."""
    import os

    path = tmp_path / "campaign-sync.yaml"
    path.write_text(text, encoding="utf-8")
    done = subprocess.run(
        ["campaign-sync", "--config", str(path), "validate"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert "Traceback" not in done.stderr
    return done.returncode, done.stdout + done.stderr


# --------------------------------------------------------------------------- the schema itself


def test_the_schema_is_a_valid_draft_2020_12_schema(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_the_command_prints_indented_json() -> None:
    done = subprocess.run(["campaign-sync", "schema"], capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith('{\n  "$schema": ')
    assert done.stdout.endswith("}\n")


# --------------------------------------------------------------------------- examples


def example_configs() -> list[Path]:
    found = sorted(REPO.glob("config/example*/**/*.yaml"))
    assert found, "no example config found"
    return found


@pytest.mark.parametrize("path", example_configs(), ids=lambda p: str(p.relative_to(REPO)))
def test_examples_are_valid(checker: Draft202012Validator, path: Path) -> None:
    assert schema_errors(checker, path.read_text(encoding="utf-8")) == []
    done = subprocess.run(
        ["campaign-sync", "--config", str(path), "validate"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout


def test_the_init_config_is_valid(checker: Draft202012Validator, tmp_path: Path) -> None:
    done = subprocess.run(["campaign-sync", "init", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "campaign-sync.yaml").read_text(encoding="utf-8")
    assert schema_errors(checker, text) == []


# --------------------------------------------------------------------------- agreement


def test_the_base_config_is_valid(checker: Draft202012Validator, tmp_path: Path) -> None:
    text = Case("base", {}).text()
    assert validate(tmp_path, text) == (0, f"{tmp_path / 'campaign-sync.yaml'}: OK\n")
    assert schema_errors(checker, text) == []


# (group, cases, does validate accept, does the schema accept)
GROUPS = (
    ("both refuse", BROKEN, False, False),
    ("both accept", UNUSUAL, True, True),
    ("known: only the schema accepts", SCHEMA_ACCEPTS_VALIDATE_REFUSES, False, True),
    ("known: only validate accepts", VALIDATE_ACCEPTS_SCHEMA_REFUSES, True, False),
)


@pytest.mark.parametrize(
    ("case", "validate_accepts", "schema_accepts"),
    [
        pytest.param(case, validate_ok, schema_ok, id=f"{group}: {case.id}")
        for group, cases, validate_ok, schema_ok in GROUPS
        for case in cases
    ],
)
def test_validate_and_the_schema(
    checker: Draft202012Validator,
    tmp_path: Path,
    case: Case,
    validate_accepts: bool,
    schema_accepts: bool,
) -> None:
    """Each case as its table says; a known difference must keep its reason and still hold
    (once the schema can express it, the case moves to the tables where both agree)."""
    assert case.reason or validate_accepts == schema_accepts
    code, said = validate(tmp_path, case.text(), case.env)
    assert code == (0 if validate_accepts else 2), said
    errors = schema_errors(checker, case.text())
    assert (errors == []) == schema_accepts, errors or "the schema accepts it"


def test_tables_are_large_enough() -> None:
    assert len(BROKEN) >= 20 and len(UNUSUAL) >= 10
    every = [case for _, cases, _, _ in GROUPS for case in cases]
    assert len({case.id for case in every}) == len(every)


# --------------------------------------------------------------------------- the validator's words


def problems_of(tmp_path: Path, tree: dict[str, Any]) -> list[str]:
    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")
    return problems(str(path))


def said_about(found: list[str], key: str, pattern: str) -> re.Match[str]:
    for problem in found:
        if f"At '{key}'" in problem:
            match = re.search(pattern, problem)
            if match:
                return match
    raise AssertionError(f"no problem at {key} matching {pattern}: {found}")


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node and len(node) <= 3:  # a $ref with a description or default beside it
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return node


def alternatives(schema: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
    node = resolve(schema, node)
    if "anyOf" in node:
        return [alt for option in node["anyOf"] for alt in alternatives(schema, option)]
    return [node]


def section(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """The mapping schema at a dotted path; `job:TYPE` enters a job type's branch."""
    node: dict[str, Any] = schema
    for part in path.split("."):
        if part.startswith("job:"):
            node = resolve(schema, {"$ref": "#/$defs/job"})
            node = next(
                branch["then"]
                for branch in node["allOf"]
                if branch["if"]["properties"]["type"]["const"] == part[4:]
            )
            continue
        if part == "server":
            node = resolve(schema, {"$ref": "#/$defs/server"})
            continue
        objects = [
            alt for alt in alternatives(schema, node["properties"][part]) if "properties" in alt
        ]
        node = objects[0]
    return node


def schema_keys(schema: dict[str, Any], path: str) -> set[str]:
    return set(section(schema, path)["properties"])


def enum_of(schema: dict[str, Any], node: dict[str, Any]) -> set[str]:
    return {value for alt in alternatives(schema, node) for value in alt.get("enum", [])}


def range_of(schema: dict[str, Any], node: dict[str, Any]) -> tuple[float, float]:
    numeric = [alt for alt in alternatives(schema, node) if "minimum" in alt]
    return numeric[0]["minimum"], numeric[0]["maximum"]


# Where to put an unknown key (and where the schema keeps that section's keys).
KEY_SECTIONS = {
    "": "",
    "smtp": "smtp",
    "notify": "notify",
    "bounces": "bounces",
    "retention": "retention",
    "servers.partner": "server",
    "jobs.recipients": "job:recipient-import",
    "jobs.blocklist": "job:blocklist-import",
    "jobs.unsubscribers": "job:unsubscriber-import",
    "jobs.bounces": "job:bounce-import",
    "jobs.export": "job:recipient-export",
    "jobs.blocklist-export": "job:blocklist-export",
    "jobs.welcome": "job:doi-dispatch",
    "jobs.recipients.source": "job:recipient-import.source",
    "jobs.export.target": "job:recipient-export.target",
    "jobs.recipients.format": "job:recipient-import.format",
    "jobs.export.format": "job:recipient-export.format",
    "jobs.welcome.notify": "job:doi-dispatch.notify",
}


@pytest.mark.parametrize("where", KEY_SECTIONS, ids=lambda w: w or "top")
def test_every_section_has_the_validators_keys(
    schema: dict[str, Any], tmp_path: Path, where: str
) -> None:
    tree = copy.deepcopy(BASE)
    node = tree
    for part in filter(None, where.split(".")):
        node = node.setdefault(part, {})
    node["zz_unknown"] = 1
    key = f"{where}.zz_unknown" if where else "zz_unknown"
    allowed = said_about(problems_of(tmp_path, tree), key, r"allowed here: ([^)]*)\)")
    validator_keys = set(allowed.group(1).split(", "))
    if where == "":
        keys = set(schema["properties"])
    elif where == "servers.partner":
        keys = set(resolve(schema, {"$ref": "#/$defs/server"})["properties"])
    elif where in ("smtp", "notify", "bounces", "retention"):
        keys = set(schema["$defs"][where]["properties"])
    else:
        keys = schema_keys(schema, KEY_SECTIONS[where])
    assert keys == validator_keys


# A bad value where the validator offers choices: (where, the schema's node).
CHOICES = {
    "servers.partner.type": lambda s: s["$defs"]["server"]["properties"]["type"],
    "servers.partner.protocol": lambda s: s["$defs"]["server"]["properties"]["protocol"],
    "jobs.welcome.type": lambda s: s["$defs"]["job"]["properties"]["type"],
    "jobs.recipients.mode": lambda s: section(s, "job:recipient-import")["properties"]["mode"],
    "jobs.blocklist.source.missing": lambda s: section(s, "job:blocklist-import.source")[
        "properties"
    ]["missing"],
    "jobs.blocklist.source.after": lambda s: section(s, "job:blocklist-import.source")[
        "properties"
    ]["after"],
    "jobs.export.include": lambda s: section(s, "job:recipient-export")["properties"]["include"],
}


@pytest.mark.parametrize("where", CHOICES)
def test_choices_are_the_validators(schema: dict[str, Any], tmp_path: Path, where: str) -> None:
    found = problems_of(tmp_path, Case(where, {where: "zz-choice"}).tree())
    listed = said_about(found, where, r"is not one of: (.*)$").group(1)
    assert enum_of(schema, CHOICES[where](schema)) == set(listed.split(", "))


def test_adding_imports_take_only_adding_modes(schema: dict[str, Any], tmp_path: Path) -> None:
    allowed = enum_of(schema, section(schema, "job:bounce-import")["properties"]["mode"])
    for mode in enum_of(schema, section(schema, "job:recipient-import")["properties"]["mode"]):
        found = problems_of(tmp_path, Case(mode, {"jobs.bounces.mode": mode}).tree())
        assert (found == []) == (mode in allowed), (mode, found)


RANGES = {
    "smtp.port": lambda s: s["$defs"]["smtp"]["properties"]["port"],
    "servers.partner.port": lambda s: s["$defs"]["server"]["properties"]["port"],
    "servers.partner.retries": lambda s: s["$defs"]["server"]["properties"]["retries"],
    "servers.partner.timeout": lambda s: s["$defs"]["server"]["properties"]["timeout"],
    "smtp.timeout": lambda s: s["$defs"]["smtp"]["properties"]["timeout"],
    "notify.webhook_timeout": lambda s: s["$defs"]["notify"]["properties"]["webhook_timeout"],
    "bounces.hard_limit": lambda s: s["$defs"]["bounces"]["properties"]["hard_limit"],
    "bounces.soft_limit": lambda s: s["$defs"]["bounces"]["properties"]["soft_limit"],
    "jobs.welcome.rate": lambda s: section(s, "job:doi-dispatch")["properties"]["rate"],
}


@pytest.mark.parametrize("where", RANGES)
def test_ranges_are_the_validators(schema: dict[str, Any], tmp_path: Path, where: str) -> None:
    found = problems_of(tmp_path, Case(where, {where: 10**8}).tree())
    low, high = said_about(found, where, r"out of range \(([-0-9.e]+?)\.\.([^)]+)\)").groups()
    assert range_of(schema, RANGES[where](schema)) == (float(low), float(high))


def test_every_key_has_a_schema(schema: dict[str, Any]) -> None:
    """A key the validator gained is allowed with any value until described here."""
    untyped: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.get("properties", {}).items():
                if value == {}:
                    untyped.append(f"{where}.{key}")
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for item in node:
                walk(item, where)

    walk(schema, "")
    assert untyped == []


def test_the_command_loads_nothing_heavy() -> None:
    """`schema` builds from the config vocabulary only: no SSH, mail, store or progress code."""
    probe = (
        "import sys\n"
        "from campaign_sync_cli.main import main\n"
        "try:\n    main(['schema'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('paramiko', 'scp', 'rich', 'smtplib', 'sqlite3', 'psycopg', 'dateutil') "
        "or m.startswith(('campaign_sync.store', 'campaign_sync.ops'))), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stderr.strip() == "[]"
    json.loads(done.stdout)
