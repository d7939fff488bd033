"""Listing a folder over scp, where there is no listing request: one shell command.

The command is built like every other remote command (session.remote_arg: the folder is one
quoted word, a leading `-` made harmless, `~/` left to the login shell). It prints each regular
file directly in the folder as `SIZE MTIME NAME` ended by a NUL byte, which no file name can
hold, so names with spaces, quotes, newlines or shell characters come back intact. `find -P`
(the default) never follows a link and `-type f` lists regular files only, as sftp and local
folders do. `-printf` is GNU find's, as on Linux servers; elsewhere the error says to use sftp.
"""

from __future__ import annotations

from ...errors import SourceMissing, TransferError
from ..base import RemoteFile, plain_name
from .session import remote_arg

# What the command prints, instead of records, for a folder that does not exist.
NO_FOLDER = b"no-such-folder\n"
GNU_FIND_HINT = (
    "listing a folder over scp runs GNU find on the server (find -printf); "
    "if it has another find, set protocol: sftp"
)


def listing_command(folder: str) -> str:
    quoted = remote_arg(folder or ".")
    return (
        f"if [ ! -e {quoted} ] && [ ! -L {quoted} ]; then printf 'no-such-folder\\n'; exit 0; fi; "
        f"cd -- {quoted} && {{ find . -mindepth 1 -maxdepth 1 -type f -printf '%s %T@ %f\\000' "
        f"|| {{ echo {remote_arg(GNU_FIND_HINT)} >&2; exit 1; }}; }}"
    )


def parse_listing(out: bytes, folder: str) -> list[RemoteFile]:
    """The files in the command's output; SourceMissing for a missing folder."""
    if out == NO_FOLDER:
        raise SourceMissing(f"no folder {folder or '.'}")
    found = []
    records = out.split(b"\0")
    if records[-1] != b"":  # every record ends with NUL: the output was cut short
        raise TransferError(f"the listing of {folder or '.'} ended in the middle of a name")
    for record in records[:-1]:
        try:
            size, mtime, raw = record.split(b" ", 2)
            name = raw.decode("utf-8")
            entry = RemoteFile(name, int(size), int(mtime.split(b".", 1)[0]))
        except (ValueError, UnicodeDecodeError):
            # Not UTF-8 (the config's paths are text) or not find's format: left alone.
            continue
        if plain_name(entry.name):
            found.append(entry)
    return found
