"""Configuration: load → interpolate → normalise → validate, in one pipeline.

Every problem is a ConfigError naming the file and the key path (``At 'jobs.x.source': …``).
The result is a tree of frozen dataclasses; nothing downstream looks at raw YAML.
"""

from __future__ import annotations

import datetime
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEFAULT_LOCATIONS = ("campaign-sync.yaml", "/etc/campaign-sync/campaign-sync.yaml")

IMPORT_TYPES = ("recipient-import", "blocklist-import", "unsubscriber-import", "bounce-import")
EXPORT_TYPES = ("recipient-export", "blocklist-export", "unsubscriber-export", "bounce-export")
DISPATCH_TYPES = ("doi-dispatch",)
JOB_TYPES = IMPORT_TYPES + EXPORT_TYPES + DISPATCH_TYPES
# Job types that work on one recipient list and therefore need `list`.
LIST_JOB_TYPES = ("recipient-import", "recipient-export", "doi-dispatch")

IMPORT_MODES = ("upsert", "add-only", "update-only", "replace")
# What a file can give each import type. Recipient files take any field name except the ones
# kept in their own columns or managed by campaign-sync; the other types know their fields.
RESERVED_FIELDS = ("status", "created_at", "updated_at", "list", "fields")
FILE_FIELDS = {
    "blocklist-import": ("pattern", "reason"),
    "unsubscriber-import": ("email", "list", "date", "reason"),
    "bounce-import": ("email", "type", "date"),
}
# The fields every row needs, from a column or a default; the first identifies the row and
# comes from the file only.
REQUIRED_FIELDS = {
    "recipient-import": ("email",),
    "blocklist-import": ("pattern",),
    "unsubscriber-import": ("email",),
    "bounce-import": ("email", "type"),
}
# The field read as a date, per import type.
DATE_FIELD = {
    "recipient-import": "doi_confirmed_at",
    "unsubscriber-import": "date",
    "bounce-import": "date",
}
BOUNCE_TYPES = ("hard", "soft")
FIELD_NAME = re.compile(r"[a-z_][a-z0-9_]*\Z")
JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# A fixed date used only to check that a path's placeholders render.
_SAMPLE_DATE = datetime.date(2000, 1, 31)
# The ranges numbers must lie in (README, "Configuration"); every number is finite as well.
TIMEOUT_RANGE = (0.1, 3600.0)  # seconds: ssh, smtp, webhook
RATE_RANGE = (0.001, 1000.0)  # messages per second
BOUNCE_LIMIT_RANGE = (1, 1000)
MAX_LIMIT_COUNT = 1_000_000_000  # max_rejects / max_removals as a count of rows


TOP_LEVEL_KEYS = (
    "store",
    "work_dir",
    "timezone",
    "log_file",
    "servers",
    "smtp",
    "notify",
    "bounces",
    "jobs",
)

# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Limit:
    """A count (``50``) or a share of the data rows (``1%``)."""

    value: float
    percent: bool

    def allowed(self, total: int) -> int:
        return int(total * self.value / 100) if self.percent else int(self.value)

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.percent else str(int(self.value))


@dataclass(frozen=True)
class ServerConfig:
    name: str
    type: str  # ssh | local
    path: Path | None = None  # local: the folder remote paths are relative to
    host: str = ""
    port: int = 22
    user: str | None = None
    key_file: Path | None = None
    key_passphrase: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    known_hosts: Path | None = None
    host_key: str | None = None
    protocol: str = "scp"  # scp | sftp
    timeout: float = 30.0
    retries: int = 3
    agent: bool = False


@dataclass(frozen=True)
class SmtpConfig:
    host: str = "localhost"
    port: int = 25
    starttls: bool = False
    ssl: bool = False
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    sender: str = "campaign-sync@localhost"
    timeout: float = 30.0
    # AUTH without TLS, for a relay on this machine only (checked again on the socket).
    allow_plaintext_auth: bool = False


@dataclass(frozen=True)
class NotifyConfig:
    to: tuple[str, ...] = ()
    webhook: str | None = None
    webhook_timeout: float = 10.0


@dataclass(frozen=True)
class BounceLimits:
    hard_limit: int = 3
    soft_limit: int = 10


@dataclass(frozen=True)
class CsvFormat:
    delimiter: str = ","
    quotechar: str = '"'
    encoding: str = "utf-8"
    date_format: str | None = None  # strptime format; None means ISO 8601
    header: bool = True  # imports: false when the file's first line is already data


@dataclass(frozen=True)
class SourceConfig:
    server: str
    path: str
    missing: str = "fail"  # fail | skip
    after: str = "keep"  # keep | delete | archive
    archive_dir: str | None = None


@dataclass(frozen=True)
class TargetConfig:
    server: str
    path: str
    atomic: bool = True


@dataclass(frozen=True)
class JobConfig:
    name: str
    type: str
    list: str | None = None
    schedule: str | None = None
    notify: tuple[str, ...] = ()
    # imports
    source: SourceConfig | None = None
    columns: dict[str, str] = field(default_factory=dict)  # header: field
    # format.header false: the field of each column in order (None: the column is skipped)
    column_fields: tuple[str | None, ...] = ()
    defaults: dict[str, str] = field(default_factory=dict)  # field: value for empty cells
    mode: str = "upsert"
    max_rejects: Limit | None = None
    max_removals: Limit | None = None
    # imports and exports
    format: CsvFormat = field(default_factory=CsvFormat)
    # exports
    target: TargetConfig | None = None
    fields: tuple[str, ...] = ()
    include: str = "active"  # active | all
    changes_only: bool = False
    # dispatch
    mailings: Path | None = None
    rate: float | None = None  # messages per second

    @property
    def column_labels(self) -> list[str]:
        """The header of a file without one: each column's field, `column N` if skipped."""
        return [name or f"column {i}" for i, name in enumerate(self.column_fields, 1)]

    @property
    def kind(self) -> str:
        """`import`, `export` or `dispatch`: the command that runs this job."""
        if self.type in IMPORT_TYPES:
            return "import"
        if self.type in EXPORT_TYPES:
            return "export"
        return "dispatch"


