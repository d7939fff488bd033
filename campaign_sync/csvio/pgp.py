"""OpenPGP with the machine's GnuPG (through python-gnupg, the `pgp` extra): decrypting and
verifying a partner's file, encrypting and signing an export.

Why this shape:

* A signature is only known good once gpg has read the whole file, and gpg writes plaintext
  as it goes. So a file is decrypted in full into a private staging file (0600, in work_dir's
  0700 staging folder, removed after the run), its signature judged from gpg's status lines,
  and only then is the first row read. Nothing of a refused file reaches the store.
* The passphrase goes to gpg on its standard input (`--passphrase-fd 0`, loopback pinentry),
  never on its command line, where `ps` would show it; it is never logged (python-gnupg's
  logger has no handler of ours) and every message passes the config's scrubber.
* gpg's status lines (`--status-fd`) are read, never its human messages: what we report is in
  our words and names keys by fingerprint.
* Keys are pinned by fingerprint in the config: whom to trust is the config's decision, so
  encryption uses gpg's `always` trust model and a good signature needs no web of trust.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.model import PgpConfig
from ..config.validate_pgp import INSTALL_HINT
from ..errors import ConfigError, InputError

# Never a pinentry window or terminal prompt: the passphrase comes from the config or nowhere.
_BASE_ARGS = ["--pinentry-mode", "loopback", "--no-auto-key-retrieve"]
# gpg's error code for a wrong passphrase (the low 16 bits of ERROR … CODE).
_BAD_PASSPHRASE = 11


def _gpg(pgp: PgpConfig) -> Any:
    """A python-gnupg handle on pgp.home; exit 2 with one line when it cannot be had."""
    try:
        import gnupg
    except ImportError:
        raise ConfigError(f"OpenPGP needs the python-gnupg package; {INSTALL_HINT}") from None
    try:
        # latin-1 reads any byte gpg writes; the passphrase is sent as UTF-8 (_passphrase).
        gpg = gnupg.GPG(gnupghome=str(pgp.home), encoding="latin-1")
    except (OSError, ValueError):
        raise ConfigError(
            f"cannot run GnuPG (gpg) with pgp.home {pgp.home}: install it (Debian: apt-get "
            "install gnupg) and check that the folder is a GnuPG home"
        ) from None
    gpg.buffer_size = 1 << 16
    return gpg


def _passphrase(pgp: PgpConfig) -> str | None:
    """The passphrase as python-gnupg writes it: it encodes text as latin-1, so UTF-8 bytes
    are handed over as the latin-1 text that encodes to them."""
    if pgp.passphrase is None:
        return None
    return pgp.passphrase.encode("utf-8").decode("latin-1")


@dataclass
class Status:
    """gpg's status lines, by keyword; the signatures in the order gpg checked them."""

    lines: dict[str, list[str]] = field(default_factory=dict)
    signatures: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def read(cls, stderr: str) -> Status:
        status = cls()
        for line in stderr.splitlines():
            if not line.startswith("[GNUPG:] "):
                continue  # gpg's own words, in its locale: never shown
            keyword, _, value = line[9:].partition(" ")
            status.lines.setdefault(keyword, []).append(value)
            if keyword == "NEWSIG":
                status.signatures.append({})
            elif keyword in _SIGNATURE_WORDS:
                if not status.signatures:
                    status.signatures.append({})
                status.signatures[-1][keyword] = value
        return status

    def has(self, keyword: str) -> bool:
        return keyword in self.lines

    def first(self, keyword: str) -> str:
        return self.lines.get(keyword, [""])[0]


_SIGNATURE_WORDS = (
    "GOODSIG",
    "BADSIG",
    "ERRSIG",
    "VALIDSIG",
    "EXPSIG",
    "EXPKEYSIG",
    "REVKEYSIG",
)


# --------------------------------------------------------------------------- decrypting


