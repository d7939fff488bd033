"""The config file's JSON Schema (draft 2020-12), printed by `campaign-sync schema` so that an
editor validates and completes campaign-sync.yaml as it is typed.

The schema is built from the validator's own vocabulary: the top-level, smtp and server keys,
server types and protocols (validate.py, validate_servers.py), job types, import modes, bounce
types, the fields each import type takes and the name patterns (model.py), the numeric ranges
(checks.py), the schedule grammar (core/schedule.py), the ${VAR} syntax (load.py), the Apprise
URL scheme (apprise_urls.py) and the defaults (the model's dataclasses). What the validator
spells inline in its code (notify's keys, each job type's keys, the source, target and format
keys, their choices, the port and retries ranges) is repeated in the builders below, and
tests/test_schema.py reads the validator's own messages ("allowed here: ...", "is not one
of: ...", "out of range (...)") to keep the two in agreement.

`${VAR}` references: load.py replaces them before validating, and an editor sees the raw file.
So wherever a single value (a number, a true/false, a choice, a path) is expected, a string
holding a `${VAR}` reference is accepted too: its value is known only where the job runs.
Numbers and true/false written as text ("25", "yes") are accepted where the validator accepts
them; so are `on`/`off`, which YAML 1.2 editors read as text and the loader as true/false.
"""

from __future__ import annotations

import re
from dataclasses import MISSING, fields
from typing import Any

from ..core.schedule import GRAMMAR, WEEKDAYS
from .apprise_urls import _SCHEME as APPRISE_SCHEME
from .checks import (
    BOUNCE_LIMIT_RANGE,
    DAYS,
    MAX_LIMIT_COUNT,
    RATE_RANGE,
    RETENTION_DAYS_RANGE,
    TIMEOUT_RANGE,
)
from .load import _ENV_REF as ENV_REFERENCE
from .model import (
    API_TOKEN,
    API_TOKEN_MIN_LENGTH,
    BOUNCE_TYPES,
    ENCRYPTED_SUFFIXES,
    EXPORT_TYPES,
    FIELD_NAME,
    FILE_FIELDS,
    IMPORT_MODES,
    IMPORT_TYPES,
    JOB_NAME,
    JOB_TYPES,
    LIST_JOB_TYPES,
    REQUIRED_FIELDS,
    RESERVED_FIELDS,
    SCHEMA_NAME,
    STORE_URL_SCHEMES,
    BounceLimits,
    CsvFormat,
    JobConfig,
    NotifyConfig,
    Retention,
    ServerConfig,
    SmtpConfig,
    SourceConfig,
    TargetConfig,
)
from .validate import SMTP_KEYS, TOP_LEVEL_KEYS
from .validate_servers import SERVER_KEYS, SERVER_TYPES, SSH_PROTOCOLS

Schema = dict[str, Any]

DIALECT = "https://json-schema.org/draft/2020-12/schema"

# -- what the validator spells inline (tests/test_schema.py checks each against it) --------

SSH_SERVER_KEYS = tuple(key for key in SERVER_KEYS if key != "path")
LOCAL_SERVER_KEYS = ("type", "path")
HOST_KEY = r"SHA256:[A-Za-z0-9+/]{43}=?"
SOURCE_MISSING = ("fail", "skip")
SOURCE_AFTER = ("keep", "delete", "archive")
SOURCE_ON_ERROR = ("stop", "continue")
EXPORT_INCLUDE = ("active", "all")
# Import types that only add rows, and the modes that do that.
ADDING_TYPES = ("unsubscriber-import", "bounce-import")
ADDING_MODES = ("upsert", "add-only")
FIELD_NAME_TEXT = "a field name: lower-case letters, digits and _"
PORT_RANGE = (1, 65535)
RETRIES_RANGE = (0, 20)

# -- building blocks --------------------------------------------------------------------------

ENV: Schema = {"$ref": "#/$defs/env"}
NULL: Schema = {"type": "null"}
TEXT: Schema = {"$ref": "#/$defs/text"}
BOOLEAN: Schema = {"$ref": "#/$defs/boolean"}
ADDRESSES: Schema = {"$ref": "#/$defs/addresses"}
SECRET: Schema = {"$ref": "#/$defs/secret"}
LIMIT: Schema = {"$ref": "#/$defs/limit"}
TIMEOUT: Schema = {"$ref": "#/$defs/timeout"}

