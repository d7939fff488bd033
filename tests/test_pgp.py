"""OpenPGP partner files with the real gpg, through the installed CLI.

Keys are made per module in temporary GNUPGHOMEs (tests/pgpkeys.py); our secret key has a
passphrase, given to campaign-sync as `${PGP_PASS}`. What is shown:

* an export encrypted (and signed) by campaign-sync decrypts with the partner's gpg to the
  exact CSV, with a good signature by our key;
* a file encrypted and signed by the partner's gpg imports, from a local server (both
  stores) and over the real sshd;
* a file signed by another key, a file without a signature, a signature that does not match,
  a wrong passphrase: each fails the run with one line (naming the signer seen) before any
  row is merged, and no plaintext is left behind;
* the passphrase never appears on gpg's command line; without python-gnupg the run stops
  with exit 2 naming the package; the config's mistakes are named by their keys.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sshd as sshd_helper
from conftest import BASE_CONFIG, Workspace
from pgpkeys import PASSPHRASE, Keyrings
from sshd import Sshd

CSV = (
    "E-Mail;Vorname;Nachname;DOI\n"
    "anna@example.com;Anna;Schmidt;2026-11-20T10:15:00+01:00\n"
    "ben@example.com;Ben;Müller;\n"
)


@pytest.fixture(scope="module")
def keys() -> Iterator[Keyrings]:
    with Keyrings() as made:
        yield made


def jobs(keys: Keyrings, server: str = "inbox", root: str = "") -> str:
    partner = keys.partner.fingerprint
    return f"""\
  pgp-import:
    type: recipient-import
    list: newsletter
    source: {{server: {server}, path: "{root}/import/list.csv.pgp", verify: "{partner}"}}
    format: {{delimiter: ";"}}
    columns: {{E-Mail: email, Vorname: first_name, Nachname: last_name, DOI: doi_confirmed_at}}
  named-import:
    type: recipient-import
    list: newsletter
    source: {{server: {server}, path: "{root}/import/list.csv", decrypt: true}}
    format: {{delimiter: ";"}}
    columns: {{E-Mail: email, Vorname: first_name, Nachname: last_name}}
  pgp-export:
    type: recipient-export
    list: newsletter
    target: {{server: {server}, path: "{root}/export/list.csv.pgp", encrypt_to: "{partner}",
              sign: true}}
    fields: [email, first_name, last_name]
  asc-export:
    type: recipient-export
    list: newsletter
    target: {{server: {server}, path: "{root}/export/list.zip.asc", encrypt_to: "{partner}"}}
    fields: [email, first_name, last_name]
pgp:
  home: {keys.ours.path}
  passphrase: ${{PGP_PASS}}
