"""Servers behind jump hosts (`servers.NAME.jump`), against three real OpenSSH sshd.

The network is real and the targets really are out of reach (tests/netns.py): this process
reaches `bastion` only, `bastion` reaches `middle` only, `middle` reaches `far` only, and no
namespace forwards packets. So `middle` is one jump away and `far` two (through bastion, then
middle), and a run that reaches them has gone through every hop. Each sshd trusts only its
own key, and each hop has its own known_hosts: every hop logs in and is verified on its own.

Faults are real too: the bastion's session processes are SIGKILLed in the middle of a
transfer (a FaultProxy in front of the bastion counts the bytes and kills at half the file),
and the run either retries to the same result as a clean run or fails with one line, the
store and the remote files as they were.
"""

from __future__ import annotations

import gzip
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Workspace
from faults import Fault, FaultProxy, generate_recipients
from netns import Hops
from sshd import Sshd

from campaign_sync.config.model import ServerConfig
from campaign_sync.errors import SourceMissing
from campaign_sync.transfer.ssh.transfer import SshTransfer

pytestmark = pytest.mark.stores("sqlite", "postgres")

ROWS = 5_000  # about 400 kB: many SSH packets to break in the middle of, yet quick to import
PROTOCOLS = ["scp", "sftp"]
TARGETS = {"one jump": "middle", "two jumps": "far"}  # far: through bastion, then middle


class Net:
    """The three servers in their namespaces, in a row behind this process."""

    def __init__(self, root: Path, hops: Hops):
        self.hops = hops
        self.sshd = {
            name: Sshd(root / name, host=hops.address(k), prefix=hops.prefix(k))
            for k, name in enumerate(("bastion", "middle", "far"), 1)
        }

    def __getitem__(self, name: str) -> Sshd:
        return self.sshd[name]

    def stop(self) -> None:
        for server in self.sshd.values():
            server.stop()


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    with Hops(3) as hops:
        servers = Net(tmp_path_factory.mktemp("jump"), hops)
        try:
            for server in servers.sshd.values():
                server.start()
            yield servers
        finally:
            servers.stop()


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_recipients(tmp_path_factory.mktemp("source") / "list.csv", ROWS, seed=7)


def wait_for(condition: Callable[[], Any], what: str, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


def server_yaml(name: str, server: Sshd, protocol: str, **overrides: Any) -> str:
    values: dict[str, Any] = {
        "type": "ssh",
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "key_file": server.user_key,
        "known_hosts": server.known_hosts,
        "protocol": protocol,
        "timeout": 5,
        "retries": 1,
    }
    values.update(overrides)
    lines = "".join(f"    {key}: {value}\n" for key, value in values.items() if value is not None)
    return f"  {name}:\n{lines}"


def configure(
    ws: Workspace,
    net: Net,
    remote: Path,
    protocol: str,
    target: str,
    *,
    servers: dict[str, dict[str, Any]] | None = None,
) -> None:
    """bastion, middle (through bastion) and far (through middle); jobs on `target`."""
    chain = {"bastion": {}, "middle": {"jump": "bastion"}, "far": {"jump": "middle"}}
    for name, overrides in (servers or {}).items():
        chain[name] = {**chain[name], **overrides}
    blocks = "".join(server_yaml(n, net[n], protocol, **o) for n, o in chain.items())
    ws.write_config(
        text=f"""\
store: store.db
work_dir: var
timezone: Europe/Berlin
servers:
{blocks}jobs:
  partner-import:
    type: recipient-import
    list: newsletter
    source: {{server: {target}, path: "{remote}/in/list.csv.gz", after: archive,
              archive_dir: "{remote}/done"}}
  partner-export:
    type: recipient-export
    list: newsletter
    target: {{server: {target}, path: "{remote}/out/list.csv"}}
    fields: [email, first_name, last_name, city]
"""
    )


def remote_dir(tmp_path: Path) -> Path:
    remote = tmp_path / "remote"
    for folder in ("in", "out", "done"):
        (remote / folder).mkdir(parents=True)
    return remote


def run(ws: Workspace, *args: str) -> tuple[int, dict[str, Any], str]:
    done = ws.run("--json", *args)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout), done.stderr


def recipients(ws: Workspace) -> int:
    return int(ws.query("SELECT count(*) FROM recipients")[0][0])


def store_data(ws: Workspace) -> list[str]:
    """Every row of the store but the run records (a failed run is recorded, as it should)."""
    return [line for line in ws.dump() if not line.startswith('INSERT INTO "runs"')]


def accepted_from(server: Sshd) -> list[str]:
    """The addresses the server's sshd logged a login from."""
    return [
        line.split(" from ")[1].split()[0]
        for line in server.log().splitlines()
        if "Accepted publickey" in line
    ]


