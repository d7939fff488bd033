"""Files the operator names for output: replaced by a rename, so only a regular file may stand
at the name.

`export --output`, `metrics --output` and `systemd --output-dir` write a new file beside the
name and rename it into place, so a reader never sees half a file. A rename replaces whatever
the name is: run as root with `--output /dev/null`, it would put a regular file where the
device was, for every program on the machine; a symbolic link would be replaced rather than
followed. Such a name is refused before anything is written.
"""

from __future__ import annotations

import os
import stat

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
)


def not_replaceable(path: str | os.PathLike[str]) -> str | None:
    """Why `path` must not be replaced by a rename (what stands there), or None when nothing
    or a regular file does (a name that cannot be looked at is left to the write to report)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "not a regular file"


def refusal(option: str, path: str | os.PathLike[str]) -> str | None:
    """The one-line refusal for `option PATH` when `path` must not be replaced, else None."""
    kind = not_replaceable(path)
    if kind is None:
        return None
    return (
        f"{option} {os.fspath(path)} is {kind}; campaign-sync writes a new file and renames it "
        "into place, which would replace it: name a regular file"
    )