_META = set(".^$*+?()[]{}|\\")


def literal(text: str) -> str:
    """text as a regular expression that both Python and ECMA-262 (editors) read alike."""
    return "".join("\\" + ch if ch in _META else ch for ch in text)


def anchored(pattern: re.Pattern[str]) -> str:
    """A validator pattern (matched from the start, ending in \\Z or fullmatched) as a JSON
    Schema pattern, which matches anywhere unless anchored; ECMA-262 has no \\Z."""
    body = pattern.pattern.removesuffix(r"\Z")
    return f"^(?:{body})$"


def caseless(word: str) -> str:
    """A case-insensitive pattern for word: ECMA-262 has no inline (?i)."""
    return "".join(f"[{ch.upper()}{ch.lower()}]" if ch.isalpha() else literal(ch) for ch in word)


def one_of_words(words: tuple[str, ...]) -> str:
    return "(?:" + "|".join(caseless(word) for word in words) + ")"


def matching(regex: str, expected: str) -> Schema:
    """Text matching regex; editors say `expected` instead of showing the regex."""
    return {"type": "string", "pattern": regex, "patternErrorMessage": f"expected {expected}"}


def either(*options: Schema) -> Schema:
    """anyOf, with nested anyOfs flattened so that editors show one list of alternatives."""
    flat: list[Schema] = []
    for option in options:
        flat.extend(option["anyOf"] if set(option) == {"anyOf"} else [option])
    return {"anyOf": flat}


def or_env(schema: Schema) -> Schema:
    return either(schema, ENV)


def nullable(schema: Schema) -> Schema:
    """A key the validator treats as not set when it is empty (`key:` in YAML). Null comes
    last: editors report the first alternative's complaint."""
    return either(schema, NULL)


def choice(values: tuple[str, ...], description: str = "") -> Schema:
    schema = or_env({"enum": list(values)})
    if description:
        schema["description"] = description
    return schema


def integer(low: int, high: int) -> Schema:
    # A whole number may come from ${VAR} (or be quoted) as ASCII digits (checks.integer).
    return either(
        {"type": "integer", "minimum": low, "maximum": high},
        {"type": "string", "pattern": r"^\s*[0-9]{1,30}\s*$"},
        ENV,
    )


# What Python's float() reads; NaN and infinity are refused by the validator anyway.
_DIGITS = r"[0-9](?:_?[0-9])*"
_FLOAT_TEXT = rf"^\s*[+-]?(?:{_DIGITS}(?:\.(?:{_DIGITS})?)?|\.{_DIGITS})(?:[eE][+-]?{_DIGITS})?\s*$"


def number(low: float, high: float) -> Schema:
    return either(
        {"type": "number", "minimum": low, "maximum": high},
        {"type": "string", "pattern": _FLOAT_TEXT},
        ENV,
    )


def mapping(
    properties: dict[str, Schema],
    *,
    required: tuple[str, ...] = (),
    description: str = "",
) -> Schema:
    """A mapping with exactly these keys (the validator refuses any other)."""
    schema: Schema = {"type": "object"}
    if description:
        schema["description"] = description
    schema["properties"] = properties
    schema["additionalProperties"] = False
    if required:
        schema["required"] = list(required)
    return schema


def keyed(keys: tuple[str, ...], typed: dict[str, Schema]) -> dict[str, Schema]:
    """The validator's keys, in its order, each with its schema here. A key the validator
    has gained but this module does not describe yet is allowed with any value (tests flag it)."""
    return {key: typed.get(key, {}) for key in keys}


def described(schema: Schema, description: str, default: Any = None) -> Schema:
    out = dict(schema)
    if description:
        out["description"] = description
    if default is not None:
        out["default"] = default
    return out


def _defaults(config: type) -> dict[str, Any]:
    """The model's defaults by field name (the dataclass is what the program uses)."""
    return {f.name: f.default for f in fields(config) if f.default is not MISSING}


# -- shared definitions -----------------------------------------------------------------------