# --------------------------------------------------------------------------- the network


def test_the_targets_are_out_of_reach_without_the_jump_hosts(
    ws: Workspace, net: Net, tmp_path: Path
) -> None:
    for name in ("middle", "far"):
        with pytest.raises(OSError):
            socket.create_connection((net[name].host, net[name].port), timeout=5).close()
    with socket.create_connection((net["bastion"].host, net["bastion"].port), timeout=5):
        pass
    remote = remote_dir(tmp_path)
    (remote / "in" / "list.csv.gz").write_bytes(gzip.compress(b"email\na@example.com\n"))

    # Without `jump`, the target cannot be reached: one line saying so.
    configure(ws, net, remote, "sftp", "middle", servers={"middle": {"jump": None}})
    code, result, _ = run(ws, "import", "partner-import")
    assert code == 1
    assert result["error"].startswith(
        f"server 'middle' ([{net['middle'].host}]:{net['middle'].port}): "
    ), result["error"]
    assert "cannot connect" in result["error"], result["error"]

    # The bastion cannot reach `far` either: only `middle` can. A channel the jump host
    # cannot open is named as such (and retried: the target may be down for a moment).
    configure(ws, net, remote, "sftp", "far", servers={"far": {"jump": "bastion"}})
    code, result, _ = run(ws, "import", "partner-import")
    assert code == 1
    assert (
        f"jump host 'bastion' ([{net['bastion'].host}]:{net['bastion'].port}) would not open "
        f"a connection to {net['far'].host}:{net['far'].port}: it could not connect there"
    ) in result["error"], result["error"]
    assert result["error"].endswith("(gave up after 2 attempts)"), result["error"]
    assert ws.recipients() == {}


# --------------------------------------------------------------------------- imports, exports