"""


def configure(ws: Workspace, keys: Keyrings) -> None:
    ws.write_config(text=BASE_CONFIG.format(extra=jobs(keys)))


ENV = {"PGP_PASS": PASSPHRASE}


def run(ws: Workspace, *args: str, env: dict[str, str] | None = None) -> tuple[int, Any, str]:
    done = ws.run("--json", *args, env={**ENV, **(env or {})})
    assert "Traceback" not in done.stderr
    assert PASSPHRASE not in done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout) if done.stdout else None, done.stderr


def staging_files(ws: Workspace) -> list[Path]:
    return [p for p in (ws.root / "var" / "staging").rglob("*") if p.is_file()]


@pytest.mark.stores("sqlite", "postgres")
def test_a_file_encrypted_and_signed_by_gpg_imports(ws: Workspace, keys: Keyrings) -> None:
    configure(ws, keys)
    ws.drop("/import/list.csv.pgp", keys.seal(CSV.encode(), by=keys.partner, to=keys.ours))
    code, result, stderr = run(ws, "import", "pgp-import")
    assert code == 0, stderr
    assert result["counts"]["inserted"] == 2
    assert ws.recipients()["ben@example.com"][1]["first_name"] == "Ben"
    assert staging_files(ws) == []  # the plaintext is gone


def test_an_encrypted_export_decrypts_with_gpg_to_the_exact_csv(
    ws: Workspace, keys: Keyrings
) -> None:
    configure(ws, keys)
    ws.drop("/import/list.csv.pgp", keys.seal(CSV.encode(), by=keys.partner, to=keys.ours))
    assert run(ws, "import", "pgp-import")[0] == 0
    code, result, stderr = run(ws, "export", "pgp-export")
    assert code == 0, stderr
    sealed = ws.inbox / "export" / "list.csv.pgp"
    assert result["file"]["sha256"] and not sealed.read_bytes().startswith(b"email")
    status = keys.root / "status"
    plain = keys.gpg(
        keys.partner, "--status-file", str(status), "--decrypt", data=sealed.read_bytes()
    )
    assert (
        plain
        == (
            "email,first_name,last_name\r\n"
            "anna@example.com,Anna,Schmidt\r\n"
            "ben@example.com,Ben,Müller\r\n"
        ).encode()
    )
    said = status.read_text()
    assert f"VALIDSIG {keys.ours.fingerprint} " in said  # signed by our key
    assert staging_files(ws) == []


def test_an_armoured_zip_export_holds_one_member(ws: Workspace, keys: Keyrings) -> None:
    import io
    import zipfile

    configure(ws, keys)
    ws.drop("/import/list.csv.pgp", keys.seal(CSV.encode(), by=keys.partner, to=keys.ours))
    assert run(ws, "import", "pgp-import")[0] == 0
    code, _result, stderr = run(ws, "export", "asc-export")
    assert code == 0, stderr
    sealed = (ws.inbox / "export" / "list.zip.asc").read_bytes()
    assert sealed.startswith(b"-----BEGIN PGP MESSAGE-----")
    plain = keys.gpg(keys.partner, "--decrypt", data=sealed)
    with zipfile.ZipFile(io.BytesIO(plain)) as zipped:
        assert zipped.namelist() == ["list.csv"]
        assert zipped.read("list.csv").startswith(b"email,first_name,last_name\r\n")


def refused(ws: Workspace, job: str = "pgp-import", **kw: Any) -> str:
    code, result, stderr = run(ws, "import", job, **kw)
    assert code == 1, stderr
    error: str = result["error"]
    assert stderr.strip().splitlines()[-1] == f"campaign-sync: error: {error}"
    assert ws.recipients() == {}
    assert staging_files(ws) == []
    return error


def test_a_file_signed_by_another_key_is_refused(ws: Workspace, keys: Keyrings) -> None:
    configure(ws, keys)
    ws.drop("/import/list.csv.pgp", keys.seal(CSV.encode(), by=keys.stranger, to=keys.ours))
    assert refused(ws) == (
        f"/import/list.csv.pgp: signed by {keys.stranger.fingerprint}, not by "
        f"{keys.partner.fingerprint} (source.verify); refused, nothing was imported"
    )


def test_a_file_without_a_signature_is_refused(ws: Workspace, keys: Keyrings) -> None:
    configure(ws, keys)
    ws.drop("/import/list.csv.pgp", keys.seal(CSV.encode(), by=None, to=keys.ours))
    assert refused(ws) == (
        "/import/list.csv.pgp: the file is not signed; source.verify requires a signature by "
        f"{keys.partner.fingerprint}; refused, nothing was imported"
    )


def test_a_signature_that_does_not_match_is_refused(ws: Workspace, keys: Keyrings) -> None:
    """Signed, not encrypted, stored uncompressed: one changed letter of the text breaks the
    signature itself, not the packing around it."""
    configure(ws, keys)
    signed = keys.gpg(
        keys.partner, "--compress-algo", "none", "--sign", "--output", "-", data=CSV.encode()
    )
    assert b"anna@example.com" in signed
    ws.drop("/import/list.csv.pgp", signed.replace(b"anna@example.com", b"anna@example.org"))
    assert refused(ws) == (
        f"/import/list.csv.pgp: the signature by {keys.partner.fingerprint} does not match the "
        "file (altered after it was signed); refused, nothing was imported"
    )


def test_a_wrong_passphrase_is_one_line(ws: Workspace, keys: Keyrings) -> None:
    configure(ws, keys)
    ws.drop("/import/list.csv.pgp", keys.seal(CSV.encode(), by=keys.partner, to=keys.ours))
    wrong = "not-the-" + PASSPHRASE
    error = refused(ws, env={"PGP_PASS": wrong})
    assert error == (
        "/import/list.csv.pgp: pgp.passphrase does not unlock the secret key in pgp.home; check it"
    )


def test_a_missing_passphrase_is_one_line(ws: Workspace, keys: Keyrings) -> None:
    configure(ws, keys)
    ws.config.write_text(ws.config.read_text().replace("  passphrase: ${PGP_PASS}\n", ""))
    ws.drop("/import/list.csv.pgp", keys.seal(CSV.encode(), by=keys.partner, to=keys.ours))
    assert refused(ws) == (
        "/import/list.csv.pgp: the secret key in pgp.home needs a passphrase; set pgp.passphrase"
    )
    code, result, _ = run(ws, "export", "pgp-export")
    assert code == 1
    assert result["error"] == (
        "/export/list.csv.pgp: the secret key in pgp.home needs a passphrase; set pgp.passphrase"
    )
    assert not (ws.inbox / "export").exists() and staging_files(ws) == []


def test_decrypt_true_reads_a_file_whatever_its_name(ws: Workspace, keys: Keyrings) -> None:
    configure(ws, keys)
    ws.drop("/import/list.csv", keys.seal(CSV.encode(), by=None, to=keys.ours, armor=True))
    code, result, stderr = run(ws, "import", "named-import")
    assert code == 0, stderr
    assert result["counts"]["inserted"] == 2


def test_the_passphrase_is_never_on_gpgs_command_line(
    ws: Workspace, keys: Keyrings, tmp_path: Path
) -> None:
    """A gpg on PATH that notes its arguments, then runs the real one."""
    configure(ws, keys)
    ws.drop("/import/list.csv.pgp", keys.seal(CSV.encode(), by=keys.partner, to=keys.ours))
    shim, noted = tmp_path / "bin", tmp_path / "argv.log"
    shim.mkdir()
    (shim / "gpg").write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$*" >> {noted}\nexec {keys_gpg()} "$@"\n'
    )
    (shim / "gpg").chmod(0o755)
    path = f"{shim}{os.pathsep}{os.environ['PATH']}"
    assert run(ws, "import", "pgp-import", env={"PATH": path})[0] == 0
    assert run(ws, "export", "pgp-export", env={"PATH": path})[0] == 0
    argv = noted.read_text()
    assert "--decrypt" in argv and "--encrypt" in argv and "--passphrase-fd 0" in argv
    assert PASSPHRASE not in argv and "pgp-Pass" not in argv


def keys_gpg() -> str:
    from pgpkeys import GPG

    return GPG


def test_without_python_gnupg_the_run_names_the_package(
    ws: Workspace, keys: Keyrings, tmp_path: Path
) -> None:
    """python-gnupg made unimportable for the CLI's interpreter (sys.modules["gnupg"] = None,
    as for a package that is not there): every command with a `pgp` config stops at it."""
    configure(ws, keys)
    ws.drop("/import/list.csv.pgp", keys.seal(CSV.encode(), by=keys.partner, to=keys.ours))
    hidden = tmp_path / "hide"
    hidden.mkdir()
    (hidden / "sitecustomize.py").write_text("import sys\nsys.modules['gnupg'] = None\n")
    env = {**ENV, "PYTHONPATH": str(hidden)}
    said = (
        f"{ws.config}: At 'pgp': OpenPGP needs the python-gnupg package; install the PGP "
        "extra: pip install 'campaign-sync[pgp]'"
    )
    done = ws.run("import", "pgp-import", env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [f"campaign-sync: error: {said}"]
    done = ws.run("validate", env=env)
    assert (done.returncode, done.stdout) == (2, f"{said}\n")
    assert not ws.store.exists()  # nothing ran, nothing was recorded


def test_without_gpg_the_run_says_what_to_install(ws: Workspace, keys: Keyrings) -> None:
    import sys

    configure(ws, keys)
    ws.drop("/import/list.csv.pgp", keys.seal(CSV.encode(), by=keys.partner, to=keys.ours))
    done = ws.run("import", "pgp-import", env={**ENV, "PATH": str(Path(sys.executable).parent)})
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"campaign-sync: error: cannot run GnuPG (gpg) with pgp.home {keys.ours.path}: install "
        "it (Debian: apt-get install gnupg) and check that the folder is a GnuPG home"
    ]
    assert ws.recipients() == {}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with Sshd(tmp_path_factory.mktemp("sshd")) as running:
        yield running


@pytest.mark.skipif(not sshd_helper.available(), reason="OpenSSH sshd not installed")
@pytest.mark.parametrize("protocol", ["sftp", "scp"])
def test_a_signed_encrypted_file_imports_over_ssh(
    ws: Workspace, keys: Keyrings, server: Sshd, protocol: str
) -> None:
    remote = ws.root / "remote"
    ssh = f"""\
  partner:
    type: ssh
    host: {server.host}
    port: {server.port}
    user: {server.user}
    key_file: {server.user_key}
    known_hosts: {server.known_hosts}
    protocol: {protocol}
    timeout: 30
