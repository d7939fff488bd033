"""Zip archives as partners send them, through the installed CLI and a local server.

A .zip source is read like a .gz one: its one file (or `source.member`) streamed, never
extracted. What must not get through: a zip bomb (declared or lying about its size), a member
named with `..` or an absolute path, an archive with several files and no `member`. Each
fails the run with one line, exit 1, and leaves the store as it was. Exports to a .zip
target are one member named after the target, and go back in through an import.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import pytest
from conftest import BASE_CONFIG, Workspace

CSV = "E-Mail;Vorname;Nachname;DOI\nanna@example.com;Anna;Schmidt;\nben@example.com;Ben;Meyer;\n"

JOBS = """\
  zip-import:
    type: recipient-import
    list: newsletter
    source: {server: inbox, path: /import/list.zip}
    format: {delimiter: ";"}
    columns: {E-Mail: email, Vorname: first_name, Nachname: last_name}
  member-import:
    type: recipient-import
    list: newsletter
    source: {server: inbox, path: /import/list.zip, member: "list_{date:%Y}.csv"}
    format: {delimiter: ";"}
    columns: {E-Mail: email, Vorname: first_name, Nachname: last_name}
  zip-export:
    type: recipient-export
    list: newsletter
    target: {server: inbox, path: "/export/newsletter_{date:%Y%m%d}.csv.zip"}
    fields: [email, first_name, last_name]
  back-import:
    type: recipient-import
    list: copy
    source: {server: inbox, path: "/export/newsletter_{date:%Y%m%d}.csv.zip"}
