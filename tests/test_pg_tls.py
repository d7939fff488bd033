"""A PostgreSQL store over verified TLS, set up the way libpq users already do it.

A server of its own for this module requires TLS (pg_hba `hostssl` only), with a certificate
for 127.0.0.1 signed by a test CA. campaign-sync connects with `sslmode=verify-full` and
libpq's own settings: PGSSLROOTCERT names the CA, a service file (PGSERVICEFILE) can carry the
whole connection, PGPASSFILE the password. A wrong CA, a host name the certificate does not
name, and a connection without TLS are each one line and exit 2, with the store unchanged.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SAMPLE, Workspace
from pgfixtures import PgSchema, _as_user
from pgserver import APP_ROLE, DATABASE, SUPERUSER, PgServer


def _key() -> object:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: object) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _certificate(subject: str, key: object, issuer: str, signer: object, *, ca: bool) -> bytes:
    """A PEM certificate for `subject`; a server certificate names 127.0.0.1 only."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        builder = builder.add_extension(san, critical=False)
    certificate = builder.sign(signer, hashes.SHA256())  # type: ignore[arg-type]
    return certificate.public_bytes(serialization.Encoding.PEM)


class Pki:
    """A CA that signed the server's certificate, and an unrelated CA."""

    def __init__(self, folder: Path) -> None:
        ca_key, other_key, self.server_key = _key(), _key(), _key()
        self.server_cert = _certificate(
            "campaign-sync test server", self.server_key, "test CA", ca_key, ca=False
        )
        self.ca = folder / "ca.crt"
        self.ca.write_bytes(_certificate("test CA", ca_key, "test CA", ca_key, ca=True))
        self.other_ca = folder / "other-ca.crt"
        self.other_ca.write_bytes(
            _certificate("other CA", other_key, "other CA", other_key, ca=True)
        )


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PgServer, Pki]]:
    pki = Pki(tmp_path_factory.mktemp("pki"))
    server = PgServer().start()
    try:
        server.require_tls(pki.server_cert, _pem_key(pki.server_key))
        yield server, pki
    finally:
        server.stop()


@pytest.fixture
def tls_ws(tmp_path: Path, tls_server: tuple[PgServer, Pki]) -> Workspace:
    server, _pki = tls_server
    name = f"tls_{tmp_path.name[-20:]}".replace("-", "_").lower()
    server.psql(f'CREATE SCHEMA "{name}" AUTHORIZATION {APP_ROLE};')
    # The test's own back door: TLS unverified, the password in the URL (the test process's
    # PGPASSFILE is the suite server's).
    host = server.url().split("@", 1)[1]
    admin = f"postgresql://{SUPERUSER}:{server.password(SUPERUSER)}@{host}?sslmode=require"
    pg = PgSchema(name=name, url=_as_user(server.url(), APP_ROLE), admin_url=admin)
    ws = Workspace(tmp_path, "postgres", pg)
    ws.inbox.mkdir()
    ws.write_config()
    return ws


def _use(ws: Workspace, store: str) -> None:
    assert ws.pg is not None
    text = ws.config.read_text().replace(f"store: {ws.pg.url}", f"store: {store}", 1)
    ws.config.write_text(text)


def _env(server: PgServer, **extra: str) -> dict[str, str]:
    env = server.env()
    env.update(extra)
    return env


def _import(ws: Workspace, env: dict[str, str]) -> tuple[int, str, str]:
    ws.drop("/import/newsletter_20261101.csv", SAMPLE)
    done = ws.run("--json", "import", "newsletter-import", "--date", "2026-11-01", env=env)
    return done.returncode, done.stdout, done.stderr


def test_verify_full_with_the_ca_in_pgsslrootcert_imports(
    tls_ws: Workspace, tls_server: tuple[PgServer, Pki]
) -> None:
    server, pki = tls_server
    url = f"postgresql://{APP_ROLE}@127.0.0.1:{server.port}/{DATABASE}?sslmode=verify-full"
    _use(tls_ws, url)
    code, stdout, stderr = _import(tls_ws, _env(server, PGSSLROOTCERT=str(pki.ca)))
    assert (code, stderr) == (0, ""), stderr
    assert json.loads(stdout)["counts"]["inserted"] == 3
    assert len(tls_ws.recipients()) == 3


def test_a_service_file_carries_the_whole_connection(
    tls_ws: Workspace, tls_server: tuple[PgServer, Pki], tmp_path: Path
) -> None:
    server, pki = tls_server
    services = tmp_path / "pg_service.conf"
    services.write_text(
        "[campaign]\n"
        f"host=127.0.0.1\nport={server.port}\ndbname={DATABASE}\nuser={APP_ROLE}\n"
        f"sslmode=verify-full\nsslrootcert={pki.ca}\n"
    )
    _use(tls_ws, "postgresql://?service=campaign")  # as docs/postgresql.md writes it
    code, stdout, stderr = _import(tls_ws, _env(server, PGSERVICEFILE=str(services)))
    assert (code, stderr) == (0, ""), stderr
    assert json.loads(stdout)["counts"]["inserted"] == 3
    listed = tls_ws.run("--json", "list-jobs", env=_env(server, PGSERVICEFILE=str(services)))
    assert listed.returncode == 0, listed.stderr
    jobs = {job["name"]: job for job in json.loads(listed.stdout)}
    assert jobs["newsletter-import"]["last_run"]["status"] == "succeeded"


@pytest.mark.parametrize("case", ["unknown CA", "host name not in the certificate", "no TLS"])
def test_a_connection_that_is_not_verified_tls_is_refused_in_one_line(
    tls_ws: Workspace, tls_server: tuple[PgServer, Pki], case: str
) -> None:
    server, pki = tls_server
    port = server.port
    host, mode, ca = {
        "unknown CA": ("127.0.0.1", "verify-full", pki.other_ca),
        # The certificate names 127.0.0.1 only: "localhost" is not its name.
        "host name not in the certificate": ("localhost", "verify-full", pki.ca),
        "no TLS": ("127.0.0.1", "disable", pki.ca),
    }[case]
    url = f"postgresql://{APP_ROLE}@{host}:{port}/{DATABASE}?sslmode={mode}"
    _use(tls_ws, url)
    before = tls_ws.dump()
    code, stdout, stderr = _import(tls_ws, _env(server, PGSSLROOTCERT=str(ca)))
    shown = f"postgresql://{APP_ROLE}@{host}:{port}/{DATABASE}"  # settings are never shown
    reason = {
        "unknown CA": (
            f"the TLS connection to {host}:{port} failed; check sslmode in `store` and the "
            "server certificate (PGSSLROOTCERT)"
        ),
        "host name not in the certificate": (
            f"the TLS connection to {host}:{port} failed; check sslmode in `store` and the "
            "server certificate (PGSSLROOTCERT)"
        ),
        "no TLS": (
            f"the server does not accept user '{APP_ROLE}' from this host; allow it in the "
            "server's pg_hba.conf"
        ),
    }[case]
    error = f"cannot connect to the store {shown}: {reason}"
    assert (code, stderr) == (2, f"campaign-sync: error: {error}\n")
    assert json.loads(stdout) == {"error": error, "exit_code": 2}
    assert tls_ws.dump() == before