@pytest.mark.parametrize("hops", TARGETS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_import_and_export_through_jump_hosts(
    ws: Workspace, net: Net, tmp_path: Path, protocol: str, hops: str
) -> None:
    target = TARGETS[hops]
    remote = remote_dir(tmp_path)
    source = remote / "in" / "list.csv.gz"
    source.write_bytes(gzip.compress(b"email,first_name,city\nanna@example.com,Anna,Bonn\n"))
    configure(ws, net, remote, protocol, target)
    logins = len(accepted_from(net[target]))

    code, result, err = run(ws, "import", "partner-import")
    assert code == 0, err
    assert result["counts"]["inserted"] == 1
    assert not source.exists()
    assert (remote / "done" / "list.csv.gz").exists()  # archived on the target, after the commit

    code, result, err = run(ws, "export", "partner-export")
    assert code == 0, err
    assert (remote / "out" / "list.csv").read_text().splitlines() == [
        "email,first_name,last_name,city",
        "anna@example.com,Anna,,Bonn",
    ]
    assert sorted(p.name for p in (remote / "out").iterdir()) == ["list.csv"]

    # The target saw logins from the hop just before it, not from here.
    hop_before = net.hops.near(3 if target == "far" else 2)
    new = accepted_from(net[target])[logins:]
    assert new and set(new) == {hop_before}, new


def hop_config(net: Net, protocol: str) -> ServerConfig:
    """`far` through `middle` through `bastion`, as the config would give it to a transfer."""
    bastion = net["bastion"].server_config(name="bastion", protocol=protocol)
    middle = net["middle"].server_config(name="middle", protocol=protocol, jump=bastion)
    return net["far"].server_config(name="far", protocol=protocol, jump=middle)


def no_sessions(net: Net) -> bool:
    return not any(server.session_pids() for server in net.sshd.values())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_hop_is_closed_when_the_transfer_ends(
    net: Net, tmp_path: Path, protocol: str
) -> None:
    wait_for(lambda: no_sessions(net), "no sessions left by other tests")
    (tmp_path / "file.csv").write_bytes(b"email\n")
    transfer = SshTransfer(hop_config(net, protocol))
    with transfer:
        assert transfer.size(str(tmp_path / "file.csv")) == 6
        hops = transfer.session.hops()
        assert [hop.server.name for hop in hops] == ["bastion", "middle", "far"]
        opened = [hop.transport for hop in hops]
        assert all(t is not None and t.is_active() for t in opened)
        assert all(server.session_pids() for server in net.sshd.values())
    assert [hop.transport for hop in hops] == [None, None, None]
    assert not any(t is not None and t.is_active() for t in opened)
    wait_for(lambda: no_sessions(net), "every sshd session gone after a clean end")

    # Also on failure: a missing file, after all three hops logged in.
    with pytest.raises(SourceMissing), SshTransfer(hop_config(net, protocol)) as transfer:
        transfer.fetch(str(tmp_path / "missing.csv"), tmp_path / "landing")
    wait_for(lambda: no_sessions(net), "every sshd session gone after a failure")


# --------------------------------------------------------------------------- host keys


@pytest.mark.parametrize("unknown", ["bastion", "middle", "far"])
def test_an_unknown_host_key_on_the_way_is_refused_and_nothing_is_imported(
    ws: Workspace, net: Net, tmp_path: Path, unknown: str
) -> None:
    remote = remote_dir(tmp_path)
    source = remote / "in" / "list.csv.gz"
    source.write_bytes(gzip.compress(b"email\nanna@example.com\n"))
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    configure(ws, net, remote, "scp", "far", servers={unknown: {"known_hosts": empty}})
    logins = {name: len(accepted_from(server)) for name, server in net.sshd.items()}

    done = ws.run("import", "partner-import")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    server = net[unknown]
    where = f"[{server.host}]:{server.port}"
    if unknown == "far":  # the target itself: to be scanned from the hop before it
        assert "jump host 'middle'" not in lines[0].split(": host key of")[0]
        assert (
            f"`ssh-keyscan -p {server.port} -t ed25519 {server.host}` run on jump host "
            f"'middle', its output added to {empty}"
        ) in lines[0]
    else:
        assert f"jump host '{unknown}' ({where}): host key of " in lines[0]
    assert f"host key of {where} is unknown (not in {empty}): the server offered " in lines[0]
    assert server.fingerprint() in lines[0]
    assert ws.recipients() == {}
    assert source.exists()
    assert empty.read_text() == ""  # nothing auto-added
    # Not retried, and nothing past the refused hop was logged into.
    after = {name: len(accepted_from(server)) for name, server in net.sshd.items()}
    hops = ["bastion", "middle", "far"]
    refused = hops.index(unknown)
    assert [after[h] - logins[h] for h in hops] == [1] * refused + [0] * (3 - refused)


def test_a_changed_bastion_key_is_refused(ws: Workspace, net: Net, tmp_path: Path) -> None:
    remote = remote_dir(tmp_path)
    (remote / "in" / "list.csv.gz").write_bytes(gzip.compress(b"email\nanna@example.com\n"))
    bastion = net["bastion"]
    other = net["middle"].known_hosts.read_text().split()  # another server's real key
    changed = tmp_path / "changed_known_hosts"
    changed.write_text(f"[{bastion.host}]:{bastion.port} {other[1]} {other[2]}\n")
    configure(ws, net, remote, "sftp", "middle", servers={"bastion": {"known_hosts": changed}})
    code, result, _ = run(ws, "import", "partner-import")
    assert code == 1
    assert "HOST KEY OF" in result["error"] and bastion.fingerprint() in result["error"]
    assert result["error"].count("jump host 'bastion'") == 1, result["error"]
    assert ws.recipients() == {}


# --------------------------------------------------------------------------- faults


class Faulty:
    """The bastion behind a FaultProxy that crashes it at `after` bytes (or `fault`)."""

    def __init__(
        self, net: Net, tmp_path: Path, after: int, direction: str, fault: Fault | None = None
    ):
        self.net = net
        # The bastion crashes: its session processes die, and the bytes it had sent but the
        # client had not yet read die with the connection (without the reset they could
        # still arrive and finish a transfer the kill was meant to break).
        kill = Fault("reset", after, direction, action=net["bastion"].kill_sessions)
        self.proxy = FaultProxy((net["bastion"].host, net["bastion"].port), [fault or kill])
        bastion = net["bastion"]
        # The proxy is another address: trust the bastion's key there (keys are per port).
        self.known_hosts = tmp_path / "bastion_via_proxy"
        key = bastion.known_hosts.read_text().split()[1:3]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.proxy.port} {' '.join(key)}\n")

    def servers(self) -> dict[str, dict[str, Any]]:
        return {
            "bastion": {
                "host": "127.0.0.1",
                "port": self.proxy.port,
                "known_hosts": self.known_hosts,
                # The proxy's reset reaches the client once the client next writes (a
                # keepalive, every timeout / 2 s): a short timeout keeps the test quick.
                "timeout": 2,
            }
        }

    def __enter__(self) -> Faulty:
        self.proxy.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.proxy.stop()


def staging_leftovers(ws: Workspace) -> list[str]:
    folder = ws.root / "var" / "staging"
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# Each protocol once with retries (the retry's result equals a clean run's) and once without
# (one clean failure line), for downloads and uploads alike.
FAULT_CASES = [("scp", 2), ("sftp", 0)]