def _schedule_pattern() -> str:
    time = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]"
    day = one_of_words(WEEKDAYS)
    forms = (
        caseless("hourly") + r"\s+:[0-5][0-9]",
        caseless("daily") + rf"\s+{time}",
        caseless("weekly") + rf"\s+{day}(?:\s*,\s*{day})*\s+{time}",
        caseless("monthly") + rf"\s+(?:0?[1-9]|1[0-9]|2[0-8]|{caseless('last')})\s+{time}",
    )
    return r"^\s*(?:" + "|".join(forms) + r")\s*$"


def _limit_pattern() -> str:
    count = rf"[0-9]{{1,{len(str(MAX_LIMIT_COUNT))}}}(?:\.[0-9]+)?"
    percent = r"0*(?:100(?:\.0+)?|[0-9]{1,2}(?:\.[0-9]+)?)\s*%"
    return rf"^\s*(?:{count}|{percent})\s*$"


def definitions() -> Schema:
    true_words = ("true", "yes", "on")
    false_words = ("false", "no", "off")
    return {
        "env": {
            "description": "a ${VAR} or ${VAR:-default} reference, replaced from the "
            "environment when the config is read",
            "type": "string",
            "pattern": ENV_REFERENCE.pattern,
        },
        # The validator reads a number given where text is expected as that text.
        "text": {"anyOf": [{"type": "string", "pattern": r"\S"}, {"type": "number"}]},
        "boolean": either(
            {"type": "boolean"},
            {"type": "string", "pattern": f"^{one_of_words(true_words + false_words)}$"},
            ENV,
        ),
        "true": either(
            {"const": True}, {"type": "string", "pattern": f"^{one_of_words(true_words)}$"}, ENV
        ),
        "false": either(
            {"const": False}, {"type": "string", "pattern": f"^{one_of_words(false_words)}$"}
        ),
        "address": or_env(matching("@", "an email address")),
        "addresses": {
            "description": "an email address or a list of them",
            "anyOf": [
                {"$ref": "#/$defs/address"},
                {"type": "array", "items": {"$ref": "#/$defs/address"}},
            ],
        },
        # Whether Apprise knows a URL's service is for `validate` (it asks Apprise).
        "apprise_url": or_env(
            matching(rf"^(?:{APPRISE_SCHEME.pattern})://\S+$", "an Apprise URL, SERVICE://...")
        ),
        "urls": described(
            nullable(
                either(
                    {"$ref": "#/$defs/apprise_url"},
                    {"type": "array", "items": {"$ref": "#/$defs/apprise_url"}},
                )
            ),
            "Apprise URLs for chat and push notices (slack://..., ntfy://..., json://...); "
            "needs the apprise extra",
        ),
        # A password or passphrase: text only (YAML would turn 0123 into 83).
        "secret": {"type": ["string", "null"]},
        "timeout": described(number(*TIMEOUT_RANGE), "seconds"),
        "limit": {
            "description": "a count of rows (50) or a share of the data rows (1%)",
            "anyOf": [
                # The text first: editors report the first alternative's complaint.
                matching(_limit_pattern(), "a count or a percentage up to 100%, like 1%"),
                {"type": "number", "minimum": 0, "maximum": MAX_LIMIT_COUNT},
                ENV,
            ],
        },
        "schedule": described(
            or_env(matching(_schedule_pattern(), GRAMMAR)),
            "when cron runs the job, in the config's time zone",
        ),
        # Only {date} and {date:<strftime>} placeholders, braces balanced.
        "remote_path": or_env(
            {
                "description": "on the server; {date} and {date:%Y%m%d} are filled in",
                "anyOf": [
                    matching(
                        r"^[^{}]*(?:\{date(?::[^{}]*)?\}[^{}]*)*$",
                        "a path whose only placeholders are {date} and {date:%Y%m%d}",
                    ),
                    {"type": "number"},
                ],
            }
        ),
        # A remote path whose folders hold no wildcard (*, ? or [); the file name may.
        "source_path": {
            "allOf": [
                {"$ref": "#/$defs/remote_path"},
                or_env(
                    {
                        "anyOf": [
                            matching(
                                r"^[^*?\[]*$|^[^*?\[]*/[^/]*$",
                                "a path with wildcards (*, ? or [...]) in the file name only",
                            ),
                            {"type": "number"},
                        ]
                    }
                ),
            ]
        },
        "server_ref": described(TEXT, "the name of a server under `servers`"),
        "one_character": or_env(
            {"type": "string", "minLength": 1, "maxLength": 1, "not": {"enum": ["\r", "\n"]}}
        ),
        "field_name": or_env(matching(anchored(FIELD_NAME), FIELD_NAME_TEXT)),
        # Spaces anywhere (as gpg prints it), a 0x in front, either case.
        "fingerprint": or_env(
            matching(
                r"^\s*(?:0[xX])?(?:\s*[0-9A-Fa-f]){40}(?:(?:\s*[0-9A-Fa-f]){24})?\s*$",
                "a key's full fingerprint: 40 hexadecimal digits",
            )
        ),
    }