@contextmanager
def decrypted(
    source: Path, plain: Path, pgp: PgpConfig, *, label: str, verify: str | None
) -> Iterator[Path]:
    """Decrypt `source` into `plain` (an empty private file of ours) and check its signature
    against `verify`; yields `plain`, removed afterwards, whatever happens."""
    try:
        decrypt(source, plain, pgp, label=label, verify=verify)
        yield plain
    finally:
        plain.unlink(missing_ok=True)


def decrypt(source: Path, plain: Path, pgp: PgpConfig, *, label: str, verify: str | None) -> None:
    gpg = _gpg(pgp)
    with open(plain, "r+b") as out:
        out.truncate(0)

        def write(chunk: bytes) -> bool:
            out.write(chunk)
            return False  # not kept in memory as well

        gpg.on_data = write
        result = gpg.decrypt_file(
            str(source), passphrase=_passphrase(pgp), extra_args=list(_BASE_ARGS)
        )
    failure = getattr(result, "on_data_failure", None)
    if isinstance(failure, OSError):
        raise failure  # a full disk, as the runner reports it
    status = Status.read(result.stderr or "")
    _check_decrypted(status, label, pgp)
    _check_signatures(status, label, verify, gpg)


def _check_decrypted(status: Status, label: str, pgp: PgpConfig) -> None:
    if status.has("NODATA") and not status.has("PLAINTEXT"):
        raise InputError(f"{label}: not an OpenPGP file (no encrypted or signed data found)")
    if _passphrase_refused(status, pgp, done="DECRYPTION_OKAY"):
        raise _passphrase_problem(label, pgp)
    if status.has("BEGIN_DECRYPTION") or status.has("ENC_TO"):
        if status.has("NO_SECKEY") and not status.has("DECRYPTION_OKAY"):
            keys = ", ".join(value.split()[0] for value in status.lines.get("ENC_TO", []))
            raise InputError(
                f"{label}: encrypted for key {keys or '?'}, whose secret key is not in "
                f"pgp.home ({pgp.home}); ask the partner to encrypt to your key, or import it"
            )
        if not status.has("DECRYPTION_OKAY") or status.has("DECRYPTION_FAILED"):
            raise InputError(
                f"{label}: cannot decrypt: the OpenPGP data is damaged or cut off; ask for "
                "the file again"
            )
    elif not status.has("PLAINTEXT"):
        raise InputError(f"{label}: not an OpenPGP file gpg can read; ask for the file again")


def _passphrase_problem(label: str, pgp: PgpConfig) -> InputError:
    if pgp.passphrase is None:
        return InputError(
            f"{label}: the secret key in pgp.home needs a passphrase; set pgp.passphrase"
        )
    return InputError(
        f"{label}: pgp.passphrase does not unlock the secret key in pgp.home; check it"
    )


def _check_signatures(status: Status, label: str, verify: str | None, gpg: Any) -> None:
    """A bad signature fails always; with `verify`, a good one by that key is required."""
    for signature in status.signatures:
        if "BADSIG" in signature:
            signer = _fingerprint_of(gpg, signature["BADSIG"].split()[0])
            raise InputError(
                f"{label}: the signature by {signer} does not match the file (altered after "
                "it was signed); refused, nothing was imported"
            )
    if verify is None:
        return
    seen: list[str] = []
    for signature in status.signatures:
        signer, problem = _signer(signature, gpg)
        seen.append(signer)
        if verify not in _valid_keys(signature) | {signer}:
            continue
        if problem is None:
            return
        raise InputError(f"{label}: signed by {signer}, {problem}; refused, nothing was imported")
    if not seen:
        raise InputError(
            f"{label}: the file is not signed; source.verify requires a signature by {verify}; "
            "refused, nothing was imported"
        )
    raise InputError(
        f"{label}: signed by {', '.join(seen)}, not by {verify} (source.verify); refused, "
        "nothing was imported"
    )


def _valid_keys(signature: dict[str, str]) -> set[str]:
    """The signing key and its primary key, when gpg found the signature valid."""
    fields = signature.get("VALIDSIG", "").split()
    return {fields[0], fields[-1]} if len(fields) >= 10 else set()