@dataclass(frozen=True)
class Config:
    path: Path
    store: str
    work_dir: Path
    timezone: str | None
    log_file: Path | None
    servers: dict[str, ServerConfig]
    smtp: SmtpConfig | None
    notify: NotifyConfig
    bounces: BounceLimits
    jobs: dict[str, JobConfig]

    def job(self, name: str) -> JobConfig:
        try:
            return self.jobs[name]
        except KeyError:
            known = ", ".join(sorted(self.jobs)) or "none"
            raise ConfigError(
                f"no job named '{name}' (configured jobs: {known})", path=str(self.path)
            ) from None


# --------------------------------------------------------------------------- locating


def locate(explicit: str | None) -> Path:
    """The config file to use: --config, then $CAMPAIGN_SYNC_CONFIG, then the defaults."""
    chosen = explicit or os.environ.get("CAMPAIGN_SYNC_CONFIG")
    if chosen:
        return Path(chosen)
    for candidate in DEFAULT_LOCATIONS:
        if Path(candidate).is_file():
            return Path(candidate)
    raise ConfigError(
        "no config file found: pass --config PATH, set CAMPAIGN_SYNC_CONFIG, or create "
        "./campaign-sync.yaml or /etc/campaign-sync/campaign-sync.yaml"
    )


def load(explicit: str | None = None, *, env: dict[str, str] | None = None) -> Config:
    path = locate(explicit)
    raw = _read_yaml(path)
    raw = _interpolate(raw, os.environ if env is None else env, str(path), "")
    return _Validator(path).config(raw)


def problems(explicit: str | None = None, *, warnings: list[str] | None = None) -> list[str]:
    """Every problem of the config file, each naming its location; empty when it is valid.

    `warnings`, when given, receives what is allowed but unwise (a weak secret).
    """
    path = locate(explicit)
    try:
        raw = _read_yaml(path)
    except ConfigError as exc:
        return [str(exc)]
    found: list[str] = []
    interpolated = _interpolate_collecting(raw, str(path), found)
    validator = _Validator(path, collect=True)
    try:
        loaded = validator.config(interpolated)
    except ConfigError as exc:
        found.append(str(exc))
    else:
        if warnings is not None:
            from .redact import weak_secret_warnings

            warnings += weak_secret_warnings(loaded)
    assert validator.collected is not None
    return found + validator.collected


def _interpolate_collecting(value: Any, path: str, found: list[str], key: str = "") -> Any:
    """Interpolate value by value, noting each unset variable instead of stopping."""
    if isinstance(value, dict):
        return {k: _interpolate_collecting(v, path, found, _join(key, k)) for k, v in value.items()}
    try:
        return _interpolate(value, os.environ, path, key)
    except ConfigError as exc:
        found.append(str(exc))
        return None


# --------------------------------------------------------------------------- reading


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", path=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file: {exc}", path=str(path)) from None

    try:
        data = _parse_yaml(text, path)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        if "expected ',' or '}'" in problem:
            problem += ' (inside {…} quote values that contain { or }, e.g. path: "/x_{date}.csv")'
        raise ConfigError(f"{where}invalid YAML: {problem}", path=str(path)) from None
    except RecursionError:  # only the pure-Python parser recurses; libyaml stops at 1000
        raise _too_deep(path) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping of keys", path=str(path))
    return data


