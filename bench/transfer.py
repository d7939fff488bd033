"""Throughput of campaign-sync's SshTransfer against OpenSSH's scp, directly and through a
jump host.

    PYTHONPATH=. python bench/transfer.py [--size-mb 200] [--runs 3] [--dir DIR]

Starts two throwaway sshd on loopback (tests/sshd.py), the partner's and a bastion, writes a
file of random bytes, then downloads and uploads it with OpenSSH `scp` (its default SFTP
mode and legacy `-O` mode) and with SshTransfer (protocol scp and sftp), in turns: first
straight to the partner's sshd, then through the bastion (`scp -J`; a `jump` server for
campaign-sync). It prints the median MB/s of each and the ratio to OpenSSH's scp on the same
path. A benchmark, not a test: nothing here fails on a slow result.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from sshd import Sshd  # noqa: E402

from campaign_sync.config.model import ServerConfig  # noqa: E402
from campaign_sync.transfer.ssh.transfer import SshTransfer  # noqa: E402

MB = 1_000_000


def make_file(path: Path, size: int) -> None:
    # Random bytes: nothing on the way can compress them into a flattering figure.
    with open(path, "wb") as out:
        left = size
        while left:
            block = os.urandom(min(left, 8 << 20))
            out.write(block)
            left -= len(block)


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def openssh_scp(server: Sshd, legacy: bool) -> Callable[[str, str], None]:
    base = [
        "scp",
        "-q",
        "-B",
        "-P",
        str(server.port),
        "-i",
        str(server.user_key),
        "-o",
        f"UserKnownHostsFile={server.known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
    ] + (["-O"] if legacy else [])

    def run(source: str, target: str) -> None:
        subprocess.run([*base, source, target], check=True)

    return run


def ssh_config(path: Path, hosts: dict[str, Sshd]) -> Path:
    """An ssh_config naming each server: `-J` takes its jump host's settings only from here."""
    blocks = [
        f"Host {alias}\n  HostName {server.host}\n  Port {server.port}\n  User {server.user}\n"
        f"  IdentityFile {server.user_key}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {server.known_hosts}\n  StrictHostKeyChecking yes\n"
        for alias, server in hosts.items()
    ]
    path.write_text("".join(blocks))
    return path


def openssh_scp_jump(config: Path, legacy: bool) -> Callable[[str, str], None]:
    """OpenSSH's scp to `partner` through `bastion`, as `scp -J` runs it (ssh -W on the hop)."""
    base = ["scp", "-q", "-B", "-F", str(config), "-J", "bastion"] + (["-O"] if legacy else [])

    def run(source: str, target: str) -> None:
        subprocess.run([*base, source, target], check=True)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the files")
    args = parser.parse_args()
    size = args.size_mb * MB

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        source = work / "source.bin"
        make_file(source, size)
        landing = work / "landing.bin"
        remote_copy = work / "remote-copy.bin"
        results: dict[str, list[float]] = {}

        with Sshd(work / "sshd") as server, Sshd(work / "bastion") as bastion:
            remote = f"{server.user}@{server.host}"
            config = ssh_config(work / "ssh_config", {"bastion": bastion, "partner": server})
            hop = bastion.server_config(name="bastion", timeout=30.0)

            def add(name: str, seconds: float) -> None:
                results.setdefault(name, []).append(size / MB / seconds)

            def openssh(label: str, scp: Callable[[str, str], None], host: str) -> None:
                landing.unlink(missing_ok=True)
                add(f"{label} download", timed(lambda: scp(f"{host}:{source}", str(landing))))
                add(f"{label} upload", timed(lambda: scp(str(source), f"{host}:{remote_copy}")))

            def ours(label: str, settings: ServerConfig) -> None:
                with SshTransfer(settings) as transfer:
                    transfer.size(str(source))  # connect outside the timing, as scp's own
                    landing.write_bytes(b"")
                    landing.chmod(0o600)
                    add(f"{label} download", timed(lambda: transfer.fetch(str(source), landing)))
                    add(f"{label} upload", timed(lambda: transfer.put(source, str(remote_copy))))
                if landing.stat().st_size != size or remote_copy.stat().st_size != size:
                    raise SystemExit("a transfer produced the wrong size")

            for _ in range(args.runs):
                for label, legacy in (("OpenSSH scp", False), ("OpenSSH scp -O", True)):
                    openssh(label, openssh_scp(server, legacy), remote)
                    openssh(f"{label} -J", openssh_scp_jump(config, legacy), "partner")
                for protocol in ("scp", "sftp"):
                    direct = server.server_config(protocol=protocol, timeout=30.0)
                    ours(f"campaign-sync {protocol}", direct)
                    ours(f"campaign-sync {protocol} jump", replace(direct, jump=hop))

        medians = {name: statistics.median(values) for name, values in results.items()}
        print(f"{args.size_mb} MB, median of {args.runs} runs, loopback, MB/s (1 MB = 10^6 B)")
        for name, value in medians.items():
            runs = ", ".join(f"{v:.0f}" for v in results[name])
            print(f"  {name:34s} {value:7.1f}   ({runs})")
        for path, jump in (("direct", ""), ("through a jump host", " -J")):
            print(f"  ratios, {path}:")
            for direction in ("download", "upload"):
                for protocol in ("scp", "sftp"):
                    mine = medians[f"campaign-sync {protocol}{' jump' if jump else ''} {direction}"]
                    for ref in ("OpenSSH scp", "OpenSSH scp -O"):
                        ratio = mine / medians[f"{ref}{jump} {direction}"]
                        print(
                            f"    {direction}: campaign-sync {protocol} / {ref + jump:18s} "
                            f"{ratio:.2f}x"
                        )


if __name__ == "__main__":
    main()