"""
    text = BASE_CONFIG.format(extra=jobs(keys, "partner", str(remote)))
    text = text.replace("    path: inbox\n", "    path: inbox\n" + ssh)
    ws.write_config(text=text)
    (remote / "import").mkdir(parents=True)
    sealed = keys.seal(CSV.encode(), by=keys.partner, to=keys.ours)
    (remote / "import" / "list.csv.pgp").write_bytes(sealed)
    code, result, stderr = run(ws, "import", "pgp-import")
    assert code == 0, stderr
    assert result["counts"]["inserted"] == 2


# --------------------------------------------------------------------------- the config


def problems_of(ws: Workspace, keys: Keyrings, extra: str, pgp: bool = True) -> list[str]:
    from campaign_sync.config import problems

    text = BASE_CONFIG.format(extra=extra)
    if pgp:
        text += f"pgp: {{home: {keys.ours.path}}}\n"
    ws.write_config(text=text)
    return problems(str(ws.config))


@pytest.mark.parametrize(
    ("extra", "with_pgp", "said"),
    [
        (
            "  x: {type: blocklist-import, source: {server: inbox, path: /b.csv.gpg}}\n",
            False,
            "At 'jobs.x.source.path': decrypting needs the top-level `pgp`",
        ),
        (
            "  x: {type: blocklist-import, source: {server: inbox, path: /b, decrypt: true}}\n",
            False,
            "At 'jobs.x.source.decrypt': decrypting needs the top-level `pgp`",
        ),
        (
            "  x: {type: blocklist-export, target: {server: inbox, path: /b.csv,"
            " encrypt_to: 0123456789ABCDEF0123456789ABCDEF01234567}}\n",
            False,
            "At 'jobs.x.target.encrypt_to': encrypting needs the top-level `pgp`",
        ),
        (
            "  x: {type: blocklist-import, source: {server: inbox, path: /b.pgp,"
            " verify: DEADBEEFDEADBEEF}}\n",
            True,
            "At 'jobs.x.source.verify': expected a key's full fingerprint, 40 hexadecimal",
        ),
        (
            "  x: {type: blocklist-import, source: {server: inbox, path: /b.csv,"
            " verify: 0123456789ABCDEF0123456789ABCDEF01234567}}\n",
            True,
            "At 'jobs.x.source.verify': only an OpenPGP file carries a signature",
        ),
        (
            "  x: {type: blocklist-export, target: {server: inbox, path: /b.csv.pgp}}\n",
            True,
            "At 'jobs.x.target.encrypt_to': required when the target's name ends in .pgp",
        ),
        (
            "  x: {type: blocklist-export, target: {server: inbox, path: /b.csv, sign: true}}\n",
            True,
            "At 'jobs.x.target.sign': signs an encrypted export: set encrypt_to too",
        ),
    ],
)
def test_config_mistakes_are_named_by_their_keys(
    ws: Workspace, keys: Keyrings, extra: str, with_pgp: bool, said: str
) -> None:
    found = problems_of(ws, keys, extra, with_pgp)
    assert any(said in problem for problem in found), found
    # The JSON Schema refuses the same config.
    from jsonschema import Draft202012Validator
    from test_schema import schema_errors

    from campaign_sync.config.schema import config_schema

    assert schema_errors(Draft202012Validator(config_schema()), ws.config.read_text()) != []


def test_pgp_section_mistakes(ws: Workspace, keys: Keyrings) -> None:
    base = BASE_CONFIG.format(extra="")
    ws.write_config(text=base + "pgp: {home: /nonexistent/gnupg, passphrase: 1234}\n")
    from campaign_sync.config import problems

    found = problems(str(ws.config))
    assert any("At 'pgp.home': /nonexistent/gnupg is not a folder" in p for p in found), found
    assert any("At 'pgp.passphrase': expected text, got int" in p for p in found), found


def test_a_valid_pgp_config_passes_validate_and_the_schema(ws: Workspace, keys: Keyrings) -> None:
    from jsonschema import Draft202012Validator
    from test_schema import schema_errors

    from campaign_sync.config.schema import config_schema

    configure(ws, keys)
    done = ws.run("validate", env=ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    spaced = " ".join(keys.partner.fingerprint[i : i + 4] for i in range(0, 40, 4))
    text = ws.config.read_text().replace(
        f'verify: "{keys.partner.fingerprint}"', f'verify: "{spaced}"'
    )
    ws.config.write_text(text)
    assert ws.run("validate", env=ENV).returncode == 0
    assert schema_errors(Draft202012Validator(config_schema()), text) == []


def test_the_staging_folder_is_private(ws: Workspace, keys: Keyrings) -> None:
    """Where the plaintext lives while it is read: 0700 folders, 0600 files."""
    configure(ws, keys)
    ws.drop("/import/list.csv.pgp", keys.seal(CSV.encode(), by=keys.partner, to=keys.ours))
    assert run(ws, "import", "pgp-import")[0] == 0
    folder = ws.root / "var" / "staging" / "pgp-import"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(folder.parent.stat().st_mode) == 0o700
