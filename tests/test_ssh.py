"""SshTransfer against a real OpenSSH sshd on loopback (tests/sshd.py starts it).

Each test uses its own remote directory under pytest's tmp_path; sshd runs as the same user,
so "remote" files are checked directly on disk. Retries never really sleep: the transfer's
`sleep` is replaced by a recorder, which also lets the tests check the backoff.
"""

from __future__ import annotations

import os
import posixpath
import pwd
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sshd as sshd_helper  # noqa: E402
from sshd import Sshd, keygen  # noqa: E402

from campaign_sync.errors import HostKeyError, SourceMissing, TransferError  # noqa: E402
from campaign_sync.transfer.hostkeys import _names_match, fingerprint  # noqa: E402
from campaign_sync.transfer.progress import transfer_progress  # noqa: E402
from campaign_sync.transfer.ssh.session import AuthenticationFailed, remote_arg  # noqa: E402
from campaign_sync.transfer.ssh.transfer import SshTransfer  # noqa: E402

pytestmark = [
    pytest.mark.skipif(not sshd_helper.available(), reason="OpenSSH sshd not installed"),
    # paramiko's SFTP prefetch thread dies noisily when a test kills the connection under
    # it; the transfer itself reports the failure, which is what the tests check.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning"),
]

PROTOCOLS = ["scp", "sftp"]
HOSTILE_NAMES = [
    "with space.csv",
    'quote\'s "double".csv',
    "semi;colon && echo x.csv",
    "$(touch PWNED)`touch PWNED2`.csv",
    "-leading-dash.csv",
    "new\nline.csv",
    "star*?[ab].csv",
    "ümlaut ✓.csv",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with Sshd(tmp_path_factory.mktemp("sshd"), host_key_types=("ed25519", "ecdsa")) as running:
        yield running


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    directory = tmp_path / "remote"
    directory.mkdir()
    return directory


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def connect(config) -> tuple[SshTransfer, Sleeps]:  # type: ignore[no-untyped-def]
    transfer = SshTransfer(config)
    sleeps = Sleeps()
    transfer.sleep = sleeps
    return transfer, sleeps


def staging_file(tmp_path: Path) -> Path:
    dest = tmp_path / f"staging-{uuid.uuid4().hex}"
    dest.touch(mode=0o600)
    return dest


def data_file(path: Path, size: int) -> bytes:
    payload = os.urandom(size)
    path.write_bytes(payload)
    return payload


# --------------------------------------------------------------------------- basics


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_upload_size_download_archive_delete(server, remote, tmp_path, protocol):
    local = tmp_path / "local.csv"
    payload = data_file(local, 300_000)
    target = remote / "out" / "export.csv"
    target.parent.mkdir()
    seen: list[tuple[int, int | None]] = []
    transfer, sleeps = connect(server.server_config(protocol=protocol))
    with transfer:
        assert transfer.size(str(target)) is None
        transfer.put(local, str(target), progress=lambda d, t: seen.append((d, t)))
        assert target.read_bytes() == payload
        assert [p.name for p in target.parent.iterdir()] == ["export.csv"]  # no temp left
        assert seen[-1] == (len(payload), len(payload))
        assert transfer.size(str(target)) == len(payload)

        dest = staging_file(tmp_path)
        assert transfer.fetch(str(target), dest) == len(payload)
        assert dest.read_bytes() == payload
        assert dest.stat().st_mode & 0o777 == 0o600  # the server's mode is not applied

        moved = transfer.archive(str(target), str(remote / "done" / "2026"))
        assert moved == str(remote / "done" / "2026" / "export.csv")
        assert not target.exists()
        assert Path(moved).read_bytes() == payload
        transfer.delete(moved)
        assert not Path(moved).exists()
    assert sleeps == []
    transfer.close()  # a second close is harmless


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_upload_replaces_existing_file_atomically_and_non_atomically(
    server, remote, tmp_path, protocol
):
    local = tmp_path / "local.csv"
    target = remote / "export.csv"
    target.write_bytes(b"old contents that are longer than the new ones\n" * 100)
    with SshTransfer(server.server_config(protocol=protocol)) as transfer:
        payload = data_file(local, 1000)
        transfer.put(local, str(target))
        assert target.read_bytes() == payload
        payload = data_file(local, 500)
        transfer.put(local, str(target), atomic=False)
        assert target.read_bytes() == payload
    assert sorted(p.name for p in remote.iterdir()) == ["export.csv"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_missing_file_is_source_missing_and_not_retried(server, remote, tmp_path, protocol):
    dest = staging_file(tmp_path)
    transfer, sleeps = connect(server.server_config(protocol=protocol, retries=3))
    with transfer, pytest.raises(SourceMissing, match="no file .*nothing-here.csv"):
        transfer.fetch(str(remote / "nothing-here.csv"), dest)
    assert sleeps == []
    assert dest.read_bytes() == b""


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_empty_file(server, remote, tmp_path, protocol):
    (remote / "empty.csv").write_bytes(b"")
    dest = staging_file(tmp_path)
    with SshTransfer(server.server_config(protocol=protocol)) as transfer:
        assert transfer.size(str(remote / "empty.csv")) == 0
        assert transfer.fetch(str(remote / "empty.csv"), dest) == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_upload_into_missing_directory_is_a_transfer_error(server, remote, tmp_path, protocol):
    local = tmp_path / "local.csv"
    data_file(local, 10)
    with (
        SshTransfer(server.server_config(protocol=protocol)) as transfer,
        pytest.raises(TransferError) as caught,
    ):
        transfer.put(local, str(remote / "no-such-dir" / "x.csv"))
    assert not isinstance(caught.value, SourceMissing)


# --------------------------------------------------------------------------- file names


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=repr)
def test_hostile_remote_names(server, remote, tmp_path, protocol, name):
    local = tmp_path / "local.csv"
    payload = data_file(local, 5000)
    target = remote / name
    archive_dir = remote / "ar chive;$(touch PWNED3)"
    with SshTransfer(server.server_config(protocol=protocol)) as transfer:
        transfer.put(local, str(target))
        assert target.read_bytes() == payload
        assert transfer.size(str(target)) == len(payload)
        dest = staging_file(tmp_path)
        assert transfer.fetch(str(target), dest) == len(payload)
        assert dest.read_bytes() == payload
        moved = transfer.archive(str(target), str(archive_dir))
        assert Path(moved).read_bytes() == payload
        transfer.delete(moved)
    assert sorted(p.name for p in remote.iterdir()) == [archive_dir.name]
    assert list(archive_dir.iterdir()) == []
    home = Path.home()
    for marker in ("PWNED", "PWNED2", "PWNED3"):
        assert not (home / marker).exists() and not (remote / marker).exists()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_relative_path_with_leading_dash(server, tmp_path, protocol):
    # Relative paths are relative to the login directory; a leading "-" must not become
    # an option of scp, mv or rm.
    name = f"-campaign-sync-test-{uuid.uuid4().hex}.csv"
    home_file = Path.home() / name
    local = tmp_path / "local.csv"
    payload = data_file(local, 100)
    try:
        with SshTransfer(server.server_config(protocol=protocol)) as transfer:
            transfer.put(local, name)
            assert home_file.read_bytes() == payload
            assert transfer.size(name) == 100
            transfer.delete(name)
        assert not home_file.exists()
    finally:
        home_file.unlink(missing_ok=True)


def test_remote_arg_quoting():
    assert remote_arg("/a b/c") == "'/a b/c'"
    assert remote_arg("-x") == "./-x"
    assert remote_arg("~/in box/x.csv") == "~/'in box/x.csv'"
    assert remote_arg("it's") == "'it'\"'\"'s'"


# --------------------------------------------------------------------------- host keys


def test_unknown_host_is_refused_with_fingerprint_and_how_to_trust(server, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    transfer, sleeps = connect(server.server_config(known_hosts=known, retries=3))
    with transfer, pytest.raises(HostKeyError) as caught:
        transfer.size("/tmp")
    message = str(caught.value)
    assert server.fingerprint(0) in message
    assert f"ssh-keyscan -p {server.port} -t ed25519 127.0.0.1 >> {known}" in message
    assert sleeps == []  # never retried


def test_changed_host_key_is_refused(server, tmp_path):
    other = keygen(tmp_path / "other_host_key")
    kind, blob = Path(f"{other}.pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"# comment\n[127.0.0.1]:{server.port} {kind} {blob}\n")
    transfer, sleeps = connect(server.server_config(known_hosts=known, retries=2))
    with transfer, pytest.raises(HostKeyError, match="HAS CHANGED") as caught:
        transfer.size("/tmp")
    assert server.fingerprint(0) in str(caught.value)
    assert "line 2" in str(caught.value)
    assert sleeps == []


def test_key_for_the_same_host_on_another_port_does_not_count(server, tmp_path):
    blob_line = server.known_hosts.read_text().splitlines()[0].split(" ", 1)[1]
    known = tmp_path / "known_hosts"
    known.write_text(f"127.0.0.1 {blob_line}\n[127.0.0.1]:{server.port + 1} {blob_line}\n")
    with (
        SshTransfer(server.server_config(known_hosts=known)) as transfer,
        pytest.raises(HostKeyError, match="unknown"),
    ):
        transfer.size("/tmp")


def test_hashed_known_hosts(server, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(server.known_hosts.read_text())
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(known)], check=True, capture_output=True)
    assert known.read_text().startswith("|1|")
    with SshTransfer(server.server_config(known_hosts=known)) as transfer:
        assert transfer.size("/nonexistent-file") is None


def test_known_ecdsa_key_is_preferred_over_unknown_ed25519(server, tmp_path):
    # known_hosts has only the server's ecdsa key: we must ask for that one.
    ecdsa_line = server.known_hosts.read_text().splitlines()[1]
    assert "ecdsa" in ecdsa_line
    known = tmp_path / "known_hosts"
    known.write_text(ecdsa_line + "\n")
    with SshTransfer(server.server_config(known_hosts=known)) as transfer:
        assert transfer.size("/nonexistent-file") is None


def test_revoked_key_is_refused(server, tmp_path):
    known = tmp_path / "known_hosts"
    lines = server.known_hosts.read_text()
    known.write_text(lines + "@revoked " + lines.splitlines()[0] + "\n")
    with (
        SshTransfer(server.server_config(known_hosts=known)) as transfer,
        pytest.raises(HostKeyError, match="revoked"),
    ):
        transfer.size("/tmp")


def test_pinned_host_key(server, tmp_path):
    pin = server.fingerprint(0)
    with SshTransfer(server.server_config(known_hosts=None, host_key=pin)) as transfer:
        assert transfer.size("/nonexistent-file") is None
    wrong = "SHA256:" + "A" * 43
    with (
        SshTransfer(server.server_config(known_hosts=None, host_key=wrong)) as transfer,
        pytest.raises(HostKeyError, match="pinned") as caught,
    ):
        transfer.size("/tmp")
    assert pin in str(caught.value)


def test_host_patterns():
    assert _names_match("[127.0.0.1]:2222", "[127.0.0.1]:2222")
    assert not _names_match("[127.0.0.1]:2222", "127.0.0.1")
    assert _names_match("*.example.net,!bad.example.net", "up.example.net")
    assert not _names_match("*.example.net,!bad.example.net", "bad.example.net")
    assert _names_match("Upload.Example.NET", "upload.example.net")


def test_fingerprint_matches_ssh_keygen(server):
    blob = Path(f"{server.host_keys[0]}.pub").read_text().split()[1]
    import base64

    assert fingerprint(base64.b64decode(blob)) == server.fingerprint(0)


# --------------------------------------------------------------------------- authentication


def test_wrong_user_key_is_refused_and_not_retried(server, tmp_path):
    stranger = keygen(tmp_path / "stranger")
    transfer, sleeps = connect(server.server_config(key_file=stranger, retries=3))
    with transfer, pytest.raises(AuthenticationFailed, match="authorized_keys"):
        transfer.size("/tmp")
    assert sleeps == []


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa"])
def test_key_types_with_passphrase(server, tmp_path, kind):
    secret = f"pass phrase {kind} !"
    key = keygen(tmp_path / f"user_{kind}", kind, passphrase=secret)
    server.authorize(key)
    with SshTransfer(server.server_config(key_file=key, key_passphrase=secret)) as transfer:
        assert transfer.size("/nonexistent-file") is None
    for wrong in (None, "not the passphrase"):
        with (
            SshTransfer(server.server_config(key_file=key, key_passphrase=wrong)) as transfer,
            pytest.raises(AuthenticationFailed) as caught,
        ):
            transfer.size("/tmp")
        assert secret not in str(caught.value)
        assert "passphrase" in str(caught.value)


def test_password_is_never_in_a_message(server):
    secret = "Hunter2-" + uuid.uuid4().hex
    config = server.server_config(key_file=None, password=secret, retries=1)
    transfer, sleeps = connect(config)
    with transfer, pytest.raises(AuthenticationFailed) as caught:
        transfer.size("/tmp")
    assert secret not in str(caught.value) and secret not in repr(config)
    assert "password" in str(caught.value)
    assert sleeps == []


# --------------------------------------------------------------------------- restricted servers


def _forced(tmp_path: Path, name: str, script: str) -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path


def test_server_refusing_scp_gives_a_clear_error(tmp_path):
    forced = _forced(tmp_path, "sftp-only", 'echo "This account allows SFTP only" >&2\nexit 1\n')
    with Sshd(tmp_path / "sshd", extra=f"ForceCommand {forced}") as server:
        local = tmp_path / "local.csv"
        data_file(local, 10)
        transfer, sleeps = connect(server.server_config(protocol="scp", retries=2))
        with transfer:
            for action in (
                lambda: transfer.fetch("/etc/hostname", staging_file(tmp_path)),
                lambda: transfer.size("/etc/hostname"),
                lambda: transfer.put(local, str(tmp_path / "x.csv")),
            ):
                with pytest.raises(TransferError) as caught:
                    action()
                assert not isinstance(caught.value, SourceMissing)
                assert "SFTP only" in str(caught.value)
                assert "protocol: sftp" in str(caught.value)
        assert sleeps == []


def test_server_that_cannot_rename_says_to_set_atomic_false(tmp_path):
    # Like an scponly/rssh account: scp works, any other command is refused.
    forced = _forced(
        tmp_path,
        "scp-only",
        'case "$SSH_ORIGINAL_COMMAND" in\n'
        '  "scp "*) exec /bin/sh -c "$SSH_ORIGINAL_COMMAND" ;;\n'
        '  *) echo "only scp is allowed here" >&2; exit 1 ;;\n'
        "esac\n",
    )
    remote = tmp_path / "remote"
    remote.mkdir()
    with Sshd(tmp_path / "sshd", extra=f"ForceCommand {forced}") as server:
        local = tmp_path / "local.csv"
        payload = data_file(local, 1000)
        target = remote / "export.csv"
        with SshTransfer(server.server_config(protocol="scp")) as transfer:
            with pytest.raises(TransferError, match="atomic: false") as caught:
                transfer.put(local, str(target))
            assert "only scp is allowed here" in str(caught.value)
            assert not target.exists()
            transfer.put(local, str(target), atomic=False)
        assert target.read_bytes() == payload


# --------------------------------------------------------------------------- failures mid-way


def _once(action):  # type: ignore[no-untyped-def]
    """A progress callback that runs `action` the first time bytes have moved."""
    fired = threading.Event()

    def progress(done: int, total: int | None) -> None:
        if done > 0 and not fired.is_set():
            fired.set()
            action()

    progress.fired = fired  # type: ignore[attr-defined]
    return progress


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_connection_killed_mid_download(server, remote, tmp_path, protocol):
    source = remote / "big.csv"
    payload = data_file(source, 24_000_000)
    dest = staging_file(tmp_path)
    progress = _once(server.kill_sessions)
    transfer, sleeps = connect(server.server_config(protocol=protocol, retries=0))
    with transfer, pytest.raises(TransferError) as caught:
        transfer.fetch(str(source), dest, progress)
    assert progress.fired.is_set()
    assert not isinstance(caught.value, SourceMissing)
    assert dest.stat().st_size == 0  # nothing partial is left to be used

    # With a retry, the second attempt starts over and delivers the whole file.
    progress = _once(server.kill_sessions)
    transfer, sleeps = connect(server.server_config(protocol=protocol, retries=1))
    with transfer:
        assert transfer.fetch(str(source), dest, progress) == len(payload)
    assert dest.read_bytes() == payload
    assert sleeps == [1.0]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_connection_killed_mid_upload_leaves_no_final_file(server, remote, tmp_path, protocol):
    local = tmp_path / "local.csv"
    data_file(local, 24_000_000)
    target = remote / "export.csv"
    progress = _once(server.kill_sessions)
    transfer, sleeps = connect(server.server_config(protocol=protocol, retries=0))
    with transfer, pytest.raises(TransferError):
        transfer.put(local, str(target), progress=progress)
    assert progress.fired.is_set()
    assert not target.exists()


def _stall(server: Sshd, frozen: list[int]):  # type: ignore[no-untyped-def]
    return lambda: frozen.extend(server.signal_sessions(signal.SIGSTOP))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_stalled_download_times_out(server, remote, tmp_path, protocol):
    source = remote / "big.csv"
    data_file(source, 64_000_000)  # more than socket buffers and windows hold
    dest = staging_file(tmp_path)
    frozen: list[int] = []
    progress = _once(_stall(server, frozen))
    transfer, _ = connect(server.server_config(protocol=protocol, timeout=1.0, retries=0))
    start = time.monotonic()
    try:
        with transfer, pytest.raises(TransferError, match="timeout"):
            transfer.fetch(str(source), dest, progress)
        elapsed = time.monotonic() - start
    finally:
        server.kill_sessions()
    assert frozen, "the session was never frozen"
    assert elapsed < 5, f"took {elapsed:.1f}s with timeout 1s"
    assert dest.stat().st_size == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_stalled_upload_times_out(server, remote, tmp_path, protocol):
    local = tmp_path / "local.csv"
    data_file(local, 64_000_000)
    frozen: list[int] = []
    progress = _once(_stall(server, frozen))
    transfer, _ = connect(server.server_config(protocol=protocol, timeout=1.0, retries=0))
    start = time.monotonic()
    try:
        with transfer, pytest.raises(TransferError, match="timeout"):
            transfer.put(local, str(remote / "export.csv"), progress=progress)
        elapsed = time.monotonic() - start
    finally:
        server.kill_sessions()
    assert frozen
    assert elapsed < 5, f"took {elapsed:.1f}s with timeout 1s"
    assert not (remote / "export.csv").exists()


def test_silent_server_times_out_and_is_retried_with_backoff():
    # Accepts TCP connections (the kernel does, via the backlog) but never says a word.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        config = Sshd.__new__(Sshd)  # only for its server_config(): no sshd here
        config.host, config.port, config.user = "127.0.0.1", silent.getsockname()[1], "nobody"
        config.user_key, config.known_hosts = None, Path("/nonexistent/known_hosts")
        transfer, sleeps = connect(config.server_config(timeout=0.5, retries=2))
        start = time.monotonic()
        with transfer, pytest.raises(TransferError, match="gave up after 3 attempts"):
            transfer.size("/x")
        elapsed = time.monotonic() - start
    assert sleeps == [1.0, 2.0]
    assert elapsed < 6, f"three attempts with timeout 0.5s took {elapsed:.1f}s"


def test_connection_refused_is_retried():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = Sshd.__new__(Sshd)
    config.host, config.port, config.user = "127.0.0.1", port, "nobody"
    config.user_key, config.known_hosts = None, Path("/nonexistent/known_hosts")
    transfer, sleeps = connect(config.server_config(retries=1))
    with transfer, pytest.raises(TransferError, match="cannot connect"):
        transfer.size("/x")
    assert sleeps == [1.0]


# --------------------------------------------------------------------------- progress


def test_progress_bar_only_on_a_terminal(tmp_path):
    with open(tmp_path / "log", "w") as not_a_tty, transfer_progress("x", stream=not_a_tty) as p:
        assert p is None
    with transfer_progress("x", enabled=False, stream=sys.__stderr__) as p:
        assert p is None


def test_progress_bar_draws_on_a_terminal():
    primary, secondary = os.openpty()
    with open(secondary, "w") as tty, transfer_progress("upload x.csv", stream=tty) as p:
        assert p is not None
        p(10, 100)
        p(100, 100)
    os.close(primary)


def test_ssh_module_does_not_load_rich():
    code = (
        "import sys, campaign_sync.transfer.ssh.transfer, campaign_sync.transfer.progress; "
        "print('rich' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    assert out.stdout.strip() == "False"


def test_watchdog_closes_a_connection_stuck_where_no_timeout_applies(server):
    # Stands in for paramiko blocked in a socket write (which has no timeout): an operation
    # that waits until the connection dies, giving up by itself only after 15 s.
    transfer, _ = connect(server.server_config(timeout=0.5, retries=0))

    def stuck() -> None:
        transport = transfer._connection()
        deadline = time.monotonic() + 15
        while transport.is_active() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not transport.is_active():
            raise EOFError

    start = time.monotonic()
    with transfer, pytest.raises(TransferError, match="no progress for 2s"):
        transfer._retrying("stuck", stuck)
    assert time.monotonic() - start < 4


def test_watchdog_stays_quiet_while_progress_is_reported(server, remote, tmp_path):
    # A transfer slower than the watchdog limit in total, but never silent, must succeed.
    local = tmp_path / "local.csv"
    payload = data_file(local, 1_000_000)
    # Limit 3 s; the whole upload takes far longer, with progress every 1.2 s. The margins
    # are wide because CI machines are shared and a busy one stalls writes for a moment.
    transfer, _ = connect(server.server_config(timeout=1.0, retries=0))
    started = time.monotonic()
    with transfer:
        transfer.put(local, str(remote / "slow.csv"), progress=lambda d, t: time.sleep(1.2))
    assert time.monotonic() - started > 3.0  # longer than the limit: the watchdog was tested
    assert (remote / "slow.csv").read_bytes() == payload


# --------------------------------------------------------------------------- agent, sftp limits


def test_agent_is_used_only_when_configured(server, tmp_path, monkeypatch):
    agent_socket = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(agent_socket)], stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 5
        while not agent_socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        env = {**os.environ, "SSH_AUTH_SOCK": str(agent_socket)}
        subprocess.run(["ssh-add", "-q", str(server.user_key)], env=env, check=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(agent_socket))
        with SshTransfer(server.server_config(key_file=None, agent=True)) as transfer:
            assert transfer.size("/nonexistent-file") is None
        with (
            SshTransfer(server.server_config(key_file=None, agent=False)) as transfer,
            pytest.raises(AuthenticationFailed),
        ):
            transfer.size("/nonexistent-file")
    finally:
        agent.terminate()
        agent.wait(5)


def test_sftp_request_size_follows_the_server_limits(server):
    with SshTransfer(server.server_config(protocol="sftp")) as transfer:
        transfer.size("/nonexistent-file")
        assert transfer._sftp.request > 32768  # OpenSSH announces limits@openssh.com

    class NoLimits:
        def _request(self, *args):  # type: ignore[no-untyped-def]
            raise OSError("Operation unsupported")

    from campaign_sync.transfer.ssh.sftp import _sftp_request_size

    assert _sftp_request_size(NoLimits()) == 32768  # type: ignore[arg-type]


def test_sftp_download_completes_short_reads(server, remote, tmp_path, monkeypatch):
    # OpenSSH's sftp-server answers reads above ~255 KiB with less than asked: each short
    # reply must be followed up, or bytes go missing.
    import campaign_sync.transfer.ssh.sftp as sftp_module

    monkeypatch.setattr(sftp_module, "_sftp_request_size", lambda client: 1_000_000)
    source = remote / "big.csv"
    payload = data_file(source, 3_500_000)
    dest = staging_file(tmp_path)
    with SshTransfer(server.server_config(protocol="sftp")) as transfer:
        assert transfer.fetch(str(source), dest) == len(payload)
    assert dest.read_bytes() == payload


# --------------------------------------------------------------------------- audit findings


@pytest.mark.parametrize("index", [0, 1])
def test_pin_of_either_host_key_is_accepted(server, tmp_path, index):
    # The server has an ed25519 and an ecdsa key; a pin of either must connect, although
    # the server offers its ed25519 key first.
    pin = server.fingerprint(index)
    with SshTransfer(server.server_config(known_hosts=None, host_key=pin)) as transfer:
        assert transfer.size("/nonexistent-file") is None


def test_wrong_pin_lists_every_key_the_server_offered(server):
    wrong = "SHA256:" + "A" * 43
    transfer, sleeps = connect(server.server_config(known_hosts=None, host_key=wrong, retries=2))
    with transfer, pytest.raises(HostKeyError, match="pinned") as caught:
        transfer.size("/tmp")
    assert server.fingerprint(0) in str(caught.value)
    assert server.fingerprint(1) in str(caught.value)
    assert sleeps == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_upload_onto_a_directory_is_refused(server, remote, tmp_path, protocol):
    local = tmp_path / "local.csv"
    data_file(local, 100)
    target = remote / "a-directory"
    target.mkdir()
    with (
        SshTransfer(server.server_config(protocol=protocol)) as transfer,
        pytest.raises(TransferError, match="is a directory") as caught,
    ):
        transfer.put(local, str(target))
    assert "atomic: false" not in str(caught.value)
    assert ": None" not in str(caught.value)
    assert list(target.iterdir()) == []
    assert sorted(p.name for p in remote.iterdir()) == ["a-directory"]


def test_sftp_refusals_say_what_is_wrong_not_failure(server, remote, tmp_path):
    """OpenSSH's sftp server answers most errors with a bare "Failure"; each case is named."""
    local = tmp_path / "local.csv"
    data_file(local, 100)
    (remote / "a-directory").mkdir()
    where = f"server 'test' ([{server.host}]:{server.port})"
    cases = [
        (
            lambda t: t.fetch(f"{remote}/a-directory", staging_file(tmp_path)),
            f"fetch {remote}/a-directory: it is a directory, not a file",
        ),
        (
            lambda t: t.put(local, f"{remote}/a-directory", atomic=False),
            f"upload {remote}/a-directory: it is a directory; the target's path must name a file",
        ),
        (
            lambda t: t.put(local, f"{remote}/no-folder/x.csv"),
            f"upload {remote}/no-folder/x.csv: there is no folder {remote}/no-folder on the server",
        ),
        (
            lambda t: t.delete(f"{remote}/a-directory"),
            f"delete {remote}/a-directory: it is a directory, not a file",
        ),
    ]
    with SshTransfer(server.server_config(protocol="sftp", retries=0)) as transfer:
        for call, message in cases:
            with pytest.raises(TransferError) as caught:
                call(transfer)
            assert str(caught.value) == f"{where}: {message}"
    assert sorted(p.name for p in remote.iterdir()) == ["a-directory"]
    assert list((remote / "a-directory").iterdir()) == []


@pytest.mark.parametrize("protocol", [*PROTOCOLS, "local"])
def test_archive_never_replaces_an_archived_file(server, remote, tmp_path, protocol):
    done = remote / "done"
    done.mkdir()
    (done / "in.csv").write_bytes(b"archived yesterday\n")
    if protocol == "local":
        from campaign_sync.config.model import ServerConfig
        from campaign_sync.transfer.local import LocalTransfer

        transfer = LocalTransfer(ServerConfig(name="test", type="local", path=str(remote)))
        prefix = ""
    else:
        transfer = SshTransfer(server.server_config(protocol=protocol))
        prefix = str(remote)
    moved = []
    with transfer:
        for day in ("today", "again"):
            (remote / "in.csv").write_bytes(f"{day}\n".encode())
            moved.append(transfer.archive(f"{prefix}/in.csv", f"{prefix}/done"))
    assert (done / "in.csv").read_bytes() == b"archived yesterday\n"
    assert not (remote / "in.csv").exists()
    first, second = (done / posixpath.basename(m) for m in moved)
    assert first != second
    assert first.read_bytes() == b"today\n" and second.read_bytes() == b"again\n"
    assert re.fullmatch(r"in\.\d{8}T\d{6}Z\.csv", first.name), first.name
    assert re.fullmatch(r"in\.\d{8}T\d{6}Z(-\d+)?\.csv", second.name), second.name
    assert all(m.startswith(f"{prefix}/done/") for m in moved)
    assert len(list(done.iterdir())) == 3


def test_server_stalling_in_key_exchange_is_named():
    # Sends its banner, then reads and never answers: stuck in key exchange.
    stop = threading.Event()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(0.2)
        held: list[socket.socket] = []

        def serve() -> None:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
                held.append(conn)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            config = Sshd.__new__(Sshd)
            config.host, config.port, config.user = "127.0.0.1", listener.getsockname()[1], "x"
            config.user_key, config.known_hosts = None, Path("/nonexistent/known_hosts")
            transfer, sleeps = connect(config.server_config(timeout=0.5, retries=1))
            with transfer, pytest.raises(TransferError) as caught:
                transfer.size("/x")
        finally:
            stop.set()
            thread.join()
            for conn in held:
                conn.close()
    message = str(caught.value)
    assert "stopped answering during key exchange" in message, message
    assert "No existing session" not in message
    assert sleeps == [1.0]


def test_hashed_known_hosts_match_the_host_name_in_any_case(server, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(server.known_hosts.read_text().replace("127.0.0.1", "localhost"))
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(known)], check=True, capture_output=True)
    assert known.read_text().startswith("|1|")
    config = server.server_config(known_hosts=known, host="LocalHost")
    with SshTransfer(config) as transfer:
        assert transfer.size("/nonexistent-file") is None


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_path_under_the_login_directory_with_tilde(server, tmp_path, protocol):
    name = f"campaign-sync-test-{uuid.uuid4().hex}.csv"
    home_file = Path(pwd.getpwuid(os.getuid()).pw_dir) / name
    local = tmp_path / "local.csv"
    payload = data_file(local, 100)
    try:
        with SshTransfer(server.server_config(protocol=protocol)) as transfer:
            transfer.put(local, f"~/{name}")
            assert home_file.read_bytes() == payload
            assert transfer.size(f"~/{name}") == 100
            dest = staging_file(tmp_path)
            assert transfer.fetch(f"~/{name}", dest) == 100
            transfer.delete(f"~/{name}")
        assert not home_file.exists()
    finally:
        home_file.unlink(missing_ok=True)
