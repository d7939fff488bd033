"""Shell completion through Click's protocol, as bash, zsh and fish call the installed command."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import Workspace

EXTRA_JOBS = """\
  welcome:
    type: doi-dispatch
    list: newsletter
    mailings: mailings
  blocklist-in:
    type: blocklist-import
    source: {server: inbox, path: /import/blocklist.csv}
smtp:
  host: localhost
"""


def complete(ws: Workspace, words: str, shell: str = "bash", **env: str) -> list[str]:
    """What the shell would offer for the last word of `words` (empty: a new word)."""
    parts = words.split(" ")
    done = subprocess.run(
        ["campaign-sync"],
        capture_output=True,
        text=True,
        cwd=ws.root,
        env={
            **os.environ,
            **env,
            "_CAMPAIGN_SYNC_COMPLETE": f"{shell}_complete",
            "COMP_WORDS": words,
            # fish passes the word being completed, bash and zsh its index
            "COMP_CWORD": parts[-1] if shell == "fish" else str(len(parts) - 1),
        },
        timeout=30,
    )
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    lines = done.stdout.splitlines()
    if shell == "bash" or (shell == "fish" and lines and "," in lines[0]):
        # "type,value" per line (fish since Click 8.5: "type,value<TAB>help")
        return [line.split(",", 1)[1].split("\t", 1)[0] for line in lines if line]
    return lines[1::3]  # zsh, and fish before Click 8.5: type, value, help per item


@pytest.fixture
def config(ws: Workspace) -> Workspace:
    ws.write_config(EXTRA_JOBS)
    return ws


def test_commands_and_options(config: Workspace) -> None:
    assert complete(config, "campaign-sync ex") == ["export"]
    assert complete(config, "campaign-sync li") == ["list-jobs", "lists"]
    assert complete(config, "campaign-sync import newsletter-import --d") == [
        "--date",
        "--dry-run",
    ]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_job_names_are_those_the_command_runs(config: Workspace, shell: str) -> None:
    def jobs(words: str) -> list[str]:
        return complete(config, f"campaign-sync --config {config.config} {words}", shell)

    assert jobs("import ") == ["newsletter-import", "blocklist-in"]
    assert jobs("import b") == ["blocklist-in"]
    assert jobs("export ") == ["newsletter-export"]
    assert jobs("dispatch ") == ["welcome"]
    assert jobs("history ") == [
        *("newsletter-import", "newsletter-export", "welcome", "blocklist-in"),
        "@forget",  # the store's own runs: erasures
    ]
    assert jobs("history @") == ["@forget"]


def test_the_config_comes_from_the_environment_and_secrets_need_not_be_set(
    config: Workspace,
) -> None:
    text = config.config.read_text()
    secret = (
        "smtp:\n  host: localhost\n  user: mailer\n  password: ${SMTP_PASSWORD}\n  starttls: true\n"
    )
    config.config.write_text(text.replace("smtp:\n  host: localhost\n", secret))
    assert config.run("validate").returncode == 2  # SMTP_PASSWORD is not set here
    found = complete(config, "campaign-sync dispatch ", CAMPAIGN_SYNC_CONFIG=str(config.config))
    assert found == ["welcome"]


@pytest.mark.parametrize(
    "broken",
    ["jobs: [", "jobs:\n  x: {type: nonsense}\n", "a: &a [*a, *a]\n"],
    ids=["yaml", "invalid", "alias"],
)
def test_a_broken_or_missing_config_completes_nothing_and_says_nothing(
    ws: Workspace, broken: str
) -> None:
    ws.config.write_text(broken)
    assert complete(ws, f"campaign-sync --config {ws.config} import ") == []
    assert complete(ws, f"campaign-sync --config {ws.root}/missing.yaml import ") == []


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_shell_gets_its_script(ws: Workspace, shell: str) -> None:
    done = subprocess.run(
        ["campaign-sync"],
        capture_output=True,
        text=True,
        env={**os.environ, "_CAMPAIGN_SYNC_COMPLETE": f"{shell}_source"},
        timeout=30,
    )
    assert done.returncode == 0
    assert "_CAMPAIGN_SYNC_COMPLETE" in done.stdout
    assert f"{shell}_complete" in done.stdout
