"""A throwaway PostgreSQL server for the test suite: a temporary cluster on a free loopback port.

    python tests/pgserver.py start     # prints shell exports (tests/run.sh evals them)
    python tests/pgserver.py stop DIR  # DIR: what `start` exported as CAMPAIGN_SYNC_TEST_PG_DIR
    python tests/pgserver.py bindir    # where the server binaries are; exit 1 if nowhere

or, from Python, `server = PgServer().start()` … `server.stop()`.

The cluster is made to catch what production would: fsync on (crash tests kill it with
`restart_immediate()`), password authentication only (SCRAM; no trust, no peer, no Unix socket),
and an ICU en-US default collation where the server has ICU, so a key column that forgets
`COLLATE "C"` sorts differently here, as it would on a production server.

Two login roles: `cs_admin`, the superuser the fixtures use to make and drop schemas, and
`campaign`, an ordinary role such as campaign-sync would run as. Both passwords are generated
and written to a 0600 password file (`PGPASSFILE`), so URLs carry no password and libpq finds
it as it finds ~/.pgpass in production.

PostgreSQL refuses to run as root: as root the cluster belongs to the unprivileged `postgres`
user (the Debian package creates it) and the server binaries run as that user; an ordinary
user runs them as themself.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from sshd import _free_port  # the same loopback probe as the test sshd

SUPERUSER = "cs_admin"
APP_ROLE = "campaign"
DATABASE = "campaign"
HOST = "127.0.0.1"

# Small and durable: the suite runs many short clusters' worth of work on two shared cores.
SETTINGS = {
    "listen_addresses": f"'{HOST}'",
    "unix_socket_directories": "''",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "shared_buffers": "'32MB'",
    "max_connections": "100",
    "password_encryption": "'scram-sha-256'",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "timezone": "'UTC'",
}


def bindir() -> Path | None:
    """The folder with initdb and pg_ctl: pg_config's, else the newest Debian cluster's."""
    candidates = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            found = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            ).stdout.strip()
            candidates.append(Path(found))

    def version(path: str) -> int:
        match = re.search(r"/postgresql/(\d+)/", path)
        return int(match.group(1)) if match else 0

    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    candidates += [Path(path) for path in debian]
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    return None


def _server_user() -> pwd.struct_passwd:
    """Whom the server runs as: `postgres` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise SystemExit(
            "pgserver: PostgreSQL refuses to run as root and there is no `postgres` user; "
            "install the postgresql package (apt-get install postgresql)"
        ) from None