# -- sections ---------------------------------------------------------------------------------


def server() -> Schema:
    defaults = _defaults(ServerConfig)
    properties = {
        "type": choice(SERVER_TYPES, "local: a folder on this machine; ssh: an SCP/SFTP server"),
        "path": described(TEXT, "type local: the folder that remote paths are relative to"),
        "host": TEXT,
        "port": described(integer(*PORT_RANGE), "SSH port", defaults["port"]),
        "user": nullable(either({"const": ""}, TEXT)),
        "key_file": nullable(TEXT),
        "key_passphrase": SECRET,
        "password": SECRET,
        "known_hosts": described(nullable(TEXT), "default: ~/.ssh/known_hosts"),
        "host_key": nullable(
            or_env(matching(f"^{HOST_KEY}$", "a fingerprint like SHA256:<43 base64 characters>"))
        ),
        "protocol": described(choice(SSH_PROTOCOLS), "", defaults["protocol"]),
        "timeout": described(TIMEOUT, "seconds", defaults["timeout"]),
        "retries": described(integer(*RETRIES_RANGE), "", defaults["retries"]),
        "agent": described(BOOLEAN, "use the SSH agent's keys", defaults["agent"]),
        "jump": described(
            TEXT, "the name of another ssh server under `servers` to connect through (a bastion)"
        ),
    }
    local = {"required": ["type"], "properties": {"type": {"const": "local"}}}
    ssh = {"required": ["type"], "properties": {"type": {"const": "ssh"}}}
    return {
        "type": "object",
        "description": "a server files are fetched from and delivered to",
        "properties": keyed(SERVER_KEYS, properties),
        "additionalProperties": False,
        "required": ["type"],
        "allOf": [
            {
                "if": local,
                "then": {"required": ["path"], "propertyNames": {"enum": list(LOCAL_SERVER_KEYS)}},
            },
            {
                "if": ssh,
                "then": {"required": ["host"], "propertyNames": {"enum": list(SSH_SERVER_KEYS)}},
            },
        ],
    }


def smtp() -> Schema:
    defaults = _defaults(SmtpConfig)
    properties = {
        "host": described(TEXT, "the mail relay", defaults["host"]),
        "port": described(integer(*PORT_RANGE), "", defaults["port"]),
        "starttls": described(BOOLEAN, "", defaults["starttls"]),
        "ssl": described(BOOLEAN, "TLS from the start (port 465)", defaults["ssl"]),
        "user": nullable(either({"const": ""}, TEXT)),
        "password": SECRET,
        "from": described(or_env(matching("@", "an email address")), "", defaults["sender"]),
        "timeout": described(TIMEOUT, "seconds", defaults["timeout"]),
        "allow_plaintext_auth": described(
            BOOLEAN,
            "AUTH without TLS, for a relay on this machine only",
            defaults["allow_plaintext_auth"],
        ),
    }
    schema = mapping(
        keyed(SMTP_KEYS, properties), description="the mail relay for dispatch jobs and notices"
    )
    # A login never crosses the network unencrypted: user needs starttls, ssl or the opt-in.
    user_set = {"required": ["user"], "properties": {"user": {"not": either(NULL, {"const": ""})}}}
    schema["if"] = user_set
    schema["then"] = {
        "anyOf": [
            {"required": [key], "properties": {key: {"$ref": "#/$defs/true"}}}
            for key in ("starttls", "ssl", "allow_plaintext_auth")
        ]
    }
    return schema


