"""Import and export jobs through the installed command against a real OpenSSH sshd."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SAMPLE, Workspace
from sshd import Sshd

pytestmark = pytest.mark.stores("sqlite", "postgres")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with Sshd(tmp_path_factory.mktemp("sshd")) as running:
        yield running


def ssh_workspace(ws: Workspace, sshd: Sshd, protocol: str, remote: Path) -> Workspace:
    """The base config, with the jobs pointed at the sshd and the remote folder."""
    text = ws.config.read_text()
    text = text.replace(
        "servers:\n",
        "servers:\n"
        "  partner:\n"
        "    type: ssh\n"
        f"    host: {sshd.host}\n"
        f"    port: {sshd.port}\n"
        f"    user: {sshd.user}\n"
        f"    key_file: {sshd.user_key}\n"
        f"    known_hosts: {sshd.known_hosts}\n"
        f"    protocol: {protocol}\n"
        "    timeout: 5\n"
        "    retries: 1\n",
    )
    text = text.replace(
        'source: {server: inbox, path: "/import/newsletter_{date:%Y%m%d}.csv"}',
        f'source: {{server: partner, path: "{remote}/in/newsletter_{{date:%Y%m%d}}.csv.gz", '
        f'after: archive, archive_dir: "{remote}/done"}}',
    )
    text = text.replace(
        "target: {server: inbox, path: /export/newsletter.csv}",
        f'target: {{server: partner, path: "{remote}/out/newsletter.csv.gz"}}',
    )
    ws.write_config(text=text)
    return ws


@pytest.mark.parametrize("protocol", ["scp", "sftp"])
def test_import_and_export_over_ssh(
    ws: Workspace, sshd: Sshd, tmp_path: Path, protocol: str
) -> None:
    remote = tmp_path / "remote"
    (remote / "in").mkdir(parents=True)
    (remote / "out").mkdir()
    ssh_workspace(ws, sshd, protocol, remote)
    source = remote / "in" / "newsletter_20261101.csv.gz"
    source.write_bytes(gzip.compress(SAMPLE.encode()))

    done = ws.run("--json", "import", "newsletter-import", "--date", "2026-11-01")
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["counts"]["inserted"] == 3
    assert run["file"]["path"] == str(source)
    assert not source.exists()  # archived only after the commit
    assert (remote / "done" / source.name).exists()

    done = ws.run("--json", "export", "newsletter-export")
    assert done.returncode == 0, done.stderr
    exported = remote / "out" / "newsletter.csv.gz"
    assert gzip.decompress(exported.read_bytes()).decode().splitlines()[0] == (
        "email,first_name,last_name"
    )
    assert sorted(p.name for p in (remote / "out").iterdir()) == ["newsletter.csv.gz"]
    assert "\x1b[" not in done.stderr  # no progress bar off a terminal


def test_missing_remote_file_exits_3(ws: Workspace, sshd: Sshd, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    (remote / "in").mkdir(parents=True)
    ssh_workspace(ws, sshd, "sftp", remote)
    done = ws.run("import", "newsletter-import", "--date", "2026-11-02")
    assert done.returncode == 3
    assert "newsletter_20261102.csv.gz" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("protocol", "problem"),
    [
        ("sftp", "it is a directory, not a file"),
        ("scp", "scp: {path}: not a regular file"),  # OpenSSH's scp says so itself
    ],
)
def test_a_source_that_is_a_directory_is_named_as_one(
    ws: Workspace, sshd: Sshd, tmp_path: Path, protocol: str, problem: str
) -> None:
    remote = tmp_path / "remote"
    source = remote / "in" / "newsletter_20261101.csv.gz"
    source.mkdir(parents=True)
    ssh_workspace(ws, sshd, protocol, remote)
    done = ws.run("--json", "import", "newsletter-import", "--date", "2026-11-01")
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["error"] == (
        f"server 'partner' ([{sshd.host}]:{sshd.port}): stat {source}: "
        + problem.format(path=source)
    )
    assert ws.query("SELECT status FROM runs") == [("failed",)]
    assert ws.recipients() == {}


def test_unknown_host_key_is_refused_with_its_fingerprint(
    ws: Workspace, sshd: Sshd, tmp_path: Path
) -> None:
    remote = tmp_path / "remote"
    (remote / "in").mkdir(parents=True)
    (remote / "in" / "newsletter_20261101.csv.gz").write_bytes(gzip.compress(SAMPLE.encode()))
    ssh_workspace(ws, sshd, "scp", remote)
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    ws.write_config(text=ws.config.read_text().replace(str(sshd.known_hosts), str(empty)))
    done = ws.run("import", "newsletter-import", "--date", "2026-11-01")
    assert done.returncode == 1
    assert sshd.fingerprint() in done.stderr
    assert ws.recipients() == {}


# A partner's server between two steps of a run: before the command that follows the size
# probe (the fetch), the rest of the file arrives, as when an upload is still going on.
GROWING_SCP = """#!/bin/sh
count=$(cat {counter} 2>/dev/null || echo 0)
count=$((count + 1))
echo "$count" > {counter}
if [ "$count" = 2 ]; then cat {rest} >> {source}; fi
exec sh -c "$SSH_ORIGINAL_COMMAND"
"""


def test_a_file_still_being_uploaded_fails_the_run_and_the_next_run_takes_it(
    ws: Workspace, tmp_path: Path
) -> None:
    remote = tmp_path / "remote"
    (remote / "in").mkdir(parents=True)
    source = remote / "in" / "newsletter_20261101.csv.gz"
    whole = gzip.compress(SAMPLE.encode())
    source.write_bytes(whole[:20])
    rest = tmp_path / "rest"
    rest.write_bytes(whole[20:])
    script = tmp_path / "growing-scp"
    script.write_text(GROWING_SCP.format(counter=tmp_path / "commands", rest=rest, source=source))
    script.chmod(0o755)
    with Sshd(tmp_path / "sshd", extra=f"ForceCommand {script}") as server:
        ssh_workspace(ws, server, "scp", remote)
        done = ws.run("--json", "import", "newsletter-import", "--date", "2026-11-01")
        assert done.returncode == 1, done.stderr
        assert json.loads(done.stdout)["error"] == (
            f"{source} on 'partner' changed size while it was fetched (20 → {len(whole)} "
            f"bytes, {len(whole)} copied); it is probably still being uploaded — the next "
            "run will pick it up"
        )
        assert ws.recipients() == {}
        assert source.read_bytes() == whole  # not archived: it was not imported

        done = ws.run("--json", "import", "newsletter-import", "--date", "2026-11-01")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"]["inserted"] == 3
    assert ws.query("SELECT status FROM runs ORDER BY id") == [("failed",), ("succeeded",)]
