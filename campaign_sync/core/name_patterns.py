"""Wildcard patterns in the file-name part of an import's source path.

`/import/newsletter_*.csv` names every file in `/import` whose name matches
`newsletter_*.csv`: `*` any run of characters, `?` one character, `[...]` one character of a
class (`[!...]` one not in it). Matching is done here, on names a listing returned, never by
a shell or a server, so it is the same over scp, sftp and on a local folder. As in a shell, a
name starting with `.` matches only a pattern that starts with `.`: partners' upload tools
write hidden temporary names and rename them when complete.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Protocol, TypeVar

# What makes a name a pattern; `[*]`, `[?]` and `[[]` stand for the character itself.
_WILDCARD = re.compile(r"[*?\[]")


def has_wildcard(text: str) -> bool:
    return bool(_WILDCARD.search(text))


@dataclass(frozen=True)
class NamePattern:
    """A folder (as written, `""` for the login or root folder) and a name pattern in it."""

    folder: str
    pattern: str

    def matches(self, name: str) -> bool:
        if name.startswith(".") and not self.pattern.startswith("."):
            return False
        return fnmatchcase(name, self.pattern)

    def path(self, name: str) -> str:
        """The remote path of `name`, a file of this folder."""
        return posixpath.join(self.folder, name)

    def __str__(self) -> str:
        return self.path(self.pattern)


def name_pattern(path: str) -> NamePattern | None:
    """The pattern a (rendered) source path holds, or None when it names one file.

    ValueError when a folder part holds a wildcard: which folders to look in must be plain.
    """
    folder, name = posixpath.split(path)
    if has_wildcard(folder):
        raise ValueError(
            f"a wildcard (*, ? or [...]) may only be in the file name, not in the folder "
            f"'{folder}'; name the folder exactly (a literal *, ? or [ is written [*], [?], [[])"
        )
    if not has_wildcard(name):
        return None
    return NamePattern(folder, name)


class Listed(Protocol):
    """What ordering needs of a listed file (transfer.base.RemoteFile has it)."""

    @property
    def name(self) -> str: ...

    @property
    def mtime(self) -> int: ...


L = TypeVar("L", bound=Listed)


def oldest_first(files: Iterable[L]) -> list[L]:
    """Files in the order a pattern imports them: modification time, then name."""
    return sorted(files, key=lambda f: (f.mtime, f.name))
