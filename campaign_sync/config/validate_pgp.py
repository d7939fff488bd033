"""Checking what packs a partner file: the top-level `pgp` (the GnuPG home and passphrase),
a source's `member`, `decrypt` and `verify`, a target's `encrypt_to` and `sign`, and that
every job that decrypts or encrypts has a `pgp` to do it with."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .checks import Checks
from .model import ENCRYPTED_SUFFIXES, FINGERPRINT, JobConfig, PgpConfig

PGP_KEYS = ("home", "passphrase")
INSTALL_HINT = "install the PGP extra: pip install 'campaign-sync[pgp]'"
SOURCE_PACKING_KEYS = ("member", "decrypt", "verify")
TARGET_PACKING_KEYS = ("encrypt_to", "sign")


class PgpChecks(Checks):
    def pgp(self, raw: Any) -> PgpConfig | None:
        if raw is None:
            return None
        spec = self.mapping(raw, "pgp", PGP_KEYS)
        if not gnupg_installed():
            raise self.fail("pgp", f"OpenPGP needs the python-gnupg package; {INSTALL_HINT}")
        home = self.attempt(lambda: self.pgp_home(spec.get("home")))
        passphrase = self.attempt(lambda: self.pgp_passphrase(spec.get("passphrase")))
        return None if home is None else PgpConfig(home=home, passphrase=passphrase)

    def pgp_home(self, value: Any) -> Path:
        if value is None:
            raise self.fail("pgp.home", "required: the GnuPG home folder that holds the keys")
        home = self.local_path(value, "pgp.home")
        if not home.is_dir():
            raise self.fail(
                "pgp.home",
                f"{home} is not a folder; set it to the GnuPG home with the keys "
                "(gpg --homedir DIR --import KEY makes one)",
            )
        return home

    def pgp_passphrase(self, value: Any) -> str | None:
        passphrase = self.secret(value, "pgp.passphrase")
        if passphrase is not None and ("\n" in passphrase or "\r" in passphrase):
            raise self.fail("pgp.passphrase", "must be one line (it holds a line end)")
        return passphrase

    def fingerprint(self, value: Any, key: str) -> str:
        """A key's full fingerprint, as `gpg --fingerprint` shows it (spaces allowed)."""
        text = self.string(value, key)
        compact = re.sub(r"\s+", "", text).upper()
        compact = compact[2:] if compact.startswith("0X") else compact
        if not FINGERPRINT.match(compact):
            raise self.fail(
                key,
                "expected a key's full fingerprint, 40 hexadecimal digits as "
                "`gpg --fingerprint` shows them (a key ID is too short to pin a key)",
            )
        return compact

    def source_packing(self, skey: str, src: dict[str, Any]) -> dict[str, Any]:
        """A source's member, decrypt and verify, as SourceConfig fields."""
        values: dict[str, Any] = {}
        if src.get("member") is not None:
            self.settle(values, "member", lambda: self.remote_member(src["member"], skey))
        if src.get("decrypt") is not None:
            self.settle(values, "decrypt", lambda: self.boolean(src["decrypt"], f"{skey}.decrypt"))
        if src.get("verify") is not None:
            self.settle(values, "verify", lambda: self.fingerprint(src["verify"], f"{skey}.verify"))
            path = src.get("path")
            named = isinstance(path, str) and path.lower().endswith(ENCRYPTED_SUFFIXES)
            if not named and not values.get("decrypt"):
                self.note(
                    self.fail(
                        f"{skey}.verify",
                        "only an OpenPGP file carries a signature: name the source "
                        f"{'/'.join(ENCRYPTED_SUFFIXES)} or set source.decrypt: true",
                    )
                )
        return values

    def remote_member(self, value: Any, skey: str) -> str:
        member = self.string(value, f"{skey}.member")
        self.remote_path(member, f"{skey}.member")
        return member

    def remote_path(self, value: Any, key: str) -> str:  # the jobs' check (validate_jobs.py)
        raise NotImplementedError

    def target_packing(self, tkey: str, tgt: dict[str, Any]) -> dict[str, Any]:
        """A target's encrypt_to and sign, as TargetConfig fields."""
        values: dict[str, Any] = {}
        if tgt.get("encrypt_to") is not None:
            self.settle(
                values,
                "encrypt_to",
                lambda: self.fingerprint(tgt["encrypt_to"], f"{tkey}.encrypt_to"),
            )
        if tgt.get("sign") is not None:
            self.settle(values, "sign", lambda: self.boolean(tgt["sign"], f"{tkey}.sign"))
        if values.get("sign") and tgt.get("encrypt_to") is None:
            self.note(self.fail(f"{tkey}.sign", "signs an encrypted export: set encrypt_to too"))
        path = tgt.get("path")
        named = isinstance(path, str) and path.lower().endswith(ENCRYPTED_SUFFIXES)
        if named and tgt.get("encrypt_to") is None:
            self.note(
                self.fail(
                    f"{tkey}.encrypt_to",
                    "required when the target's name ends in .pgp, .gpg or .asc: the "
                    "fingerprint of the partner's key (or name the file without it)",
                )
            )
        return values

    def pgp_needed(self, jobs: dict[str, JobConfig]) -> None:
        """Without a top-level pgp, no job may decrypt or encrypt."""
        for name, job in jobs.items():
            source, target = job.source, job.target
            if source is not None and (
                source.decrypt or (source.path or "").lower().endswith(ENCRYPTED_SUFFIXES)
            ):
                where = "decrypt" if source.decrypt else "path"
                self.note(
                    self.fail(
                        f"jobs.{name}.source.{where}",
                        "decrypting needs the top-level `pgp` (home: the GnuPG folder with "
                        "the secret key)",
                    )
                )
            if target is not None and target.encrypt_to:
                self.note(
                    self.fail(
                        f"jobs.{name}.target.encrypt_to",
                        "encrypting needs the top-level `pgp` (home: the GnuPG folder with "
                        "the partner's public key)",
                    )
                )


def gnupg_installed() -> bool:
    """Whether python-gnupg can be imported, found without importing it (only a run that
    decrypts or encrypts loads it)."""
    import importlib.util

    try:
        return importlib.util.find_spec("gnupg") is not None
    except (ImportError, ValueError):  # a finder that refuses it, a half-removed module
        return False
