"""The reference pages kept complete: every config key the validator accepts is in
docs/configuration.md and every key there is one it accepts; every command, option and argument
of the CLI is in docs/commands.md and nothing else is; the README's links stay in the repository.

The markup these tests read (write new reference tables the same way):

* docs/configuration.md: a line `<!-- keys: SECTION [SECTION ...] -->` right before a Markdown
  table. The first cell of each row below the table's header names one key in backticks
  (`` `store` ``). SECTION is a part of the file the validator checks, or a shell pattern of
  such parts (`jobs:*-import`):
    - `top` (the top level), `smtp`, `notify`, `bounces`;
    - `servers` (the keys a server takes; the tables per server type both feed it);
    - `jobs:TYPE` (a job of that type: `jobs:recipient-import`) and `jobs:TYPE.PART` for a
      mapping inside one (`jobs:bounce-import.source`, `jobs:recipient-export.format`,
      `jobs:doi-dispatch.notify`).
  A section's documented keys are those of every table whose marker matches it, so the keys
  that all jobs share are one table that feeds every job type.
* docs/commands.md: a line `<!-- options: COMMAND -->` right before a table (or, for a command
  without parameters, a sentence). COMMAND is the command's path below the program name
  (`import`, `store copy`), or `campaign-sync` for the global options. The first cell of each
  row names one parameter in backticks: an option by its flags (`` `-v`, `--verbose` `` or
  `` `--file PATH` ``: each backticked word that starts with `-`), an argument by its upper-case
  name (`` `JOB` ``). The help flags are documented once, with the global options.

The accepted keys are not copied into this file. They are recorded from the validator itself:
it runs over a config that has every section and every job type, and each key list it checks a
mapping against (Checks.mapping's `allowed`) is noted under that mapping's section.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from campaign_sync_cli.main import main

from campaign_sync.config import checks
from campaign_sync.config.model import JOB_TYPES
from campaign_sync.config.validate import Validator

DOCS = Path(__file__).resolve().parent.parent / "docs"
KEYS_MARKER = re.compile(r"^<!-- keys: (?P<sections>[^>]*?) -->$")
OPTIONS_MARKER = re.compile(r"^<!-- options: (?P<command>[^>]*?) -->$")
BACKTICKED = re.compile(r"`([^`]+)`")


# --------------------------------------------------------------------------- the pages


def marked_tables(text: str, marker: re.Pattern[str]) -> Iterator[tuple[str, list[str]]]:
    """(what the marker names, the first cells of the table right after it) per marker."""
    lines = text.splitlines()
    for at, line in enumerate(lines):
        found = marker.match(line.strip())
        if not found:
            continue
        rows = []
        for row in lines[at + 1 :]:
            if not row.startswith("|"):
                break
            rows.append(row.split("|")[1].strip())
        # Below the marker: a header row, the |---| row, then the documented rows.
        yield found.group(1), rows[2:]


def first_word(cell: str) -> str | None:
    """The first backticked word of a table cell."""
    spans = BACKTICKED.findall(cell)
    return spans[0].split()[0] if spans else None


def documented_keys(text: str) -> dict[str, set[str]]:
    """Each marker's patterns, mapped to the keys of its table (a pattern may head several)."""
    keys: dict[str, set[str]] = {}
    for sections, cells in marked_tables(text, KEYS_MARKER):
        names = {word for word in map(first_word, cells) if word}
        for pattern in sections.split():
            keys.setdefault(pattern, set()).update(names)
    return keys


def documented_parameters(text: str) -> dict[str, set[str]]:
    """Each command path (`campaign-sync` for the group) mapped to the parameters documented."""
    found: dict[str, set[str]] = {}
    for command, cells in marked_tables(text, OPTIONS_MARKER):
        names = found.setdefault(command, set())
        for cell in cells:
            spans = [span.split()[0] for span in BACKTICKED.findall(cell)]
            flags = [span for span in spans if span.startswith("-")]
            names.update(flags or spans[:1])
    return found


# --------------------------------------------------------------------------- the validator