def notify() -> Schema:
    defaults = _defaults(NotifyConfig)
    return mapping(
        {
            "to": described(ADDRESSES, "who gets a notice after each run"),
            "webhook": described(
                nullable(
                    or_env(
                        matching(
                            r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#]+(?:[/?#]\S*)?$",
                            "an http:// or https:// URL",
                        )
                    )
                ),
                "the run as JSON, POSTed to this URL",
            ),
            "webhook_timeout": described(TIMEOUT, "seconds", defaults["webhook_timeout"]),
            "urls": {"$ref": "#/$defs/urls"},
            "urls_timeout": described(TIMEOUT, "seconds", defaults["urls_timeout"]),
        },
        description="notices after each run",
    )


def bounces() -> Schema:
    defaults = _defaults(BounceLimits)
    return mapping(
        {key: described(integer(*BOUNCE_LIMIT_RANGE), "", defaults[key]) for key in defaults},
        description="bounces after which an address is no longer mailed",
    )


def serve() -> Schema:
    token = matching(anchored(API_TOKEN), f"at least {API_TOKEN_MIN_LENGTH} token characters")
    return mapping(
        {"token": described(or_env(token), "the HTTP API's bearer token (a secret)")},
        description="`campaign-sync serve`, the HTTP service",
    )


def retention() -> Schema:
    defaults = _defaults(Retention)
    low, high = RETENTION_DAYS_RANGE
    days = or_env(matching(f"^{DAYS.pattern}$", f"a number of days like 30d, {low}d to {high}d"))
    return mapping(
        {
            "runs": described(
                days,
                "how long run records are kept (a job's newest and its last successful run "
                "always stay)",
                f"{defaults['runs_days']}d",
            ),
            "rejects": described(
                days, "how long rejects files are kept", f"{defaults['rejects_days']}d"
            ),
        },
        description="how long run records and rejects files (personal data) are kept",
    )


def csv_format(*, imports: bool) -> Schema:
    defaults = _defaults(CsvFormat)
    one_character = {"$ref": "#/$defs/one_character"}
    properties = {
        "delimiter": described(
            either({"const": "\\t"}, one_character), "\\t: tab", defaults["delimiter"]
        ),
        "quotechar": described(one_character, "", defaults["quotechar"]),
        "encoding": described(TEXT, "a Python codec name", defaults["encoding"]),
        "date_format": described(nullable(TEXT), "a strptime format; ISO 8601 when not set"),
    }
    if imports:
        header = described(BOOLEAN, "false: the first line is data", defaults["header"])
        properties["header"] = header
    return nullable(mapping(properties, description="the CSV dialect"))


def _field(kind: str) -> Schema:
    """A field an import of this kind takes from a file or a default."""
    known = FILE_FIELDS.get(kind)
    if known is not None:
        return or_env({"enum": list(known)})
    return or_env(
        matching(anchored(FIELD_NAME), FIELD_NAME_TEXT) | {"not": {"enum": list(RESERVED_FIELDS)}}
    )


def _default_value(kind: str, name: str) -> Schema:
    if kind == "bounce-import" and name == "type":
        return or_env(matching(rf"^\s*{one_of_words(BOUNCE_TYPES)}\s*$", " or ".join(BOUNCE_TYPES)))
    return TEXT


def source() -> Schema:
    """An import's `source`."""
    defaults = _defaults(SourceConfig)
    return nullable(
        mapping(
            {
                "server": {"$ref": "#/$defs/server_ref"},
                "path": {"$ref": "#/$defs/source_path"},
                "missing": described(
                    choice(SOURCE_MISSING), "no file: fail the run, or skip it", defaults["missing"]
                ),
                "after": described(
                    choice(SOURCE_AFTER), "what happens to an imported file", defaults["after"]
                ),
                "archive_dir": TEXT,
                "member": described(
                    {"$ref": "#/$defs/remote_path"},
                    "the member of a .zip archive to import (its only file when not set)",
                ),
                "decrypt": described(
                    BOOLEAN, "decrypt with OpenPGP whatever the name", defaults["decrypt"]
                ),
                "verify": described(
                    {"$ref": "#/$defs/fingerprint"},
                    "require an OpenPGP signature by this key",
                ),
                "on_error": described(
                    choice(SOURCE_ON_ERROR),
                    "a pattern path: after a failed file, stop or go on with the next",
                    defaults["on_error"],
                ),
            },
            required=("server", "path"),
            description="where the file comes from",
        )
        | {
            "allOf": [
                {
                    "if": {"required": ["after"], "properties": {"after": {"const": "archive"}}},
                    "then": {"required": ["archive_dir"]},
                },
                {  # only an OpenPGP file carries a signature
                    "if": {"required": ["verify"], "properties": {"verify": {"not": NULL}}},
                    "then": {"anyOf": [_encrypted_path(), _decrypt_on()]},
                },
            ]
        }
    )


