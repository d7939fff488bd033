"""Host key verification: OpenSSH known_hosts files and pinned SHA256 fingerprints.

Parsed here rather than with paramiko.HostKeys because we need what that class drops:
`@revoked` lines, wildcard patterns and negations, and the line number of a changed key
for the error message. Keys are compared as raw wire blobs, so no key parsing is needed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from ..errors import HostKeyError

# known_hosts names a key by its type; the handshake negotiates signature algorithms.
# An RSA key in known_hosts ("ssh-rsa") may be offered as any of these.
_ALGORITHMS_FOR_TYPE = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}


def fingerprint(blob: bytes) -> str:
    """The OpenSSH SHA256 fingerprint of a public key blob (as `ssh-keygen -lf` prints it)."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def host_pattern(host: str, port: int) -> str:
    """How known_hosts names a host: `host`, or `[host]:port` for a port other than 22."""
    return host if port == 22 else f"[{host}]:{port}"


@dataclass(frozen=True)
class KnownKey:
    key_type: str
    blob: bytes
    line: int
    revoked: bool


def _hashed_match(pattern: str, name: str) -> bool:
    # |1|base64(salt)|base64(HMAC-SHA1(salt, name)) as written by `ssh-keygen -H`.
    try:
        _, magic, salt64, digest64 = pattern.split("|")
        salt, digest = base64.b64decode(salt64), base64.b64decode(digest64)
    except (ValueError, binascii.Error):
        return False
    if magic != "1":
        return False
    # OpenSSH lower-cases the host name before hashing it (as it does before matching).
    computed = hmac.new(salt, name.lower().encode("utf-8"), hashlib.sha1).digest()
    return hmac.compare_digest(computed, digest)


def _glob(pattern: str, name: str) -> bool:
    # OpenSSH patterns know only `*` and `?`; `[` is literal (think `[host]:port`), so
    # fnmatch, which reads `[...]` as a character class, would be wrong here.
    regex = "".join(
        ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.lower()
    )
    return re.fullmatch(regex, name.lower()) is not None


def _names_match(field: str, name: str) -> bool:
    """OpenSSH semantics: any positive pattern matches and no negated (`!`) one does."""
    if field.startswith("|"):
        return _hashed_match(field, name)
    matched = False
    for pattern in field.split(","):
        negated = pattern.startswith("!")
        if _glob(pattern.lstrip("!"), name):
            if negated:
                return False
            matched = True
    return matched


def read_known_hosts(path: Path, host: str, port: int) -> list[KnownKey]:
    """Every key line for host:port in `path` (missing file: none). @cert-authority is skipped."""
    name = host_pattern(host, port)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise HostKeyError(f"cannot read known_hosts file {path}: {exc}") from None
    keys = []
    for number, raw in enumerate(text.splitlines(), 1):
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = fields.pop(0) if fields[0].startswith("@") else None
        if marker not in (None, "@revoked") or len(fields) < 3:
            continue  # certificate authorities are not supported: such lines never match
        if not _names_match(fields[0], name):
            continue
        try:
            blob = base64.b64decode(fields[2], validate=True)
        except binascii.Error:
            continue
        keys.append(KnownKey(fields[1], blob, number, marker == "@revoked"))
    return keys


def preferred_algorithms(known: list[KnownKey], available: tuple[str, ...]) -> tuple[str, ...]:
    """Host key algorithms with those already in known_hosts first, as OpenSSH orders them.

    Without this a server that has both an ed25519 and an ecdsa key might offer the one we
    do not know and be refused although we trust the other.
    """
    first: list[str] = []
    for entry in known:
        if entry.revoked:
            continue
        for algorithm in _ALGORITHMS_FOR_TYPE.get(entry.key_type, (entry.key_type,)):
            if algorithm in available and algorithm not in first:
                first.append(algorithm)
    return tuple(first) + tuple(a for a in available if a not in first)


@dataclass(frozen=True)
class HostKeyPolicy:
    """What a server's host key must be: a pinned fingerprint, or a known_hosts entry."""

    host: str
    port: int
    known_hosts: Path | None
    pinned: str | None
    # The jump host the server is reached through: ssh-keyscan must run there.
    via: str | None = None

    def known(self) -> list[KnownKey]:
        return read_known_hosts(self.known_hosts, self.host, self.port) if self.known_hosts else []

    def verify(self, key_type: str, blob: bytes) -> None:
        """Return if the offered key is trusted; raise HostKeyError saying what to do if not."""
        offered = fingerprint(blob)
        if self.pinned:
            if self.matches_pin(blob):
                return
            raise HostKeyError(self.pin_mismatch([(key_type, blob)]))
        known = self.known()
        if any(k.revoked and k.blob == blob for k in known):
            raise HostKeyError(
                f"host key {key_type} {offered} of {self._where()} is marked @revoked in "
                f"{self.known_hosts}; refusing to connect."
            )
        trusted = [k for k in known if not k.revoked]
        if any(k.blob == blob for k in trusted):
            return
        same_type = [k for k in trusted if k.key_type == key_type]
        if same_type:
            raise HostKeyError(self._changed(key_type, offered, same_type[0]))
        raise HostKeyError(self._unknown(key_type, offered))

    def matches_pin(self, blob: bytes) -> bool:
        return bool(self.pinned) and hmac.compare_digest(
            fingerprint(blob), str(self.pinned).rstrip("=")
        )

    def pin_mismatch(self, offered: list[tuple[str, bytes]]) -> str:
        """The refusal when none of the `offered` (key type, blob) matches the pin."""
        keys = ", ".join(f"{key_type} {fingerprint(blob)}" for key_type, blob in offered)
        return (
            f"host key of {self._where()} does not match the pinned host_key: the server "
            f"offered {keys}, the config pins {self.pinned}. If the partner "
            f"really changed its key (confirm with them), put the new fingerprint in host_key."
        )

    def _where(self) -> str:
        return host_pattern(self.host, self.port)

    def _keyscan(self, key_type: str) -> str:
        """The command that trusts the key, in backticks (and where to run it)."""
        kind = {"ssh-ed25519": "ed25519", "ssh-rsa": "rsa"}.get(key_type, "ecdsa")
        port = f"-p {self.port} " if self.port != 22 else ""
        target = shlex.quote(str(self.known_hosts))
        scan = f"ssh-keyscan {port}-t {kind} {shlex.quote(self.host)}"
        if self.via:  # this machine cannot reach the server: only the jump host can
            return f"`{scan}` run on jump host '{self.via}', its output added to {target}"
        return f"`{scan} >> {target}`"

    def _unknown(self, key_type: str, offered: str) -> str:
        return (
            f"host key of {self._where()} is unknown (not in {self.known_hosts}): the server "
            f"offered {key_type} {offered}. Check that fingerprint with the partner, then trust "
            f"it with {self._keyscan(key_type)} or set host_key: {offered}."
        )

    def _changed(self, key_type: str, offered: str, old: KnownKey) -> str:
        return (
            f"HOST KEY OF {self._where()} HAS CHANGED: the server offered {key_type} {offered}, "
            f"which does not match line {old.line} of {self.known_hosts} "
            f"({fingerprint(old.blob)}). This may be an attack. If the partner really replaced "
            f"its key (confirm with them), run `ssh-keygen -R {shlex.quote(self._where())} -f "
            f"{shlex.quote(str(self.known_hosts))}` and then {self._keyscan(key_type)}."
        )