def probe_config(base: Path) -> dict[str, Any]:
    """A config with every section the validator knows and one job of each type, each job
    named after its type and given every mapping its type can hold."""
    jobs: dict[str, Any] = {}
    for kind in JOB_TYPES:
        # (a job's notify as a mapping: the list form has no keys to check)
        job: dict[str, Any] = {"type": kind, "list": "newsletter", "notify": {"to": []}}
        if kind.endswith("-import"):
            job["source"] = {"server": "inbox", "path": "/in.csv"}
            job["format"] = {"delimiter": ";"}
        elif kind.endswith("-export"):
            job["target"] = {"server": "inbox", "path": "/out.csv"}
            job["format"] = {"delimiter": ";"}
        else:
            job["mailings"] = str(base)
        jobs[kind] = job
    return {
        "store": str(base / "store.db"),
        "servers": {"inbox": {"type": "local", "path": str(base)}},
        "smtp": {"host": "localhost"},
        "notify": {"to": ["ops@example.com"]},
        "bounces": {"hard_limit": 3},
        "pgp": {"home": str(base)},
        "jobs": jobs,
    }


def section_of(key: str) -> str:
    """A key path the validator checks (`jobs.bounce-import.source`) as this file's section
    name (`jobs:bounce-import.source`); the probe's jobs are named after their types."""
    if key == "":
        return "top"
    parts = key.split(".")
    if parts[0] == "servers":
        return "servers"
    if parts[0] == "jobs":
        return ".".join([f"jobs:{parts[1]}", *parts[2:]])
    return key


@pytest.fixture(scope="module")
def accepted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Per section, the keys the validator accepts: recorded while it checks the probe."""
    base = tmp_path_factory.mktemp("probe")
    seen: dict[str, set[str]] = {}
    original = checks.Checks.mapping

    def recording(self: Any, value: Any, key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        seen.setdefault(section_of(key), set()).update(allowed)
        return original(self, value, key, allowed)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checks.Checks, "mapping", recording)
        validator = Validator(base / "campaign-sync.yaml", collect=True)
        validator.config(probe_config(base))
    # A probe the validator refuses would skip sections: it must be a valid config.
    assert validator.collected == []
    return seen


def local_server_keys(accepted: dict[str, set[str]], tmp_path: Path) -> set[str]:
    """The keys a server of type local takes: each key a server knows, tried on its own."""
    taken = set()
    for key in sorted(accepted["servers"]):
        server = {"type": "local", "path": str(tmp_path), key: "x"}
        if key in ("type", "path"):
            server[key] = {"type": "local", "path": str(tmp_path)}[key]
        validator = Validator(tmp_path / "campaign-sync.yaml", collect=True)
        validator.config({"servers": {"s": server}})
        assert validator.collected is not None
        if not any(f"'servers.s.{key}'" in problem for problem in validator.collected):
            taken.add(key)
    return taken


def compare_keys(documented: dict[str, set[str]], accepted: dict[str, set[str]]) -> list[str]:
    """Every difference between the page and the validator, one line each."""
    problems = []
    for pattern in sorted(documented):
        if not fnmatch.filter(accepted, pattern):
            problems.append(f"<!-- keys: {pattern} -->: the validator has no such section")
    for section in sorted(accepted):
        keys = set().union(
            *(names for pattern, names in documented.items() if fnmatch.fnmatch(section, pattern))
        )
        for key in sorted(accepted[section] - keys):
            problems.append(f"{section}: `{key}` is accepted but not documented")
        for key in sorted(keys - accepted[section]):
            problems.append(f"{section}: `{key}` is documented but the validator refuses it")
    return problems


# --------------------------------------------------------------------------- the CLI


def commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """Every command and group below `group`, with its path (`store copy`)."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        yield " ".join((*path, name)), command
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))


def parameter_names(command: click.Command) -> set[str]:
    """An option's every flag, an argument's upper-case name."""
    names: set[str] = set()
    for param in command.params:
        if isinstance(param, click.Option):
            names.update(param.opts, param.secondary_opts)
        else:
            names.add(param.human_readable_name)
    return names


def cli_parameters() -> dict[str, set[str]]:
    help_option = main.get_help_option(click.Context(main, **main.context_settings))
    assert help_option is not None
    found = {"campaign-sync": parameter_names(main) | set(help_option.opts)}
    for path, command in commands(main):
        found[path] = parameter_names(command)
    return found


