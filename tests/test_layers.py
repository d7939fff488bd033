"""The house keeps its architecture: no import cycles, imports point down the layers, and
only the store talks to a database driver.

Read from the source with `ast` (nothing is imported), counting imports inside functions
too: a lazy import still ties two modules together.

Layers, top to bottom (a module may import its own layer's package and any layer below):

    cli -> serve -> ops -> {imports, exports, dispatch, transfer} -> store -> csvio -> config
        -> core -> errors, result

The four in braces are siblings: none imports another.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

TREE = Path(__file__).resolve().parent.parent
# Installed package name -> its folder in the tree.
PACKAGES = {"campaign_sync": TREE / "campaign_sync", "campaign_sync_cli": TREE / "cli"}

# The layer of a module is named by its first part below campaign_sync (or by being cli).
RANKS = {
    "errors": 0,
    "result": 0,
    "core": 1,
    "config": 2,
    "csvio": 3,
    "store": 4,
    "imports": 5,
    "exports": 5,
    "dispatch": 5,
    "transfer": 5,
    "ops": 6,
    "serve": 7,
    "cli": 8,
}

# Database drivers: only the store may import them. The modules listed here still hold
# their own SQL; the store seam moves it behind store/ and empties this list, which may
# only shrink (an entry that no longer imports a driver fails the test: remove it).
DRIVERS = ("sqlite3", "psycopg")
KNOWN_DRIVER_USERS: set[str] = set()


def _modules() -> dict[str, Path]:
    """Every module of the two packages by dotted name (a package by its own name)."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The modules (ours, or top-level third-party names) that `name` imports anywhere."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in MODULES else base)
    return {_ours(target) or target for target in targets}


def _ours(target: str) -> str | None:
    """The module of ours that `target` names (a.b.c when only a.b is a module: a.b)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> str:
    if module.startswith("campaign_sync_cli"):
        return "cli"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "errors"  # campaign_sync itself: its version


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (or a module importing
    itself), each sorted, found with Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph[node]:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Imports against the layer order, one line each."""
    wrong = []
    for module, targets in sorted(graph.items()):
        here = _layer(module)
        for target in sorted(t for t in targets if t in graph):
            there = _layer(target)
            if there == here:
                continue
            if here not in RANKS or there not in RANKS:
                wrong.append(
                    f"{module} -> {target}: {here if here not in RANKS else there} "
                    "is in no layer (add it to RANKS and the docstring)"
                )
            elif RANKS[there] >= RANKS[here]:
                wrong.append(f"{module} ({here}) -> {target} ({there})")
    return wrong


def test_no_import_cycles() -> None:
    assert cycles(GRAPH) == []


def test_imports_point_down_the_layers() -> None:
    assert upward(GRAPH) == []


def test_only_the_store_imports_a_database_driver() -> None:
    users = {
        module
        for module, targets in GRAPH.items()
        if _layer(module) != "store" and targets & set(DRIVERS)
    }
    assert users - KNOWN_DRIVER_USERS == set(), "only store/ may import a database driver"
    assert KNOWN_DRIVER_USERS - users == set(), "no longer a driver user: shrink the list"


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"a"}}, [["a"]]),
        ({"a": {"b"}, "b": set()}, []),
    ],
)
def test_cycles_are_found(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(graph) == expected


def test_lazy_imports_count(tmp_path: Path) -> None:
    """An import inside a function ties modules together as much as one at the top."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from .errors import UsageError\n", encoding="utf-8")
    assert _imports("campaign_sync.m", source) == {"campaign_sync.errors"}


def test_an_upward_import_is_caught() -> None:
    graph = {"campaign_sync.core.x": {"campaign_sync.ops.y"}, "campaign_sync.ops.y": set()}
    assert upward(graph) == ["campaign_sync.core.x (core) -> campaign_sync.ops.y (ops)"]


def test_every_package_is_installed() -> None:
    """pyproject lists every package: a non-editable install ships nothing else, and a
    folder without __init__.py would be a namespace package that it leaves out."""
    text = (TREE / "pyproject.toml").read_text(encoding="utf-8")
    block = re.search(r"^packages = \[(.*?)^\]", text, re.M | re.S)
    assert block, "no packages list in pyproject.toml"
    listed = re.findall(r'"([a-z_.]+)"', block.group(1))
    folders = {
        ".".join((package, *path.relative_to(folder).parts))
        for package, folder in PACKAGES.items()
        for path in [folder, *folder.rglob("*")]
        if path.is_dir() and path.name != "__pycache__"
    }
    with_init = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    assert sorted(folders - with_init) == [], "a package folder without __init__.py"
    assert sorted(listed) == sorted(folders)
