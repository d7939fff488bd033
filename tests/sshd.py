"""A real OpenSSH sshd for tests: a free loopback port, generated keys, its own config.

    with Sshd(tmp_path) as server:
        server.known_hosts      # a known_hosts file trusting this server
        server.user_key         # an ed25519 key in the throwaway authorized_keys
        server.server_config()  # a campaign_sync ServerConfig for it

Works as root (the account logged into is root, keys only) and as an ordinary user (sshd
then serves only that user). Needs /usr/sbin/sshd and ssh-keygen (Debian: openssh-server).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

SSHD = shutil.which("sshd", path="/usr/sbin:/usr/local/sbin:/sbin:" + os.environ.get("PATH", ""))
KEYGEN = shutil.which("ssh-keygen")


def available() -> bool:
    return bool(SSHD and KEYGEN)


def keygen(path: Path, kind: str = "ed25519", passphrase: str = "") -> Path:
    """A new key pair at `path` and `path`.pub."""
    args = [KEYGEN, "-q", "-t", kind, "-N", passphrase, "-C", "campaign-sync-test", "-f", path]
    if kind == "rsa":
        args[4:4] = ["-b", "2048"]
    subprocess.run([str(a) for a in args], check=True, stdin=subprocess.DEVNULL)
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _children(pid: int) -> list[int]:
    """Direct children of `pid`, read from /proc (no psutil needed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The ppid is the second field after the parenthesised command name.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


class Sshd:
    """One sshd process; `extra` lines are appended to its sshd_config."""

    def __init__(
        self,
        directory: Path,
        *,
        extra: str = "",
        host_key_types=("ed25519",),
        host: str = "127.0.0.1",
        prefix: list[str] | None = None,
    ):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.extra = extra
        self.user = getpass.getuser()
        self.host = host
        # Runs sshd through this, e.g. `ip netns exec NAME` (tests/netns.py): the listening
        # address may then be out of this process's reach, and readiness is read off the log.
        self.prefix = list(prefix or [])
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.host_keys = [keygen(self.dir / f"host_{t}", t) for t in host_key_types]
        self.user_key = keygen(self.dir / "user_ed25519")
        self.authorized_keys = self.dir / "authorized_keys"
        self.authorize(self.user_key)
        self.known_hosts = self.dir / "known_hosts"
        self.config_file = self.dir / "sshd_config"
        self.log_file = self.dir / "sshd.log"

    def authorize(self, key: Path) -> None:
        with open(self.authorized_keys, "a") as out:
            out.write(Path(f"{key}.pub").read_text())
        self.authorized_keys.chmod(0o600)

    def _write_config(self) -> None:
        lines = [
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            *(f"HostKey {key}" for key in self.host_keys),
            f"PidFile {self.dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "StrictModes no",  # the temporary directory may be group- or world-writable
            "UsePAM no",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication yes",  # every password fails, but the method is offered
            "KbdInteractiveAuthentication no",
            "MaxStartups 100",
            "LogLevel VERBOSE",
            "Subsystem sftp internal-sftp",
            self.extra,
        ]
        self.config_file.write_text("\n".join(lines) + "\n")

    def start(self) -> Sshd:
        if not available():
            raise RuntimeError("OpenSSH sshd/ssh-keygen not installed (apt install openssh-server)")
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        for _ in range(5):  # another process may grab the port between probe and bind
            self.port = _free_port()
            self._write_config()
            logged = self.log_file.stat().st_size if self.log_file.exists() else 0
            self.process = subprocess.Popen(
                [*self.prefix, SSHD, "-D", "-e", "-f", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=open(self.log_file, "ab"),  # noqa: SIM115 - owned by the child
            )
            if self._wait_ready(logged):
                self._write_known_hosts()
                return self
            self.stop()
        raise RuntimeError(f"sshd did not start; see {self.log_file}:\n{self.log()}")

    def _wait_ready(self, logged: int, seconds: float = 10.0) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            if self.prefix:
                if "Server listening on" in self.log()[logged:]:
                    return True
                time.sleep(0.05)
                continue
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as sock:
                    if sock.recv(64).startswith(b"SSH-"):
                        return True
            except OSError:
                time.sleep(0.05)
        return False

    def _write_known_hosts(self) -> None:
        with open(self.known_hosts, "w") as out:
            for key in self.host_keys:
                kind, blob = Path(f"{key}.pub").read_text().split()[:2]
                out.write(f"[{self.host}]:{self.port} {kind} {blob}\n")

    def fingerprint(self, index: int = 0) -> str:
        out = subprocess.run(
            [KEYGEN, "-l", "-E", "sha256", "-f", f"{self.host_keys[index]}.pub"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return out.split()[1]

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    # -- sessions: what the tests kill and freeze ------------------------------------------

    def session_pids(self) -> list[int]:
        """Every process serving a connection: per-connection sshd processes and their commands."""
        if self.process is None:
            return []
        pending, found = _children(self.process.pid), []
        while pending:
            pid = pending.pop()
            found.append(pid)
            pending.extend(_children(pid))
        return found

    def signal_sessions(self, signum: int) -> list[int]:
        pids = self.session_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        return pids

    def kill_sessions(self) -> list[int]:
        return self.signal_sessions(signal.SIGKILL)

    def stop(self) -> None:
        if self.process is None:
            return
        # Frozen sessions must be woken and killed too, or they outlive the test run.
        self.signal_sessions(signal.SIGKILL)
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def __enter__(self) -> Sshd:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def server_config(self, **overrides):  # type: ignore[no-untyped-def]
        """A campaign_sync ServerConfig for this server (key auth, known_hosts trusted)."""
        from campaign_sync.config.model import ServerConfig

        values = dict(
            name="test",
            type="ssh",
            host=self.host,
            port=self.port,
            user=self.user,
            key_file=self.user_key,
            known_hosts=self.known_hosts,
            protocol="scp",
            timeout=5.0,
            retries=0,
        )
        values.update(overrides)
        return ServerConfig(**values)