def compare_parameters(documented: dict[str, set[str]], actual: dict[str, set[str]]) -> list[str]:
    problems = []
    for command in sorted(documented.keys() - actual.keys()):
        problems.append(f"<!-- options: {command} -->: there is no such command")
    for command in sorted(actual):
        if command not in documented:
            problems.append(f"`{command}` is not documented (no <!-- options: {command} -->)")
            continue
        for name in sorted(actual[command] - documented[command]):
            problems.append(f"{command}: `{name}` is not documented")
        for name in sorted(documented[command] - actual[command]):
            problems.append(f"{command}: `{name}` is documented but the command has none")
    return problems


# --------------------------------------------------------------------------- the tests


def test_every_accepted_key_is_documented_and_every_documented_key_accepted(
    accepted: dict[str, set[str]],
) -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert compare_keys(documented_keys(text), accepted) == []


def test_the_probe_reaches_every_part_of_the_config(accepted: dict[str, set[str]]) -> None:
    # Without these, a section the probe missed would pass unnoticed.
    expected = {"top", "servers", "smtp", "notify", "bounces"}
    expected |= {f"jobs:{kind}" for kind in JOB_TYPES}
    assert expected <= accepted.keys()
    assert {"jobs:recipient-import.source", "jobs:recipient-import.format"} <= accepted.keys()
    assert {"jobs:bounce-export.target", "jobs:bounce-export.format"} <= accepted.keys()
    assert "jobs:doi-dispatch.notify" in accepted


def test_local_servers_document_the_keys_a_local_server_takes(
    accepted: dict[str, set[str]], tmp_path: Path
) -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    section = text.split("### Servers of type `local`", 1)[1].split("\n### ", 1)[0]
    documented = set().union(*documented_keys(section).values())
    assert documented == local_server_keys(accepted, tmp_path)


def test_every_command_option_and_argument_is_documented() -> None:
    text = (DOCS / "commands.md").read_text(encoding="utf-8")
    assert compare_parameters(documented_parameters(text), cli_parameters()) == []


def test_the_readme_links_only_to_files_of_the_repository() -> None:
    # MkDocs checks the links of docs/ (mkdocs build --strict); the README is not part of it.
    root = DOCS.parent
    text = (root / "README.md").read_text(encoding="utf-8")
    targets = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t]
    assert targets, "the README links into docs/"
    for target in targets:
        path = (root / target.split("#", 1)[0]).resolve()
        assert path.is_relative_to(root) and path.exists(), f"README links to {target}"


# The checks above must be able to fail: the same comparisons over edited copies of the pages.


def newly_reported(check: Callable[[str], list[str]], text: str, edited: str) -> set[str]:
    """What `check` says of the edited page that it does not say of the page itself."""
    return set(check(edited)) - set(check(text))


def test_a_missing_or_unknown_key_is_reported(accepted: dict[str, set[str]]) -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")

    def check(page: str) -> list[str]:
        return compare_keys(documented_keys(page), accepted)

    without = re.sub(r"^\| `retries` \|.*\n", "", text, flags=re.M)
    assert newly_reported(check, text, without) == {
        "servers: `retries` is accepted but not documented"
    }
    extra = text.replace("| `hard_limit` |", "| `medium_limit` | x |\n| `hard_limit` |", 1)
    assert newly_reported(check, text, extra) == {
        "bounces: `medium_limit` is documented but the validator refuses it"
    }
    nowhere = text.replace("<!-- keys: bounces -->", "<!-- keys: bounce -->", 1)
    assert newly_reported(check, text, nowhere) == {
        "<!-- keys: bounce -->: the validator has no such section",
        "bounces: `hard_limit` is accepted but not documented",
        "bounces: `soft_limit` is accepted but not documented",
    }


def test_a_missing_or_unknown_option_is_reported() -> None:
    text = (DOCS / "commands.md").read_text(encoding="utf-8")
    actual = cli_parameters()

    def check(page: str) -> list[str]:
        return compare_parameters(documented_parameters(page), actual)

    without = re.sub(r"^\| `--force` \|.*\n", "", text, flags=re.M)
    assert newly_reported(check, text, without) == {"import: `--force` is not documented"}
    extra = text.replace("| `--schema NAME` |", "| `--drop` | x |\n| `--schema NAME` |", 1)
    assert newly_reported(check, text, extra) == {
        "store copy: `--drop` is documented but the command has none"
    }
    unmarked = text.replace("<!-- options: store copy -->", "", 1)
    assert newly_reported(check, text, unmarked) == {
        "`store copy` is not documented (no <!-- options: store copy -->)"
    }