@pytest.mark.parametrize(("protocol", "retries"), FAULT_CASES)
def test_a_bastion_killed_mid_download(
    ws: Workspace, net: Net, tmp_path: Path, big_csv: Path, protocol: str, retries: int
) -> None:
    remote = remote_dir(tmp_path)
    source = remote / "in" / "list.csv.gz"
    # A first import through the jump host, so that "unchanged" has something to compare.
    source.write_bytes(gzip.compress(b"email,first_name\nanna@example.com,Anna\n"))
    configure(ws, net, remote, protocol, "middle")
    assert run(ws, "import", "partner-import")[0] == 0
    before = store_data(ws)
    data = gzip.compress(big_csv.read_bytes(), compresslevel=1)
    source.write_bytes(data)

    with Faulty(net, tmp_path, len(data) // 2, "down") as faulty:
        servers = {**faulty.servers(), "middle": {"jump": "bastion", "retries": retries}}
        configure(ws, net, remote, protocol, "middle", servers=servers)
        done = ws.run("--json", "import", "partner-import")
        assert faulty.proxy.struck == [0]  # the kill landed in the first connection
    assert "Traceback" not in done.stderr, done.stderr
    result = json.loads(done.stdout)
    if retries:
        assert done.returncode == 0, done.stderr
        assert result["counts"]["inserted"] == ROWS
        assert result["file"]["bytes"] == len(data)
        assert recipients(ws) == ROWS + 1
        assert not source.exists()
    else:
        assert done.returncode == 1, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert result["error"].startswith(
            f"server 'middle' ([{net['middle'].host}]:{net['middle'].port}): fetch "
        ), result["error"]
        assert store_data(ws) == before
        assert source.read_bytes() == data  # neither archived nor touched
        assert ws.query("SELECT status FROM runs ORDER BY id") == [("succeeded",), ("failed",)]
    assert staging_leftovers(ws) == []
    wait_for(lambda: no_sessions(net), "no session left on any hop")


def test_a_bastion_that_stalls_mid_download_times_out_and_the_retry_succeeds(
    ws: Workspace, net: Net, tmp_path: Path, big_csv: Path
) -> None:
    remote = remote_dir(tmp_path)
    source = remote / "in" / "list.csv.gz"
    data = gzip.compress(big_csv.read_bytes(), compresslevel=1)
    source.write_bytes(data)
    stall = Fault("stall", len(data) // 2, "down")
    with Faulty(net, tmp_path, 0, "down", fault=stall) as faulty:
        servers = {**faulty.servers(), "middle": {"jump": "bastion", "timeout": 2}}
        configure(ws, net, remote, "sftp", "middle", servers=servers)
        code, result, err = run(ws, "import", "partner-import")
        assert faulty.proxy.struck == [0]
    assert code == 0, err
    assert result["counts"]["inserted"] == ROWS
    assert not source.exists()
    assert staging_leftovers(ws) == []


OLD = b"email\nold@example.com\n"


@pytest.mark.parametrize(("protocol", "retries"), [(p, 2 - r) for p, r in FAULT_CASES])
def test_a_bastion_killed_mid_upload(
    ws: Workspace, net: Net, tmp_path: Path, big_csv: Path, protocol: str, retries: int
) -> None:
    remote = remote_dir(tmp_path)
    (remote / "in" / "list.csv.gz").write_bytes(gzip.compress(big_csv.read_bytes(), 1))
    configure(ws, net, remote, protocol, "far")
    code, _, err = run(ws, "import", "partner-import")
    assert code == 0, err
    assert run(ws, "export", "partner-export")[0] == 0
    expected = (remote / "out" / "list.csv").read_bytes()
    (remote / "out" / "list.csv").write_bytes(OLD)
    before = store_data(ws)

    with Faulty(net, tmp_path, len(expected) // 2, "up") as faulty:
        servers = {**faulty.servers(), "far": {"jump": "middle", "retries": retries}}
        configure(ws, net, remote, protocol, "far", servers=servers)
        done = ws.run("--json", "export", "partner-export")
        assert faulty.proxy.struck == [0]
    assert "Traceback" not in done.stderr, done.stderr
    if retries:
        assert done.returncode == 0, done.stderr
        assert (remote / "out" / "list.csv").read_bytes() == expected
    else:
        assert done.returncode == 1, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert json.loads(done.stdout)["error"].startswith(
            f"server 'far' ([{net['far'].host}]:{net['far'].port}): upload "
        )
        assert (remote / "out" / "list.csv").read_bytes() == OLD  # the partner's file intact
    assert store_data(ws) == before
    wait_for(lambda: no_sessions(net), "no session left on any hop")
    # Never a partial file under a name a partner would take: a failed run may leave its
    # hidden temporary upload (the server's to clean once the connection died under it).
    visible = [p.name for p in (remote / "out").iterdir() if not p.name.startswith(".")]
    assert visible == ["list.csv"]