def _parse_yaml(text: str, path: Path) -> Any:
    """Parse to nodes, check their shape and size (_check_nodes), then build the values."""
    import yaml

    loader_base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    merge_tag = "tag:yaml.org,2002:merge"

    class UniqueKeyLoader(loader_base):  # type: ignore[misc, valid-type]
        """SafeLoader that refuses a key given twice in one mapping."""

        def construct_object(self, node: Any, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep=deep)
            except (ValueError, OverflowError):
                # `2024-13-45` or `!!int x`: the value is not quoted back (it may be a secret).
                tag = str(node.tag).rsplit(":", 1)[-1]
                kind = {"timestamp": "date", "int": "whole number", "float": "number"}.get(tag, tag)
                raise ConfigError(
                    f"line {node.start_mark.line + 1}: not a valid {kind}; "
                    "quote the value if it is meant as text",
                    path=str(path),
                ) from None

    def construct_mapping(loader: Any, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == merge_tag:  # `<<: *defaults` is resolved by construct_mapping
                continue
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise ConfigError(f"line {line}: key '{key}' is given twice", path=str(path))
            seen.add(key)
        return loader.construct_mapping(node, deep=deep)

    UniqueKeyLoader.add_constructor(
        yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping
    )
    loader = UniqueKeyLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check_nodes(root, path)
        return loader.construct_document(root)
    finally:
        loader.dispose()


# A small file must not expand into a huge one ("billion laughs": aliases of aliases), nor nest
# so deep that walking it exhausts Python's recursion. Checked on the parsed nodes, where an
# alias is one shared node, so the check itself costs time and memory linear in the file.
MAX_ALIAS_VALUES = 100_000  # values that aliases may add, with every alias expanded in place
MAX_ALIAS_CHARACTERS = 10_000_000  # characters of text that aliases may add
MAX_DEPTH = 100  # levels of nesting, aliases expanded
_SATURATED = 2**62  # sizes stop growing here: a deep chain of aliases stays cheap to measure


def _check_nodes(root: Any, path: Path) -> None:
    """Refuse, before any value is built: aliases that expand too far or refer to themselves,
    nesting too deep, and a key that is a list or a mapping."""
    sizes = _expanded_sizes(root, path)
    values, characters, depth = sizes[id(root)]
    own_characters = sum(size[1] for size in sizes.values() if size[0] == 1)
    if values - len(sizes) > MAX_ALIAS_VALUES:
        raise _alias_bomb(path, f"{MAX_ALIAS_VALUES} values")
    if characters - own_characters > MAX_ALIAS_CHARACTERS:
        raise _alias_bomb(path, f"{MAX_ALIAS_CHARACTERS} characters")
    if depth > MAX_DEPTH:
        raise _too_deep(path)
    _check_keys(root, path)


def _node_children(node: Any) -> list[Any]:
    from yaml import MappingNode, SequenceNode

    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _expanded_sizes(root: Any, path: Path) -> dict[int, tuple[int, int, int]]:
    """For every distinct node: how many values and characters it holds and how deep it
    nests once every alias in it is expanded. Iterative, each node measured once."""
    sizes: dict[int, tuple[int, int, int]] = {}
    open_nodes: set[int] = set()  # the nodes being measured: the current node's ancestors
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        children = _node_children(node)
        if children_done:
            open_nodes.discard(id(node))
            parts = [sizes[id(child)] for child in children]
            own = len(node.value) if isinstance(node.value, str) else 0
            sizes[id(node)] = (
                min(1 + sum(part[0] for part in parts), _SATURATED),
                min(own + sum(part[1] for part in parts), _SATURATED),
                1 + max((part[2] for part in parts), default=0),
            )
            continue
        if id(node) in sizes:
            continue
        open_nodes.add(id(node))
        stack.append((node, True))
        for child in reversed(children):
            if id(child) in open_nodes:
                raise ConfigError(
                    f"line {child.start_mark.line + 1}: this value contains an alias to itself; "
                    "an alias may only repeat a value, not refer to the one it is part of",
                    path=str(path),
                )
            stack.append((child, False))
    return sizes


def _check_keys(root: Any, path: Path) -> None:
    """Every key is a scalar: a list or mapping as a key (`[1, 2]: …`, `? {a: 1}`) is refused
    with its location. Runs after the size check, so walking with aliases expanded is cheap."""
    from yaml import MappingNode, ScalarNode, SequenceNode

    stack: list[tuple[Any, str]] = [(root, "")]
    while stack:
        node, where = stack.pop()
        children: list[tuple[Any, str]] = []
        if isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                if not isinstance(key_node, ScalarNode):
                    kind = "a list" if isinstance(key_node, SequenceNode) else "a mapping"
                    level = "" if where else " at the top level"
                    raise ConfigError(
                        f"line {key_node.start_mark.line + 1}: a key{level} is {kind}; keys "
                        "must be names or plain values (quote the key if it is meant as text)",
                        path=str(path),
                        key=where or None,
                    )
                children.append((value_node, _join(where, key_node.value)))
        elif isinstance(node, SequenceNode):
            children = [(child, f"{where}[{i}]") for i, child in enumerate(node.value)]
        stack.extend(reversed(children))


def _alias_bomb(path: Path, limit: str) -> ConfigError:
    return ConfigError(
        f"YAML aliases (*name) would expand this file by more than {limit}, the limit; "
        "use fewer or smaller aliases, or write the repeated parts out",
        path=str(path),
    )


def _too_deep(path: Path) -> ConfigError:
    return ConfigError(
        f"the file nests more than {MAX_DEPTH} levels deep (aliases expanded); flatten it",
        path=str(path),
    )


def _interpolate(value: Any, env: Any, path: str, key: str) -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string, naming the key of an unset one."""
    if isinstance(value, dict):
        return {k: _interpolate(v, env, path, _join(key, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, path, f"{key}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        raise ConfigError(
            f"environment variable {name} is not set (set it, or write ${{{name}:-default}})",
            path=path,
            key=key,
        )

    return _ENV_REF.sub(substitute, value)


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


# --------------------------------------------------------------------------- validating


class _Validator:
    """Turns the interpolated YAML tree into a Config, or raises the first problem found.

    `problems()` collects every problem instead, for `campaign-sync validate`.
    """

    def __init__(self, path: Path, *, collect: bool = False):
        self.path = path
        self.base = path.resolve().parent
        self.collected: list[str] | None = [] if collect else None

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, path=str(self.path), key=key)

    # -- scalar helpers ------------------------------------------------------------

    def mapping(self, value: Any, key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {_kind(value)}")
        unknown = [k for k in value if k not in allowed]
        for k in unknown:
            self.note(self.fail(_join(key, k), f"unknown key (allowed here: {', '.join(allowed)})"))
        return {k: v for k, v in value.items() if k not in unknown}

    def string(self, value: Any, key: str, *, choices: tuple[str, ...] = ()) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.fail(key, f"expected a string, got {_kind(value)}")
        text = str(value)
        if choices and text not in choices:
            raise self.fail(key, f"'{text}' is not one of: {', '.join(choices)}")
        if not text.strip():
            raise self.fail(key, "must not be empty")
        return text

    def integer(self, value: Any, key: str, *, minimum: int = 0, maximum: int = 2**31) -> int:
        if isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,30}\s*", value):
            value = int(value)  # an interpolated ${PORT} arrives as text
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected a whole number, got {_kind(value)}")
        if not minimum <= value <= maximum:
            raise self.fail(key, f"{_short(value)} is out of range ({minimum}..{maximum})")
        return value

    def number(self, value: Any, key: str, *, minimum: float = 0.0, maximum: float = 1e9) -> float:
        """A finite number within [minimum, maximum]: NaN and infinity (`.nan`, `.inf`,
        `1.0e999`, an interpolated "nan") are refused like any other value out of range."""
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise self.fail(key, f"expected a number, got '{value}'") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"expected a number, got {_kind(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(key, f"expected a finite number, got {value}")
        if not minimum <= value <= maximum:
            raise self.fail(key, f"{_short(value)} is out of range ({minimum:g}..{maximum:g})")
        return float(value)

    def timeout(self, value: Any, key: str) -> float:
        return self.number(value, key, minimum=TIMEOUT_RANGE[0], maximum=TIMEOUT_RANGE[1])

    def bounce_limit(self, value: Any, key: str) -> int:
        low, high = BOUNCE_LIMIT_RANGE
        return self.integer(value, key, minimum=low, maximum=high)

    def boolean(self, value: Any, key: str) -> bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {_kind(value)}")
        return value

    def secret(self, value: Any, key: str) -> str | None:
        """A password or passphrase: text only. YAML would turn `0123` into 83, silently."""
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self.fail(key, f"expected text, got {_kind(value)}; put it in quotes")
        return value

    def local_path(self, value: Any, key: str) -> Path:
        text = self.string(value, key)
        path = Path(text).expanduser()
        return path if path.is_absolute() else self.base / path

    def addresses(self, value: Any, key: str) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list of addresses, got {_kind(value)}")
        out = []
        for i, item in enumerate(value):
            address = self.string(item, f"{key}[{i}]")
            if "@" not in address:
                raise self.fail(f"{key}[{i}]", f"'{address}' is not an email address")
            out.append(address)
        return tuple(out)

    def limit(self, value: Any, key: str) -> Limit:
        text = str(value).strip() if not isinstance(value, bool) else ""
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(%?)", text)
        if not match:
            raise self.fail(key, f"expected a count or a percentage like 1%, got {value!r}")
        number, percent = float(match.group(1)), bool(match.group(2))
        if percent and number > 100:
            raise self.fail(key, f"{text} is more than 100%")
        if not percent and number > MAX_LIMIT_COUNT:
            raise self.fail(key, f"a count must be at most {MAX_LIMIT_COUNT} (or a percentage)")
        return Limit(number, percent)

    # -- sections -----------------------------------------------------------------

    def attempt(self, build: Any, default: Any = None) -> Any:
        """Run one section's validation; when collecting, note its problem and go on."""
        if self.collected is None:
            return build()
        try:
            return build()
        except ConfigError as exc:
            self.collected.append(str(exc))
            return default

    def note(self, problem: ConfigError) -> None:
        """Raise the problem; when collecting, note it and go on."""
        if self.collected is None:
            raise problem
        self.collected.append(str(problem))

    def settle(self, values: dict[str, Any], name: str, build: Any) -> None:
        """values[name] = build(), unless (when collecting) it had a problem: then it is
        noted and the key left unset, so the checks after it see no made-up value."""
        value = self.attempt(build)
        if value is not None:
            values[name] = value

    def config(self, raw: dict[str, Any]) -> Config:
        top = self.mapping(raw, "", TOP_LEVEL_KEYS)
        servers_raw = top.get("servers") or {}
        if not isinstance(servers_raw, dict):
            raise self.fail(
                "servers", f"expected a mapping of server names, got {_kind(servers_raw)}"
            )
        servers: dict[str, ServerConfig] = {}
        for name, spec in servers_raw.items():
            server = self.attempt(lambda n=name, s=spec: self.server(self.name(n, "servers"), s))
            if server is not None:
                servers[server.name] = server
        timezone = self.attempt(lambda: self.timezone(top.get("timezone")))
        smtp = self.attempt(lambda: self.smtp(top["smtp"]) if top.get("smtp") is not None else None)
        jobs_raw = top.get("jobs") or {}
        if not isinstance(jobs_raw, dict):
            raise self.fail("jobs", f"expected a mapping of job names, got {_kind(jobs_raw)}")
        jobs: dict[str, JobConfig] = {}
        for name, spec in jobs_raw.items():
            job = self.attempt(
                lambda n=name, s=spec: self.job(self.name(n, "jobs"), s, servers_raw, servers, smtp)
            )
            if job is not None:
                jobs[job.name] = job
        return Config(
            path=self.path,
            store=self.attempt(lambda: self.store(top.get("store", "campaign-sync.db")), ""),
            work_dir=self.attempt(
                lambda: self.local_path(top.get("work_dir", "var"), "work_dir"), Path()
            ),
            timezone=timezone,
            log_file=self.attempt(
                lambda: (
                    self.local_path(top["log_file"], "log_file") if top.get("log_file") else None
                )
            ),
            servers=servers,
            smtp=smtp,
            notify=self.attempt(lambda: self.notify(top.get("notify")), NotifyConfig()),
            bounces=self.attempt(lambda: self.bounces(top.get("bounces")), BounceLimits()),
            jobs=jobs,
        )

    def store(self, value: Any) -> str:
        store = self.string(value, "store")
        if "://" in store:
            # Not quoted back: a server URL may carry a password.
            raise self.fail(
                "store",
                "server URLs are not supported by this version, only SQLite files; "
                "set `store` to a file path",
            )
        return str(self.local_path(store, "store"))

    def timezone(self, value: Any) -> str | None:
        if value is None:
            return None
        name = self.string(value, "timezone")
        _check_timezone(name, self.fail("timezone", f"unknown time zone '{name}'"))
        return name

    def name(self, name: Any, section: str) -> str:
        if not isinstance(name, str):
            # YAML reads `2024:` as a number, `yes:` as true, `010:` as 8: not what was typed.
            raise self.fail(
                _join(section, name), f"a name must be text, got {_kind(name)}; put it in quotes"
            )
        text = name
        if not JOB_NAME.match(text):
            raise self.fail(
                _join(section, text),
                "names may use letters, digits, '-', '_' and '.', starting with a letter or digit",
            )
        return text

    def server(self, name: str, raw: Any) -> ServerConfig:
        key = f"servers.{name}"
        spec = self.mapping(
            raw,
            key,
            (
                "type",
                "path",
                "host",
                "port",
                "user",
                "key_file",
                "key_passphrase",
                "password",
                "known_hosts",
                "host_key",
                "protocol",
                "timeout",
                "retries",
                "agent",
            ),
        )
        kind = self.string(spec.get("type"), f"{key}.type", choices=("ssh", "local"))
        if kind == "local":
            extra = sorted(set(spec) - {"type", "path"})
            if extra:
                raise self.fail(f"{key}.{extra[0]}", "not used by a server of type local")
            if "path" not in spec:
                raise self.fail(f"{key}.path", "required for a server of type local")
            return ServerConfig(name=name, type="local", path=self.local_path(spec["path"], key))
        if "path" in spec:
            raise self.fail(f"{key}.path", "only servers of type local have a path")
        if "host" not in spec:
            raise self.fail(f"{key}.host", "required for a server of type ssh")
        key_file = None
        if spec.get("key_file") is not None:
            key_file = self.local_path(spec["key_file"], f"{key}.key_file")
            if not os.access(key_file, os.R_OK):
                self.note(self.fail(f"{key}.key_file", f"cannot read key file {key_file}"))
        known_hosts = None
        if spec.get("known_hosts") is not None:
            known_hosts = self.local_path(spec["known_hosts"], f"{key}.known_hosts")
        host_key = None
        if spec.get("host_key") is not None:
            host_key = self.string(spec["host_key"], f"{key}.host_key")
            if not re.fullmatch(r"SHA256:[A-Za-z0-9+/]{43}=?", host_key):
                self.note(
                    self.fail(
                        f"{key}.host_key",
                        "expected a fingerprint like SHA256:<43 base64 characters>",
                    )
                )
        if known_hosts is None and host_key is None:
            known_hosts = Path("~/.ssh/known_hosts").expanduser()
        return ServerConfig(
            name=name,
            type="ssh",
            host=self.string(spec["host"], f"{key}.host"),
            port=self.attempt(
                lambda: self.integer(spec.get("port", 22), f"{key}.port", minimum=1, maximum=65535)
            ),
            user=self.string(spec["user"], f"{key}.user") if spec.get("user") else None,
            key_file=key_file,
            key_passphrase=self.secret(spec.get("key_passphrase"), f"{key}.key_passphrase"),
            password=self.secret(spec.get("password"), f"{key}.password"),
            known_hosts=known_hosts,
            host_key=host_key,
            protocol=self.attempt(
                lambda: self.string(
                    spec.get("protocol", "scp"), f"{key}.protocol", choices=("scp", "sftp")
                )
            ),
            timeout=self.attempt(lambda: self.timeout(spec.get("timeout", 30), f"{key}.timeout")),
            retries=self.attempt(
                lambda: self.integer(spec.get("retries", 3), f"{key}.retries", maximum=20)
            ),
            agent=self.attempt(lambda: self.boolean(spec.get("agent", False), f"{key}.agent")),
        )

    def smtp(self, raw: Any) -> SmtpConfig:
        spec = self.mapping(
            raw,
            "smtp",
            (
                "host",
                "port",
                "starttls",
                "ssl",
                "user",
                "password",
                "from",
                "timeout",
                "allow_plaintext_auth",
            ),
        )
        sender = self.string(spec.get("from", "campaign-sync@localhost"), "smtp.from")
        if "@" not in sender:
            raise self.fail("smtp.from", f"'{sender}' is not an email address")
        smtp = SmtpConfig(
            host=self.string(spec.get("host", "localhost"), "smtp.host"),
            port=self.integer(spec.get("port", 25), "smtp.port", minimum=1, maximum=65535),
            starttls=self.boolean(spec.get("starttls", False), "smtp.starttls"),
            ssl=self.boolean(spec.get("ssl", False), "smtp.ssl"),
            user=self.string(spec["user"], "smtp.user") if spec.get("user") else None,
            password=self.secret(spec.get("password"), "smtp.password"),
            sender=sender,
            timeout=self.timeout(spec.get("timeout", 30), "smtp.timeout"),
            allow_plaintext_auth=self.boolean(
                spec.get("allow_plaintext_auth", False), "smtp.allow_plaintext_auth"
            ),
        )
        self.smtp_auth_encrypted(smtp)
        return smtp

    def smtp_auth_encrypted(self, smtp: SmtpConfig) -> None:
        """A password never crosses the network unencrypted: AUTH needs STARTTLS or SSL,
        except towards a relay on this machine when the operator opted in."""
        if smtp.allow_plaintext_auth and not is_loopback(smtp.host):
            self.note(
                self.fail(
                    "smtp.allow_plaintext_auth",
                    f"only for a relay on this machine (localhost, 127.0.0.1, ::1), not "
                    f"'{smtp.host}'; use starttls: true (or ssl: true) instead",
                )
            )
        elif smtp.user and not (smtp.starttls or smtp.ssl or smtp.allow_plaintext_auth):
            self.note(
                self.fail(
                    "smtp.starttls",
                    "required when smtp.user is set, or the password would be sent "
                    "unencrypted: set starttls: true (or ssl: true for port 465); for a relay "
                    "on this machine, allow_plaintext_auth: true",
                )
            )

    def notify(self, raw: Any) -> NotifyConfig:
        spec = self.mapping(raw, "notify", ("to", "webhook", "webhook_timeout"))
        webhook = None
        if spec.get("webhook") is not None:
            webhook = self.web_url(spec["webhook"], "notify.webhook")
        return NotifyConfig(
            to=self.addresses(spec.get("to", []), "notify.to"),
            webhook=webhook,
            webhook_timeout=self.timeout(spec.get("webhook_timeout", 10), "notify.webhook_timeout"),
        )

    def web_url(self, value: Any, key: str) -> str:
        """An http(s) URL a request can be sent to. Never quoted back: it may hold a password."""
        url = self.string(value, key)
        problem = _url_problem(url)
        if problem:
            raise self.fail(key, f"expected an http:// or https:// URL: {problem}")
        return url

    def bounces(self, raw: Any) -> BounceLimits:
        spec = self.mapping(raw, "bounces", ("hard_limit", "soft_limit"))
        return BounceLimits(
            hard_limit=self.bounce_limit(spec.get("hard_limit", 3), "bounces.hard_limit"),
            soft_limit=self.bounce_limit(spec.get("soft_limit", 10), "bounces.soft_limit"),
        )

    def csv_format(self, raw: Any, key: str, *, imports: bool = False) -> CsvFormat:
        allowed = ("delimiter", "quotechar", "encoding", "date_format")
        spec = self.mapping(raw, key, allowed + (("header",) if imports else ()))
        fmt = CsvFormat()
        delimiter = spec.get("delimiter", fmt.delimiter)
        if delimiter == "\\t":
            delimiter = "\t"
        quotechar = spec.get("quotechar", fmt.quotechar)
        for name, value in (("delimiter", delimiter), ("quotechar", quotechar)):
            if not isinstance(value, str) or len(value) != 1 or value in "\r\n":
                raise self.fail(f"{key}.{name}", f"expected one character, got {value!r}")
        if delimiter == quotechar:
            raise self.fail(f"{key}.quotechar", "must differ from the delimiter")
        encoding = self.string(spec.get("encoding", fmt.encoding), f"{key}.encoding")
        import codecs

        try:
            codecs.lookup(encoding)
        except LookupError:
            raise self.fail(f"{key}.encoding", f"unknown encoding '{encoding}'") from None
        date_format = None
        if spec.get("date_format") is not None:
            date_format = self.string(spec["date_format"], f"{key}.date_format")
        header = self.boolean(spec.get("header", True), f"{key}.header")
        return CsvFormat(delimiter, quotechar, encoding, date_format, header)

    def job(
        self,
        name: str,
        raw: Any,
        declared: dict[str, Any],
        servers: dict[str, ServerConfig],
        smtp: SmtpConfig | None,
    ) -> JobConfig:
        key = f"jobs.{name}"
        if not isinstance(raw, dict):
            raise self.fail(key, f"expected a mapping, got {_kind(raw)}")
        kind = self.string(raw.get("type"), f"{key}.type", choices=JOB_TYPES)
        common = ("type", "list", "schedule", "notify")
        if kind in IMPORT_TYPES:
            allowed = common + ("source", "format", "columns", "defaults", "mode", "max_rejects")
            allowed += ("max_removals",)
        elif kind in EXPORT_TYPES:
            allowed = common + ("target", "format", "fields", "include", "changes_only")
        else:
            allowed = common + ("mailings", "rate")
        spec = self.mapping(raw, key, allowed)

        values: dict[str, Any] = {"name": name, "type": kind}
        if kind in LIST_JOB_TYPES or spec.get("list") is not None:
            if spec.get("list") is None:
                raise self.fail(f"{key}.list", f"required for a {kind} job")
            values["list"] = self.string(spec["list"], f"{key}.list")
        if spec.get("schedule") is not None:
            self.settle(
                values, "schedule", lambda: self.schedule(spec["schedule"], f"{key}.schedule")
            )
        if spec.get("notify") is not None:
            self.settle(values, "notify", lambda: self.addresses(spec["notify"], f"{key}.notify"))
        if "format" in spec:
            imports = kind in IMPORT_TYPES
            self.settle(
                values,
                "format",
                lambda: self.csv_format(spec["format"], f"{key}.format", imports=imports),
            )

        if kind in IMPORT_TYPES:
            # (a format with a problem: what it would say is unknown, so it is not assumed)
            fmt = values.get("format", CsvFormat() if "format" not in spec else None)
            values.update(self.import_settings(key, spec, declared, fmt))
        elif kind in EXPORT_TYPES:
            values.update(self.export_settings(key, spec, declared))
        else:
            if spec.get("mailings") is None:
                raise self.fail(f"{key}.mailings", "required for a doi-dispatch job")
            values["mailings"] = self.local_path(spec["mailings"], f"{key}.mailings")
            if spec.get("rate") is not None:
                low, high = RATE_RANGE
                values["rate"] = self.number(spec["rate"], f"{key}.rate", minimum=low, maximum=high)
            if smtp is None:
                raise self.fail("smtp", f"required by the doi-dispatch job '{name}'")
        return JobConfig(**values)

    def schedule(self, value: Any, key: str) -> str:
        text = self.string(value, key)
        from .core.schedule import ScheduleError, parse

        try:
            return parse(text).text  # normalised: "WEEKLY Mon, Thu 06:00" → "weekly mon,thu 06:00"
        except ScheduleError as exc:
            raise self.fail(key, str(exc)) from None

    def server_ref(self, value: Any, key: str, servers: dict[str, Any]) -> str:
        name = self.string(value, key)
        if name not in servers:
            known = ", ".join(sorted(servers)) or "none configured"
            raise self.fail(key, f"no server named '{name}' (servers: {known})")
        return name

    def remote_path(self, value: Any, key: str) -> str:
        text = self.string(value, key)
        try:
            from .core.path_templates import render

            render(text, _SAMPLE_DATE)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None
        return text

    def import_settings(
        self, key: str, spec: dict[str, Any], servers: dict[str, Any], fmt: CsvFormat | None
    ) -> dict[str, Any]:
        values: dict[str, Any] = {}
        kind = spec["type"]
        if spec.get("source") is not None:
            self.settle(values, "source", lambda: self.source(f"{key}.source", spec, servers))
        header = None if fmt is None else fmt.header
        if spec.get("columns") is not None:
            raw = spec["columns"]
            self.settle(
                values,
                "column_fields" if isinstance(raw, list) else "columns",
                lambda: self.columns(f"{key}.columns", raw, kind, header),
            )
        elif header is False:
            self.note(
                self.fail(
                    f"{key}.columns",
                    "required when format.header is false: a list with the field of each "
                    "column, ~ to skip one (e.g. columns: [email, first_name, ~, last_name])",
                )
            )
        if spec.get("defaults") is not None:
            self.settle(
                values,
                "defaults",
                lambda: self.defaults(f"{key}.defaults", spec["defaults"], kind, fmt),
            )
        # What columns and defaults give together, unless one of them had a problem.
        columns_lost = spec.get("columns") is not None and not (
            {"columns", "column_fields"} & set(values)
        )
        defaults_lost = spec.get("defaults") is not None and "defaults" not in values
        if not (columns_lost or defaults_lost):
            self.attempt(lambda: self.provided(f"{key}.columns", kind, values))
        if spec.get("mode") is not None:
            self.settle(
                values,
                "mode",
                lambda: self.string(spec["mode"], f"{key}.mode", choices=IMPORT_MODES),
            )
        if spec["type"] in ("unsubscriber-import", "bounce-import") and values.get(
            "mode", "upsert"
        ) not in ("upsert", "add-only"):
            self.note(self.fail(f"{key}.mode", f"a {spec['type']} job only adds (mode upsert)"))
        for limit in ("max_rejects", "max_removals"):
            if spec.get(limit) is not None:
                self.settle(values, limit, lambda n=limit: self.limit(spec[n], f"{key}.{n}"))
        return values

    def source(self, skey: str, spec: dict[str, Any], servers: dict[str, Any]) -> SourceConfig:
        src = self.mapping(
            spec["source"], skey, ("server", "path", "missing", "after", "archive_dir")
        )
        for required in ("server", "path"):
            if required not in src:
                raise self.fail(f"{skey}.{required}", "required")
        after = self.string(
            src.get("after", "keep"), f"{skey}.after", choices=("keep", "delete", "archive")
        )
        archive_dir = None
        if after == "archive":
            if not src.get("archive_dir"):
                raise self.fail(f"{skey}.archive_dir", "required when after is archive")
            archive_dir = self.string(src["archive_dir"], f"{skey}.archive_dir")
        # Each key checked on its own (attempt), so validate reports all of them.
        return SourceConfig(
            server=self.attempt(lambda: self.server_ref(src["server"], f"{skey}.server", servers)),
            path=self.attempt(lambda: self.remote_path(src["path"], f"{skey}.path")),
            missing=self.attempt(
                lambda: self.string(
                    src.get("missing", "fail"), f"{skey}.missing", choices=("fail", "skip")
                )
            ),
            after=after,
            archive_dir=archive_dir,
        )

    def columns(
        self, ckey: str, columns: Any, kind: str, header: bool | None
    ) -> dict[str, str] | tuple[str | None, ...] | None:
        """A mapping header: field (files with a header line) or a list of fields (files
        without); None when (collecting) one of its entries had a problem."""
        if isinstance(columns, list):
            if header:
                raise self.fail(
                    ckey,
                    "a list of columns is for a file without a header line: set format.header: "
                    "false, or map the header's names (e.g. columns: {E-Mail: email})",
                )
            return self.column_list(ckey, columns, kind)
        if not isinstance(columns, dict):
            raise self.fail(
                ckey,
                "expected a mapping of header: field (or, with format.header: false, a list "
                f"of fields), got {_kind(columns)}",
            )
        if header is False:
            raise self.fail(
                ckey,
                "format.header is false, so there are no header names to map: give a list "
                "with the field of each column, ~ to skip one (e.g. columns: [email, ~, city])",
            )
        mapped: dict[str, str] = {}
        headers: dict[str, str] = {}  # as matched (case and outer spaces ignored): as written
        sources: dict[str, str] = {}  # field: the header giving it
        for name, target in columns.items():
            hkey, name = f"{ckey}.{name}", str(name)
            field_name = self.attempt(lambda h=hkey, t=target: self.field_target(h, t, kind))
            same = headers.setdefault(name.strip().lower(), name)
            if same != name:
                self.note(
                    self.fail(
                        hkey,
                        f"'{name}' and '{same}' are the same header (headers match whatever "
                        "their case and outer spaces); keep one",
                    )
                )
            elif field_name is not None and sources.setdefault(field_name, name) != name:
                self.note(
                    self.fail(
                        hkey,
                        f"'{name}' and '{sources[field_name]}' both give the field "
                        f"'{field_name}'; map only one of them",
                    )
                )
            else:
                mapped[name] = field_name
        if len(mapped) < len(columns) or None in mapped.values():
            return None
        return mapped

    def column_list(
        self, ckey: str, columns: list[Any], kind: str
    ) -> tuple[str | None, ...] | None:
        """The field of each column of a file without a header line; ~ (None) skips one."""
        fields: list[str | None] = []
        first: dict[str, int] = {}
        for i, target in enumerate(columns):
            if target is None:
                fields.append(None)
                continue
            field_name = self.attempt(
                lambda k=f"{ckey}[{i}]", t=target: self.field_target(k, t, kind)
            )
            if field_name is not None and first.setdefault(field_name, i) != i:
                self.note(
                    self.fail(
                        f"{ckey}[{i}]",
                        f"'{field_name}' is already the field of column {first[field_name] + 1}; "
                        "a field comes from one column (~ skips a column)",
                    )
                )
                field_name = None
            fields.append(field_name if field_name is not None else "")
        if "" in fields:
            return None
        return tuple(fields)

    def field_target(self, key: str, value: Any, kind: str) -> str:
        """A field an import of this kind may take from a file (or a default)."""
        name = self.string(value, key)
        if not FIELD_NAME.match(name):
            raise self.fail(key, f"'{name}' is not a field name (lower-case letters, digits, _)")
        known = FILE_FIELDS.get(kind)
        if known is None and name in RESERVED_FIELDS:
            raise self.fail(
                key,
                f"'{name}' is managed by campaign-sync, not by an import; use another name",
            )
        if known is not None and name not in known:
            raise self.fail(key, f"a {kind} job knows the fields {', '.join(known)}, not '{name}'")
        return name

    def defaults(
        self, dkey: str, raw: Any, kind: str, fmt: CsvFormat | None
    ) -> dict[str, str] | None:
        """Each field's value where the file has no such column or the cell is empty,
        checked as a cell of the file would be; None when (collecting) one had a problem."""
        if not isinstance(raw, dict):
            raise self.fail(dkey, f"expected a mapping of field: value, got {_kind(raw)}")
        values: dict[str, str] = {}
        for name, value in raw.items():
            checked = self.attempt(
                lambda k=f"{dkey}.{name}", n=name, v=value: self.default(k, n, v, kind, fmt)
            )
            if checked is not None:
                values[str(name)] = checked
        return values if len(values) == len(raw) else None

    def default(self, key: str, name: Any, value: Any, kind: str, fmt: CsvFormat | None) -> str:
        field_name = self.field_target(key, name, kind)
        if field_name == REQUIRED_FIELDS[kind][0]:
            raise self.fail(key, f"'{field_name}' identifies each row; it cannot have a default")
        if isinstance(value, datetime.date):  # YAML reads 2024-05-01 as a date
            value = value.isoformat()
        if isinstance(value, bool):  # YAML reads yes, no, on, off as true/false
            raise self.fail(key, "expected text or a number, got true/false; put it in quotes")
        text = self.string(value, key).strip()
        if field_name == "type" and kind == "bounce-import":
            text = text.lower()
            if text not in BOUNCE_TYPES:
                raise self.fail(key, f"'{text}' is not a bounce type (hard or soft)")
        if field_name == DATE_FIELD.get(kind) and fmt is not None:
            self.date_value(key, text, fmt.date_format)
        return text

    def date_value(self, key: str, text: str, date_format: str | None) -> None:
        """`text` must read as a date the way the file's cells are read."""
        from .core.dates import parse_date

        try:
            parse_date(text, date_format, datetime.timezone.utc)
        except (ValueError, OverflowError):
            if date_format:
                raise self.fail(
                    key, f"'{text}' is not a date in the job's format.date_format {date_format}"
                ) from None
            raise self.fail(
                key, f"'{text}' is not an ISO 8601 date (e.g. 2024-05-01 or 2024-05-01T10:00)"
            ) from None

    def provided(self, ckey: str, kind: str, values: dict[str, Any]) -> None:
        """Configured columns must give each field an import needs, or defaults must."""
        if "columns" in values:
            mapped: dict[str, str] = values["columns"]
            given = set(mapped.values())
            shown = "columns map " + ", ".join(f"{h} → {f}" for h, f in mapped.items())
        elif "column_fields" in values:
            listed: tuple[str | None, ...] = values["column_fields"]
            given = set(listed) - {None}
            shown = "columns list " + ", ".join(f or "~" for f in listed)
        else:
            return  # the file's header names the fields: known only when it is read
        for needed in REQUIRED_FIELDS[kind]:
            if needed not in given and needed not in values.get("defaults", {}):
                raise self.fail(
                    ckey,
                    f"no column gives '{needed}' ({shown}); {_column_hint(needed, kind, values)}",
                )

    def export_settings(
        self, key: str, spec: dict[str, Any], servers: dict[str, Any]
    ) -> dict[str, Any]:
        values: dict[str, Any] = {}
        self.settle(values, "target", lambda: self.target(f"{key}.target", spec, servers))
        if spec.get("fields") is not None:
            self.settle(values, "fields", lambda: self.fields(f"{key}.fields", spec["fields"]))
        if spec.get("include") is not None:
            self.settle(
                values,
                "include",
                lambda: self.string(spec["include"], f"{key}.include", choices=("active", "all")),
            )
        if spec.get("changes_only") is not None:
            self.settle(
                values,
                "changes_only",
                lambda: self.boolean(spec["changes_only"], f"{key}.changes_only"),
            )
        return values

    def target(self, tkey: str, spec: dict[str, Any], servers: dict[str, Any]) -> TargetConfig:
        if spec.get("target") is None:
            raise self.fail(tkey, "required for an export job")
        tgt = self.mapping(spec["target"], tkey, ("server", "path", "atomic"))
        for required in ("server", "path"):
            if required not in tgt:
                raise self.fail(f"{tkey}.{required}", "required")
        return TargetConfig(
            server=self.attempt(lambda: self.server_ref(tgt["server"], f"{tkey}.server", servers)),
            path=self.attempt(lambda: self.remote_path(tgt["path"], f"{tkey}.path")),
            atomic=self.attempt(lambda: self.boolean(tgt.get("atomic", True), f"{tkey}.atomic")),
        )

    def fields(self, fkey: str, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(fkey, "expected a non-empty list of field names")
        names = []
        for i, item in enumerate(value):
            field_name = self.string(item, f"{fkey}[{i}]")
            if not FIELD_NAME.match(field_name):
                raise self.fail(f"{fkey}[{i}]", f"'{field_name}' is not a field name")
            names.append(field_name)
        return tuple(names)


def _url_problem(url: str) -> str | None:
    """What makes url unusable for an HTTP request, in words that quote none of it."""
    import unicodedata
    from urllib.parse import urlsplit

    if any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in url):
        return "it contains a space or a control character"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "it is malformed (check the [ ] around an IPv6 address)"
    if parts.scheme.lower() not in ("http", "https"):
        return "the scheme must be http or https"
    host, port = _split_host_port(parts.netloc.rpartition("@")[2])
    if not host:
        return "it has no host"
    if not _valid_host(host):
        return "the host is not a valid host name or IP address"
    if port and not (re.fullmatch(r"[0-9]{1,5}", port) and 1 <= int(port) <= 65535):
        return "the port must be a number from 1 to 65535"
    return None


def _split_host_port(hostport: str) -> tuple[str, str]:
    """`host:port`, `[v6]:port` → (host, port); port is "" when absent."""
    if hostport.startswith("["):
        end = hostport.find("]")
        host, rest = hostport[: end + 1], hostport[end + 1 :]
        return host, rest[1:] if rest.startswith(":") else rest
    host, _, port = hostport.partition(":")
    return host, port


def _valid_host(host: str) -> bool:
    if host.startswith("["):
        import ipaddress

        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return host.endswith("]")
    # A DNS name (international names too) or an IPv4 address: no other characters.
    return all(ch.isalnum() or ch in "-._" for ch in host) and not host.startswith((".", "-"))


def _short(value: Any) -> str:
    """A number for a message; one pasted with hundreds of digits is not quoted in full."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text if len(text) <= 20 else f"a number of {len(text)} digits"


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address (127.0.0.0/8, ::1, also IPv4-mapped)."""
    import ipaddress

    name = host.strip().rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", bool: "true/false", str: "text"}.get(
        type(value), type(value).__name__
    )


def _column_hint(needed: str, kind: str, values: dict[str, Any]) -> str:
    """What to add to a job's columns (or defaults) to give the field `needed`."""
    if "columns" in values:
        header = "E-Mail" if needed == "email" else needed.capitalize()
        pairs = [f"{header}: {needed}", *(f"{h}: {f}" for h, f in values["columns"].items())]
        hint = (
            "with columns, only mapped headers are read: map the file's one too, e.g. "
            f"columns: {{{', '.join(pairs)}}}"
        )
    else:
        fields = [needed, *(f or "~" for f in values["column_fields"])]
        hint = f"name the column that holds it in the list, e.g. columns: [{', '.join(fields)}]"
    if needed != REQUIRED_FIELDS[kind][0]:  # (the field identifying a row has no default)
        hint += f", or defaults: {{{needed}: …}}"
    return hint


def _check_timezone(name: str, error: ConfigError) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise error from None