def _encrypted_name() -> Schema:
    """A path whose name says OpenPGP (.pgp, .gpg, .asc in any case)."""
    suffixes = "|".join(caseless(suffix[1:]) for suffix in ENCRYPTED_SUFFIXES)
    return {"type": "string", "pattern": rf"\.(?:{suffixes})$"}


def _encrypted_path() -> Schema:
    return {"required": ["path"], "properties": {"path": _encrypted_name()}}


def _decrypt_on() -> Schema:
    return {"required": ["decrypt"], "properties": {"decrypt": {"$ref": "#/$defs/true"}}}


def target() -> Schema:
    """An export's `target`."""
    return mapping(
        {
            "server": {"$ref": "#/$defs/server_ref"},
            "path": {"$ref": "#/$defs/remote_path"},
            "atomic": described(
                BOOLEAN,
                "write under a temporary name, then rename",
                _defaults(TargetConfig)["atomic"],
            ),
            "encrypt_to": described(
                {"$ref": "#/$defs/fingerprint"}, "encrypt with OpenPGP to this key"
            ),
            "sign": described(
                BOOLEAN,
                "sign the encrypted file with pgp.home's own key",
                _defaults(TargetConfig)["sign"],
            ),
        },
        required=("server", "path"),
        description="where the file goes",
    ) | {
        "allOf": [
            {  # sign signs an encrypted file; a name that says OpenPGP must be one
                "if": {"anyOf": [
                    {"required": ["sign"], "properties": {"sign": {"$ref": "#/$defs/true"}}},
                    _encrypted_path(),
                ]},
                "then": {"required": ["encrypt_to"], "properties": {"encrypt_to": {"not": NULL}}},
            }
        ]
    }  # fmt: skip


def pgp() -> Schema:
    return mapping(
        {
            "home": described(TEXT, "the GnuPG home folder with the keys"),
            "passphrase": described(SECRET, "the secret key's passphrase"),
        },
        required=("home",),
        description="OpenPGP for partner files, with the machine's gpg",
    )


def job_notify() -> Schema:
    """A job's own `notify`: addresses, or a mapping of addresses and Apprise URLs."""
    to = described(nullable(ADDRESSES), "added to notify.to")
    urls = described({"$ref": "#/$defs/urls"}, "added to notify.urls")
    return nullable(either(ADDRESSES, mapping({"to": to, "urls": urls})))


def import_keys(kind: str) -> dict[str, Schema]:
    field = _field(kind)
    identity = REQUIRED_FIELDS[kind][0]
    known = FILE_FIELDS.get(kind, ())
    defaults: Schema = {
        "type": "object",
        "description": "a field's value where its cell is empty or the file has no such column",
        "propertyNames": {"allOf": [field, {"not": {"const": identity}}]},
        "additionalProperties": TEXT,
    }
    special = {name: _default_value(kind, name) for name in known if name != identity}
    special = {name: schema for name, schema in special.items() if schema is not TEXT}
    if special:
        defaults["properties"] = special
    modes = ADDING_MODES if kind in ADDING_TYPES else IMPORT_MODES
    return {
        "source": {"$ref": "#/$defs/source"},
        "format": {"$ref": "#/$defs/import_format"},
        "columns": nullable(
            {
                "description": "header: field (or, with format.header false, the field of "
                "each column in order, ~ to skip one)",
                "anyOf": [
                    {"type": "object", "additionalProperties": field},
                    {"type": "array", "items": either(NULL, field)},
                ],
            }
        ),
        "defaults": nullable(defaults),
        "mode": described(nullable(choice(modes)), "", _defaults(JobConfig)["mode"]),
        "max_rejects": described(nullable(LIMIT), "fail the run above this many rejected rows"),
        "max_removals": described(nullable(LIMIT), "mode replace: fail above this many removals"),
    }


def _header_off() -> Schema:
    header = {"$ref": "#/$defs/false"}
    return {
        "required": ["format"],
        "properties": {"format": {"type": "object", "required": ["header"], "properties": {
            "header": header}}},
    }  # fmt: skip


