"""Finding the config file, reading its YAML safely (no alias bombs, no duplicate keys) and
interpolating ${VAR} references, then handing the tree to the validator."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .checks import join_key
from .model import (
    Config,
)
from .validate import Validator

DEFAULT_LOCATIONS = ("campaign-sync.yaml", "/etc/campaign-sync/campaign-sync.yaml")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


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
    return Validator(path).config(raw)


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
    validator = Validator(path, collect=True)
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
        return {
            k: _interpolate_collecting(v, path, found, join_key(key, k)) for k, v in value.items()
        }
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
                children.append((value_node, join_key(where, key_node.value)))
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
        return {k: _interpolate(v, env, path, join_key(key, k)) for k, v in value.items()}
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
