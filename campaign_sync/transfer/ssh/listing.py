"""Listing a folder over scp, where there is no listing request: one shell command.

The command is built like every other remote command (session.remote_arg: the folder is one
quoted word, a leading `-` made harmless, `~/` left to the login shell). It prints each regular
file directly in the folder as `SIZE MTIME NAME` ended by a NUL byte, which no file name can
hold, so names with spaces, quotes, newlines or shell characters come back intact. `find -P`
(the default) never follows a link and `-type f` lists regular files only, as sftp and local
folders do. `-printf` is GNU find's, as on Linux servers; elsewhere the error says to use sftp.
What cannot be listed is answered in-band (see _REFUSALS), so errors are in our own words.
"""

from __future__ import annotations

from ...errors import SourceMissing, TransferError
from ..base import RemoteFile, plain_name
from .session import remote_arg

# What the command prints instead of records when it cannot list: a word and a NUL, told
# apart from records, which start with a digit.
_REFUSALS = {
    b"no-such-folder": "no folder {folder}",
    b"not-a-folder": "{folder} is not a folder",
    b"cannot-enter": "the server refused to open the folder {folder} (no permission?)",
    b"no-gnu-find": (
        "listing a folder over scp runs GNU find on the server (find -printf), which this "
        "server does not have; set protocol: sftp"
    ),
}


def listing_command(folder: str) -> str:
    quoted = remote_arg(folder or ".")
    return (
        f"if [ ! -e {quoted} ] && [ ! -L {quoted} ]; then printf 'no-such-folder\\000'; "
        f"elif [ ! -d {quoted} ]; then printf 'not-a-folder\\000'; "
        f"elif ! cd -- {quoted} 2>/dev/null; then printf 'cannot-enter\\000'; "
        "elif ! find . -maxdepth 0 -printf '' 2>/dev/null; then printf 'no-gnu-find\\000'; "
        "else exec find . -mindepth 1 -maxdepth 1 -type f -printf '%s %T@ %f\\000'; fi"
    )


def parse_listing(out: bytes, folder: str) -> list[RemoteFile]:
    """The files in the command's output; SourceMissing for a missing folder."""
    records = out.split(b"\0")
    refusal = _REFUSALS.get(records[0]) if len(records) == 2 else None
    if refusal is not None:
        problem = refusal.format(folder=folder or ".")
        if records[0] == b"no-such-folder":
            raise SourceMissing(problem)
        raise TransferError(problem)
    if records[-1] != b"":  # every record ends with NUL: the output was cut short
        raise TransferError(f"the listing of {folder or '.'} ended in the middle of a name")
    found = []
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