class PgServer:
    """One cluster in its own temporary folder `dir`: data/ (the server's), pgpass (ours)."""

    def __init__(self, directory: Path | None = None, *, port: int | None = None) -> None:
        self.dir = Path(directory) if directory else None
        self.port = port or 0
        self.bin = bindir()

    # -- layout ---------------------------------------------------------------------------
    @property
    def data(self) -> Path:
        assert self.dir is not None
        return self.dir / "data"

    @property
    def passfile(self) -> Path:
        assert self.dir is not None
        return self.dir / "pgpass"

    @property
    def log(self) -> Path:
        return self.data / "server.log"

    def url(self, user: str = SUPERUSER, database: str = DATABASE) -> str:
        """A libpq URL without password (the password file supplies it)."""
        return f"postgresql://{user}@{HOST}:{self.port}/{database}"

    def password(self, user: str = APP_ROLE) -> str:
        """The generated password of `user`, read back from the password file."""
        for line in self.passfile.read_text().splitlines():
            *_, name, password = line.split(":", 4)
            if name == user:
                return password
        raise KeyError(user)

    def env(self) -> dict[str, str]:
        """The variables a client needs: the password file, and no stray PG* settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGPASSFILE"] = str(self.passfile)
        return env

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> PgServer:
        if self.bin is None:
            raise SystemExit(
                "pgserver: no PostgreSQL server binaries (initdb, pg_ctl) found; "
                "install them with: apt-get install postgresql"
            )
        self.dir = Path(tempfile.mkdtemp(prefix="campaign-sync-pg-"))
        self.port = self.port or _free_port()
        owner = _server_user()
        # The server's user must reach data/ through our folder, and nothing else in it.
        self.dir.chmod(0o711)
        self.data.mkdir(mode=0o700)
        os.chown(self.data, owner.pw_uid, owner.pw_gid)
        passwords = {SUPERUSER: secrets.token_urlsafe(18), APP_ROLE: secrets.token_urlsafe(18)}
        try:
            self._write_passfile(passwords)
            self._initdb(passwords[SUPERUSER])
            self._configure()
            self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log))
            self._create_roles(passwords[APP_ROLE])
        except BaseException:
            with contextlib.suppress(BaseException):  # leave no server or folder behind
                self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (fast: roll back open sessions) and remove its folder."""
        if self.dir is None:
            return
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl("stop", "-w", "-m", "fast")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def restart_immediate(self) -> None:
        """Crash-stop and start again: sessions are cut as if the server had died; on start
        the server recovers from its WAL, as after a power cut."""
        self._pg_ctl("restart", "-w", "-t", "60", "-m", "immediate", "-l", str(self.log))

    def require_tls(self, cert_pem: bytes, key_pem: bytes) -> None:
        """Serve TLS with this certificate and refuse every connection without it (hostssl
        only), then restart so the settings hold."""
        owner = _server_user()
        for name, content, mode in (
            ("server.crt", cert_pem, 0o644),
            ("server.key", key_pem, 0o600),
        ):
            path = self.data / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as out:
                out.write(content)
            os.chown(path, owner.pw_uid, owner.pw_gid)
        with (self.data / "postgresql.conf").open("a") as out:
            out.write("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
        (self.data / "pg_hba.conf").write_text(f"hostssl all all {HOST}/32 scram-sha-256\n")
        self._pg_ctl("restart", "-w", "-t", "60", "-m", "fast", "-l", str(self.log))

    # -- steps ----------------------------------------------------------------------------
    def _write_passfile(self, passwords: dict[str, str]) -> None:
        lines = "".join(f"{HOST}:{self.port}:*:{u}:{p}\n" for u, p in passwords.items())
        fd = os.open(self.passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(lines)

    def _as_server(self, *args: str, stdin: str | None = None) -> str:
        """Run a server binary as the server's user; its output, or SystemExit with it."""
        assert self.bin is not None and self.dir is not None
        owner = _server_user()
        run_as = {}
        if os.geteuid() == 0:
            run_as = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}
        env["HOME"] = owner.pw_dir
        done = subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=self.data,
            env=env,
            **run_as,  # type: ignore[arg-type]
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise SystemExit(f"pgserver: {args[0]} failed:\n{done.stdout}{done.stderr}{log}")
        return done.stdout

    def _initdb(self, password: str) -> None:
        # initdb reads the superuser's password from a file the server's user can read.
        pwfile = self.data.parent / "initdb.pw"
        pwfile.write_text(password + "\n")
        os.chown(pwfile, _server_user().pw_uid, -1)
        pwfile.chmod(0o400)
        base = ["initdb", "-D", str(self.data), "-U", SUPERUSER, "--pwfile", str(pwfile)]
        base += ["--auth", "scram-sha-256", "-E", "UTF8", "--locale", "C.UTF-8", "--no-sync"]
        try:
            try:
                self._as_server(*base, "--locale-provider", "icu", "--icu-locale", "en-US")
            except SystemExit:  # a server built without ICU: libc's C.UTF-8 it is
                for entry in self.data.iterdir():
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
                self._as_server(*base)
        finally:
            pwfile.unlink()

    def _configure(self) -> None:
        settings = dict(SETTINGS, port=str(self.port))
        conf = "".join(f"{key} = {value}\n" for key, value in settings.items())
        with (self.data / "postgresql.conf").open("a") as out:
            out.write("\n# campaign-sync test server\n" + conf)
        # TCP from loopback with a password: nothing else gets in.
        (self.data / "pg_hba.conf").write_text(f"host all all {HOST}/32 scram-sha-256\n")

    def _create_roles(self, app_password: str) -> None:
        # The password travels on stdin, not on a command line other users can read.
        script = (
            f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{app_password}';\n"
            f"CREATE DATABASE {DATABASE} OWNER {SUPERUSER};\n"
            f"GRANT CONNECT, TEMPORARY ON DATABASE {DATABASE} TO {APP_ROLE};\n"
        )
        self.psql(script, database="postgres")

    def psql(self, script: str, *, database: str = DATABASE, user: str = SUPERUSER) -> str:
        """Run SQL through psql as `user`; its output (unaligned, tuples only)."""
        assert self.bin is not None
        done = subprocess.run(
            [str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-d", self.url(user, database)],
            input=script,
            capture_output=True,
            text=True,
            env=self.env(),
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"pgserver: psql failed: {done.stderr.strip()}")
        return done.stdout

    def _pg_ctl(self, *args: str) -> None:
        self._as_server("pg_ctl", "-D", str(self.data), *args)


def _shell_exports(server: PgServer) -> str:
    assert server.dir is not None
    exports = {
        "CAMPAIGN_SYNC_TEST_PG": server.url(),
        "CAMPAIGN_SYNC_TEST_PG_DIR": str(server.dir),
        "PGPASSFILE": str(server.passfile),
    }
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in exports.items())


def main(argv: list[str]) -> int:
    if argv == ["bindir"]:  # exit 1 when there are no server binaries (run.sh installs them)
        found = bindir()
        print(found or "", end="\n" if found else "")
        return 0 if found else 1
    if argv[:1] == ["start"] and len(argv) == 1:
        server = PgServer().start()
        sys.stdout.write(_shell_exports(server))
        return 0
    if argv[:1] == ["stop"] and len(argv) == 2:
        server = PgServer(Path(argv[1]))
        if not server.data.is_dir():
            print(f"pgserver: no cluster in {argv[1]}", file=sys.stderr)
            return 1
        server.stop()
        return 0
    print("usage: pgserver.py start | stop DIR | bindir", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