"""


def archive(*members: tuple[str, bytes | str], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip archive with these (name, content) members, names exactly as given."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as zipped:
        for name, content in members:
            info = zipfile.ZipInfo(name, (2026, 12, 7, 10, 0, 0))
            info.compress_type = method
            zipped.writestr(info, content)
    return buffer.getvalue()


def run_json(ws: Workspace, *args: str) -> tuple[int, dict[str, object], str]:
    done = ws.run("--json", *args)
    assert "Traceback" not in done.stderr
    return done.returncode, json.loads(done.stdout), done.stderr


def refused(ws: Workspace, job: str = "zip-import") -> str:
    """Run `job`, which must fail with exit 1 and one line, importing nothing; its error."""
    code, run, stderr = run_json(ws, "import", job)
    assert code == 1, stderr
    error = str(run["error"])
    assert "\n" not in error
    assert stderr.strip().splitlines()[-1] == f"campaign-sync: error: {error}"
    assert ws.recipients() == {}
    return error


@pytest.mark.stores("sqlite", "postgres")
def test_a_zip_is_read_like_a_gz_its_one_file_streamed(ws: Workspace) -> None:
    ws.write_config(text=BASE_CONFIG.format(extra=JOBS))
    # A folder entry, the file inside it and macOS's resource fork: one file to import.
    ws.drop(
        "/import/list.zip",
        archive(("export/", b""), ("export/list.csv", CSV), ("__MACOSX/export/._list.csv", b"x")),
    )
    code, run, stderr = run_json(ws, "import", "zip-import")
    assert code == 0, stderr
    assert run["counts"]["inserted"] == 2  # type: ignore[index]
    assert sorted(ws.recipients()) == ["anna@example.com", "ben@example.com"]
    # Nothing was extracted: no member's name on disk, no staging copy left.
    assert not list(ws.root.rglob("list.csv"))
    assert not [p for p in (ws.root / "var" / "staging").rglob("*") if p.is_file()]


def test_export_to_zip_is_one_member_named_after_the_target_and_imports_back(
    ws: Workspace,
) -> None:
    ws.write_config(text=BASE_CONFIG.format(extra=JOBS))
    ws.drop("/import/list.zip", archive(("list.csv", CSV)))
    assert ws.run("import", "zip-import").returncode == 0
    code, run, stderr = run_json(ws, "export", "zip-export", "--date", "2026-12-07")
    assert code == 0, stderr
    path = ws.inbox / "export" / "newsletter_20261207.csv.zip"
    assert run["file"]["path"] == "/export/newsletter_20261207.csv.zip"  # type: ignore[index]
    with zipfile.ZipFile(path) as zipped:
        [info] = zipped.infolist()
        assert info.filename == "newsletter_20261207.csv"
        assert zipped.testzip() is None
        text = zipped.read(info).decode("utf-8")
    assert text == (
        "email,first_name,last_name\r\n"
        "anna@example.com,Anna,Schmidt\r\n"
        "ben@example.com,Ben,Meyer\r\n"
    )
    # No temporary upload name left beside it (atomic, as every export).
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    code, run, stderr = run_json(ws, "import", "back-import", "--date", "2026-12-07")
    assert code == 0, stderr
    assert sorted(ws.recipients("copy")) == ["anna@example.com", "ben@example.com"]


def test_several_files_without_member_are_named_in_one_line(ws: Workspace) -> None:
    ws.write_config(text=BASE_CONFIG.format(extra=JOBS))
    ws.drop("/import/list.zip", archive(("list_2026.csv", CSV), ("readme.txt", "hi")))
    error = refused(ws)
    assert error == (
        "/import/list.zip: the archive holds 2 files ('list_2026.csv', 'readme.txt'); set "
        "the job's source.member to the one to import"
    )
    code, _run, stderr = run_json(ws, "import", "member-import", "--date", "2026-12-07")
    assert code == 0, stderr
    assert sorted(ws.recipients()) == ["anna@example.com", "ben@example.com"]


def test_a_member_that_is_not_there_is_named(ws: Workspace) -> None:
    ws.write_config(text=BASE_CONFIG.format(extra=JOBS))
    ws.drop("/import/list.zip", archive(("other.csv", CSV)))
    code, run, _ = run_json(ws, "import", "member-import", "--date", "2026-12-07")
    assert code == 1
    assert run["error"] == (
        "/import/list.zip: the archive has no member 'list_2026.csv' (source.member); "
        "it holds 'other.csv'"
    )


@pytest.mark.parametrize("name", ["../evil.csv", "/tmp/evil.csv", "ok/../../evil.csv"])
def test_a_member_named_out_of_its_folder_is_refused(ws: Workspace, name: str) -> None:
    ws.write_config(text=BASE_CONFIG.format(extra=JOBS))
    ws.drop("/import/list.zip", archive((name, CSV)))
    error = refused(ws)
    assert error == (
        f"/import/list.zip: the archive names a member {name!r}, a path out of its folder "
        "(.. or absolute); refused, nothing was read: ask the partner for a plain archive"
    )
    assert not list(ws.root.parent.rglob("evil.csv"))


def test_a_zip_bomb_is_refused_before_it_inflates(ws: Workspace) -> None:
    ws.write_config(text=BASE_CONFIG.format(extra=JOBS))
    # 64 MiB of blank lines deflate about a thousand times.
    bomb = archive(("list.csv", "E-Mail\n" + "\n" * (64 << 20)))
    assert len(bomb) < 200_000
    ws.drop("/import/list.zip", bomb)
    error = refused(ws)
    assert error.startswith("/import/list.zip: member 'list.csv' inflates ")
    assert error.endswith(
        "or more, over 100 times; refused as a possible zip bomb (no CSV compresses that well)"
    )


def test_a_header_that_lies_about_the_size_changes_nothing(ws: Workspace) -> None:
    """The archive says its member is 1,000 bytes; it inflates to 64 MiB. Reading stops at
    the declared size and the check of the data fails the run."""
    ws.write_config(text=BASE_CONFIG.format(extra=JOBS))
    honest = archive(("list.csv", "E-Mail\n" + "\n" * (64 << 20)))
    ws.drop("/import/list.zip", lie_about_size(honest, 1000))
    with zipfile.ZipFile(ws.inbox / "import" / "list.zip") as zipped:
        assert zipped.infolist()[0].file_size == 1000  # the lie is what zipfile reads
    error = refused(ws)
    assert error == (
        "/import/list.zip: line 1: the zip data is broken or cut off at or after this line; "
        "ask for the file again"
    )


def lie_about_size(data: bytes, size: int) -> bytes:
    """The archive with its one member's uncompressed size replaced by `size` in both the
    local header and the central directory."""
    patched = bytearray(data)
    local = patched.find(b"PK\x03\x04")
    struct.pack_into("<I", patched, local + 22, size)
    central = patched.find(b"PK\x01\x02")
    struct.pack_into("<I", patched, central + 24, size)
    return bytes(patched)


def test_a_broken_archive_is_one_line(ws: Workspace) -> None:
    ws.write_config(text=BASE_CONFIG.format(extra=JOBS))
    ws.drop("/import/list.zip", archive(("list.csv", CSV))[:40])
    assert refused(ws) == (
        "/import/list.zip: not a readable zip archive (broken or cut off); ask for the file again"
    )


def test_a_password_protected_member_is_refused(ws: Workspace) -> None:
    ws.write_config(text=BASE_CONFIG.format(extra=JOBS))
    data = bytearray(archive(("list.csv", CSV)))
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # the "encrypted" flag
        at = data.find(signature)
        data[at + offset] |= 0x1
    ws.drop("/import/list.zip", bytes(data))
    assert refused(ws) == (
        "/import/list.zip: member 'list.csv' is encrypted with a zip password, which "
        "campaign-sync does not read; ask for OpenPGP encryption (.pgp) instead"
    )


def test_the_staging_copy_keeps_the_zip_suffix(tmp_path: Path) -> None:
    from campaign_sync.csvio.packing import staging_suffix, zip_member_name

    assert staging_suffix("/in/list.ZIP") == ".csv.zip"
    assert staging_suffix("/in/list.csv.zip.pgp") == ".csv.zip.pgp"
    assert staging_suffix("/in/list.txt") == ".csv"
    assert zip_member_name("/out/list.csv.zip") == "list.csv"
    assert zip_member_name("/out/list.zip") == "list.csv"
    assert zip_member_name("/out/list.tsv.zip.pgp") == "list.tsv"