def _signer(signature: dict[str, str], gpg: Any) -> tuple[str, str | None]:
    """Who made a signature (a fingerprint where gpg gives one) and what is wrong with it."""
    fields = signature.get("VALIDSIG", "").split()
    if "ERRSIG" in signature:
        parts = signature["ERRSIG"].split()
        who = parts[6] if len(parts) >= 7 and parts[6] != "-" else f"key ID {parts[0]}"
        return who, "whose public key is not in pgp.home"
    if len(fields) >= 10:
        who = fields[-1]
    else:
        words = ("EXPKEYSIG", "REVKEYSIG", "EXPSIG", "GOODSIG")
        key = next((signature[w] for w in words if w in signature), "?")
        who = _fingerprint_of(gpg, key.split()[0])
    if "EXPKEYSIG" in signature:
        return who, "whose key has expired"
    if "REVKEYSIG" in signature:
        return who, "whose key was revoked"
    if "EXPSIG" in signature:
        return who, "a signature that has expired"
    return who, None


def _fingerprint_of(gpg: Any, key_id: str) -> str:
    """The fingerprint of a key ID in the keyring, or the key ID itself."""
    try:
        keys = gpg.list_keys(keys=[key_id])
    except (OSError, ValueError):
        keys = []
    return str(keys[0]["fingerprint"]) if keys else f"key ID {key_id}"


# --------------------------------------------------------------------------- encrypting


def encrypt(
    plain: Path, out: Path, pgp: PgpConfig, *, to: str, sign: bool, armor: bool, label: str
) -> None:
    """Encrypt `plain` for the key `to` (signed with the keyring's own key when `sign`) into
    `out`, an empty private file of ours."""
    gpg = _gpg(pgp)
    with open(out, "r+b") as sink:
        sink.truncate(0)

        def write(chunk: bytes) -> bool:
            sink.write(chunk)
            return False

        gpg.on_data = write
        result = gpg.encrypt_file(
            str(plain),
            recipients=[to],
            sign=True if sign else None,
            always_trust=True,
            passphrase=_passphrase(pgp) if sign else None,
            armor=armor,
            extra_args=list(_BASE_ARGS),
        )
    failure = getattr(result, "on_data_failure", None)
    if isinstance(failure, OSError):
        raise failure
    status = Status.read(result.stderr or "")
    if status.has("INV_RECP") or not status.has("KEY_CONSIDERED"):
        raise InputError(
            f"{label}: target.encrypt_to {to} is no usable public key in pgp.home "
            f"({pgp.home}); import the partner's key: gpg --homedir {pgp.home} --import KEY"
        )
    if sign and _passphrase_refused(status, pgp, done="SIG_CREATED"):
        raise _passphrase_problem(label, pgp)
    if sign and (status.has("INV_SGNR") or not status.has("SIG_CREATED")):
        raise InputError(
            f"{label}: cannot sign (target.sign): pgp.home ({pgp.home}) has no usable secret "
            "key, or pgp.passphrase does not unlock it"
        )
    if not status.has("END_ENCRYPTION") or result.returncode != 0:
        raise InputError(f"{label}: gpg could not encrypt the export to {to}")


def _passphrase_refused(status: Status, pgp: PgpConfig, *, done: str) -> bool:
    """Whether the secret key stayed locked: a wrong passphrase, or none where one is needed
    (gpg asked for it and the step `done` never came)."""
    if status.has("BAD_PASSPHRASE") or status.has("MISSING_PASSPHRASE"):
        return True
    said = status.lines.get("ERROR", []) + status.lines.get("FAILURE", [])
    codes = [line.rsplit(" ", 1)[-1] for line in said]
    if any(code.isdigit() and int(code) & 0xFFFF == _BAD_PASSPHRASE for code in codes):
        return True
    return pgp.passphrase is None and status.has("NEED_PASSPHRASE") and not status.has(done)


def private_sibling(path: Path, suffix: str) -> Path:
    """A new empty 0600 file beside `path` (in the same private staging folder)."""
    import tempfile

    fd, name = tempfile.mkstemp(prefix=f"{path.name}-", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(name)