def _header_from_env() -> Schema:
    return {
        "required": ["format"],
        "properties": {"format": {"type": "object", "required": ["header"], "properties": {
            "header": ENV}}},
    }  # fmt: skip


def import_rules(kind: str) -> list[Schema]:
    """What columns and defaults must give together (validate_jobs.import_settings)."""
    columns_given = {
        "required": ["columns"],
        "properties": {"columns": {"type": ["object", "array"]}},
    }
    rules: list[Schema] = [
        {
            "if": _header_off(),
            "then": {"required": ["columns"], "properties": {"columns": {"type": "array"}}},
            "else": {
                "if": {"not": _header_from_env()},
                "then": {"properties": {"columns": {"type": ["object", "null"]}}},
            },
        }
    ]
    for index, needed in enumerate(REQUIRED_FIELDS[kind]):
        value = or_env({"const": needed})
        ways: list[Schema] = [
            {"properties": {"columns": {"type": "object", "not": {"additionalProperties": {
                "not": value}}}}},
            {"properties": {"columns": {"type": "array", "contains": value}}},
        ]  # fmt: skip
        if index > 0:  # the field identifying a row comes from the file only
            ways.append(
                {"required": ["defaults"], "properties": {"defaults": {"required": [needed]}}}
            )
        rules.append({"if": columns_given, "then": {"anyOf": ways}})
    return rules


def export_keys() -> dict[str, Schema]:
    job = _defaults(JobConfig)
    return {
        "target": {"$ref": "#/$defs/target"},
        "format": {"$ref": "#/$defs/export_format"},
        "fields": nullable(
            {
                "type": "array",
                "description": "the columns of the file, in order",
                "minItems": 1,
                "items": {"$ref": "#/$defs/field_name"},
            }
        ),
        "include": described(
            nullable(choice(EXPORT_INCLUDE)), "active: only who may be mailed", job["include"]
        ),
        "changes_only": described(
            nullable(BOOLEAN),
            "only rows changed since the last successful export",
            job["changes_only"],
        ),
    }


def dispatch_keys() -> dict[str, Schema]:
    return {
        "mailings": described(TEXT, "the folder with the list's .eml mailings"),
        "rate": described(nullable(number(*RATE_RANGE)), "messages per second; no limit if unset"),
    }


def job_branch(kind: str) -> Schema:
    """The keys and rules of one job type, applied when `type` names it."""
    list_required = kind in LIST_JOB_TYPES
    common = {
        "type": {"const": kind},
        "list": described(
            TEXT if list_required else nullable(TEXT), "the recipient list the job works on"
        ),
        "schedule": nullable({"$ref": "#/$defs/schedule"}),
        "notify": {"$ref": "#/$defs/job_notify"},
    }
    rules: list[Schema] = []
    required: tuple[str, ...] = ("list",) if list_required else ()
    if kind in IMPORT_TYPES:
        own = import_keys(kind)
        rules = import_rules(kind)
    elif kind in EXPORT_TYPES:
        own, required = export_keys(), required + ("target",)
    else:
        own, required = dispatch_keys(), required + ("mailings",)
    then = mapping(common | own, required=required)
    if rules:
        then["allOf"] = rules
    return {"if": {"required": ["type"], "properties": {"type": {"const": kind}}}, "then": then}


def job() -> Schema:
    return {
        "type": "object",
        "properties": {"type": choice(JOB_TYPES, "what the job does")},
        "required": ["type"],
        "allOf": [job_branch(kind) for kind in JOB_TYPES],
    }


def _names(item: Schema, description: str) -> Schema:
    return nullable(
        {
            "type": "object",
            "description": description,
            "propertyNames": matching(
                anchored(JOB_NAME),
                "letters, digits, '-', '_' and '.', starting with a letter or digit",
            ),
            "additionalProperties": item,
        }
    )


def _store() -> Schema:
    schemes = "|".join(literal(scheme) for scheme in STORE_URL_SCHEMES)
    store = either(
        matching(f"^(?:{schemes})", "a file path or a postgresql:// URL"),
        # A file: any other text, but no other kind of URL.
        {"type": "string", "pattern": r"^(?![\s\S]*://)[\s\S]*\S"},
        {"type": "number"},
        ENV,
    )
    description = "an SQLite file, or a PostgreSQL URL (postgresql://USER@HOST:PORT/DB)"
    return described(store, description, "campaign-sync.db")


