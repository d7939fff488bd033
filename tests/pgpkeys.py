"""Real GnuPG keyrings for the OpenPGP tests: made with `gpg --batch --quick-gen-key` in
temporary GNUPGHOMEs, fast key types (ed25519 to sign, cv25519 to encrypt).

    with Keyrings() as keys:
        keys.ours        # campaign-sync's home: our secret key (with PASSPHRASE), the
                         # partner's and the stranger's public keys
        keys.partner     # the partner's home: its secret key (no passphrase), our public key
        keys.stranger    # someone else's home: a key the partner did not make
        keys.gpg(keys.partner, "--encrypt", ...)   # gpg as the partner runs it

The homes live in short folders under /tmp (gpg-agent's socket path must stay short), their
agents keep no passphrase in their cache (so a wrong passphrase is really tried), and every
agent is stopped when the block ends.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

GPG = shutil.which("gpg") or "gpg"
GPGCONF = shutil.which("gpgconf") or "gpgconf"

# Our secret key's passphrase: long, with characters a shell or an encoding would change.
PASSPHRASE = "pgp-Pass_9e1c 'ü' \"$HOME\""


@dataclass
class Home:
    path: Path
    fingerprint: str = ""


class Keyrings:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="csgpg-", dir="/tmp"))
        self.ours = Home(self.root / "ours")
        self.partner = Home(self.root / "partner")
        self.stranger = Home(self.root / "stranger")

    def __enter__(self) -> Keyrings:
        try:
            self._make(self.ours, "campaign-sync <sync@example.com>", PASSPHRASE)
            self._make(self.partner, "Partner <data@partner.example>", "")
            self._make(self.stranger, "Stranger <x@stranger.example>", "")
            for other in (self.partner, self.stranger):
                self.trade(other, self.ours)
                self.trade(self.ours, other)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for home in (self.ours, self.partner, self.stranger):
            if home.path.exists():
                subprocess.run(
                    [GPGCONF, "--homedir", str(home.path), "--kill", "all"],
                    capture_output=True,
                    timeout=60,
                )
        shutil.rmtree(self.root, ignore_errors=True)

    def gpg(self, home: Home, *args: str, data: bytes | None = None) -> bytes:
        """gpg in `home` (batch, loopback pinentry); its stdout. Fails on a non-zero exit."""
        done = subprocess.run(
            [GPG, "--homedir", str(home.path), "--batch", "--pinentry-mode", "loopback", *args],
            input=data,
            capture_output=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return done.stdout

    def _make(self, home: Home, uid: str, passphrase: str) -> None:
        home.path.mkdir(mode=0o700)
        # No passphrase kept in the agent: each run must bring the right one.
        (home.path / "gpg-agent.conf").write_text("default-cache-ttl 0\nmax-cache-ttl 0\n")
        secret = ["--passphrase", passphrase]
        self.gpg(home, *secret, "--quick-gen-key", uid, "ed25519", "sign", "never")
        listed = self.gpg(home, "--list-keys", "--with-colons").decode()
        home.fingerprint = next(
            line.split(":")[9] for line in listed.splitlines() if line.startswith("fpr:")
        )
        self.gpg(home, *secret, "--quick-add-key", home.fingerprint, "cv25519", "encr", "never")

    def trade(self, giver: Home, taker: Home) -> None:
        """`taker` imports `giver`'s public key."""
        self.gpg(taker, "--import", data=self.gpg(giver, "--export", giver.fingerprint))

    def seal(self, data: bytes, *, by: Home | None, to: Home | None, armor: bool = False) -> bytes:
        """`data` as `by` sends it: encrypted to `to` and/or signed by `by`."""
        args = ["--trust-model", "always", "--output", "-"]
        if to is not None:
            args += ["--encrypt", "--recipient", to.fingerprint]
        if by is not None:
            args += ["--sign"]
        if armor:
            args += ["--armor"]
        return self.gpg(by or self.partner, *args, data=data)
