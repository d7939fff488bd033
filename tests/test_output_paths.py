"""An output name where something other than a regular file stands is refused, untouched;
so is an export's name that promises OpenPGP for a job that does not encrypt.

`export --output`, `metrics --output` and `systemd --output-dir` put their file in place by a
rename. Found on this machine: `metrics --output /dev/null`, run as root, replaced /dev/null
with a regular file. Each command now refuses a device, a named pipe or a symbolic link at the
name (exit 2, one line, before anything runs or is written), and the thing stays as it was.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from conftest import SAMPLE, Workspace

pytestmark = pytest.mark.stores("sqlite", "postgres")

KINDS = {
    "a character device": lambda path: os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3)),
    "a named pipe": lambda path: os.mkfifo(path, 0o600),
    "a symbolic link": lambda path: path.symlink_to(path.parent / "elsewhere.txt"),
}


def _plant(kind: str, path: Path) -> tuple[int, int]:
    """Put `kind` at `path`; what identifies it (device and inode of the name itself)."""
    if kind == "a character device" and os.geteuid() != 0:
        pytest.fail("making a device node needs root (CI runs as root)")
    KINDS[kind](path)
    found = os.lstat(path)
    return found.st_dev, found.st_ino


def _same(path: Path, identity: tuple[int, int]) -> bool:
    found = os.lstat(path)
    return (found.st_dev, found.st_ino) == identity


def _refused(done: object, option: str, path: Path, kind: str) -> None:
    error = (
        f"{option} {path} is {kind}; campaign-sync writes a new file and renames it into "
        "place, which would replace it: name a regular file"
    )
    assert (done.returncode, done.stderr) == (2, f"campaign-sync: error: {error}\n")  # type: ignore[attr-defined]
    assert json.loads(done.stdout) == {"error": error, "exit_code": 2}  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", KINDS)
def test_export_output(ws: Workspace, kind: str) -> None:
    ws.drop("/import/newsletter_20261101.csv", SAMPLE)
    assert ws.run("import", "newsletter-import", "--date", "2026-11-01").returncode == 0
    before = ws.dump()
    target = ws.root / "out.csv"
    identity = _plant(kind, target)
    done = ws.run("--json", "export", "newsletter-export", "--output", str(target))
    _refused(done, "--output", target, kind)
    assert _same(target, identity)
    assert ws.dump() == before  # refused before the run: no run recorded either


@pytest.mark.parametrize("name", ["out.csv.pgp", "out.GPG", "out.csv.asc"])
def test_an_encrypted_name_for_a_job_that_does_not_encrypt_is_refused(
    ws: Workspace, name: str
) -> None:
    """The export would hold plain CSV under a name that says OpenPGP: a partner or a script
    trusting the name would pass personal data on unencrypted."""
    ws.drop("/import/newsletter_20261101.csv", SAMPLE)
    assert ws.run("import", "newsletter-import", "--date", "2026-11-01").returncode == 0
    before = ws.dump()
    target = ws.root / name
    done = ws.run("--json", "export", "newsletter-export", "--output", str(target))
    error = (
        f"--output {target} names an OpenPGP file, but job 'newsletter-export' has no "
        "target.encrypt_to: the file would hold plain CSV; name it without .pgp/.gpg/.asc, "
        "or set target.encrypt_to"
    )
    assert (done.returncode, done.stderr) == (2, f"campaign-sync: error: {error}\n")
    assert json.loads(done.stdout) == {"error": error, "exit_code": 2}
    assert not target.exists()
    assert ws.dump() == before
    plain = ws.run("export", "newsletter-export", "--output", str(ws.root / "out.csv"))
    assert plain.returncode == 0, plain.stderr  # the same job to a plain name still runs


@pytest.mark.parametrize("kind", KINDS)
def test_metrics_output(ws: Workspace, kind: str) -> None:
    target = ws.root / "campaign-sync.prom"
    identity = _plant(kind, target)
    done = ws.run("--json", "metrics", "--output", str(target))
    _refused(done, "--output", target, kind)
    assert _same(target, identity)
    assert sorted(os.listdir(ws.root)) == sorted(["campaign-sync.yaml", "inbox", target.name])


@pytest.mark.parametrize("kind", KINDS)
def test_systemd_output_dir(ws: Workspace, kind: str, tmp_path: Path) -> None:
    units = tmp_path / "units"
    units.mkdir()
    listed = json.loads(ws.run("--json", "systemd").stdout)["units"]
    name = listed[0]["name"]
    identity = _plant(kind, units / name)
    done = ws.run("--json", "systemd", "--output-dir", str(units))
    error = (
        f"{units / name} is {kind}, not a unit file: move it away or choose another --output-dir"
    )
    assert (done.returncode, done.stderr) == (2, f"campaign-sync: error: {error}\n")
    assert json.loads(done.stdout) == {"error": error, "exit_code": 2}
    assert _same(units / name, identity)
    assert os.listdir(units) == [name]  # nothing written: all units or none
