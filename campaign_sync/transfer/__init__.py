"""Moving files to and from a server: one small interface (base.py), a `local` folder
(local.py) and `ssh` (ssh/, loaded only for ssh servers).

Import and export jobs talk only to `Transfer`; they never know which kind of server it is.
"""

from __future__ import annotations

from ..config.model import ServerConfig
from .base import Transfer
from .local import LocalTransfer


def open_transfer(server: ServerConfig) -> Transfer:
    """A connected Transfer for `server`; ssh support is imported only when needed."""
    if server.type == "local":
        return LocalTransfer(server)
    from .ssh.transfer import SshTransfer  # paramiko is heavy: load it only for ssh servers

    return SshTransfer(server)