def _top_level_rules() -> list[Schema]:
    schemes = "|".join(literal(scheme) for scheme in STORE_URL_SCHEMES)
    dispatch_job = {"required": ["type"], "properties": {"type": {"enum": ["doi-dispatch"]}}}
    return [
        {  # only a PostgreSQL store has a schema
            "if": {"required": ["store_schema"], "properties": {"store_schema": {"not": NULL}}},
            "then": {
                "required": ["store"],
                "properties": {
                    "store": or_env(
                        matching(f"^(?:{schemes})", "a PostgreSQL URL, for store_schema")
                    )
                },
            },
        },
        {  # a dispatch job sends through smtp
            "if": {
                "required": ["jobs"],
                "properties": {
                    "jobs": {
                        "type": "object",
                        "not": {"additionalProperties": {"not": dispatch_job}},
                    }
                },
            },
            "then": {"required": ["smtp"], "properties": {"smtp": {"type": "object"}}},
        },
        {  # a job that decrypts or encrypts uses pgp
            "if": {
                "required": ["jobs"],
                "properties": {
                    "jobs": {
                        "type": "object",
                        "not": {"additionalProperties": {"not": _pgp_job()}},
                    }
                },
            },
            "then": {"required": ["pgp"], "properties": {"pgp": {"type": "object"}}},
        },
    ]


def _pgp_job() -> Schema:
    """A job that decrypts its source or encrypts its target."""
    source = {"type": "object", "anyOf": [_encrypted_path(), _decrypt_on()]}
    target = {
        "type": "object",
        "required": ["encrypt_to"],
        "properties": {"encrypt_to": {"not": NULL}},
    }
    return {"anyOf": [
        {"required": ["source"], "properties": {"source": source}},
        {"required": ["target"], "properties": {"target": target}},
    ]}  # fmt: skip


def top_level() -> dict[str, Schema]:
    properties = {
        "store": _store(),
        "store_schema": described(
            nullable(
                or_env(
                    matching(
                        anchored(SCHEMA_NAME),
                        "a plain PostgreSQL name: letters, digits, _ and $, at most 63",
                    )
                )
            ),
            "a PostgreSQL store's schema",
            "public",
        ),
        "work_dir": described(TEXT, "staging copies, rejects files and locks", "var"),
        "timezone": described(
            nullable(
                or_env(matching(r"^[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*$", "a time zone name"))
            ),
            "an IANA time zone such as Europe/Berlin; the machine's zone when not set",
        ),
        "log_file": described(nullable(either({"const": ""}, TEXT)), "also log to this file"),
        "servers": _names({"$ref": "#/$defs/server"}, "servers by name"),
        "smtp": nullable({"$ref": "#/$defs/smtp"}),
        "notify": nullable({"$ref": "#/$defs/notify"}),
        "bounces": nullable({"$ref": "#/$defs/bounces"}),
        "pgp": nullable({"$ref": "#/$defs/pgp"}),
        "serve": nullable({"$ref": "#/$defs/serve"}),
        "retention": nullable({"$ref": "#/$defs/retention"}),
        "jobs": _names({"$ref": "#/$defs/job"}, "jobs by name"),
    }
    return keyed(TOP_LEVEL_KEYS, properties)


def config_schema() -> Schema:
    """The whole schema, as `campaign-sync schema` prints it."""
    defs = definitions()
    defs |= {
        "server": server(),
        "smtp": smtp(),
        "notify": notify(),
        "bounces": bounces(),
        "pgp": pgp(),
        "serve": serve(),
        "retention": retention(),
        "job": job(),
        "job_notify": job_notify(),
        "source": source(),
        "target": target(),
        "import_format": csv_format(imports=True),
        "export_format": csv_format(imports=False),
    }
    return {
        "$schema": DIALECT,
        "title": "campaign-sync configuration",
        "description": "campaign-sync.yaml; check the real file with `campaign-sync validate`",
        "type": ["object", "null"],
        "properties": top_level(),
        "additionalProperties": False,
        "allOf": _top_level_rules(),
        "$defs": defs,
    }
