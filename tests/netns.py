"""Network namespaces in a row, for servers the test process cannot reach directly.

    with Hops(2) as net:          # this process -- hop 1 -- hop 2
        net.address(1)            # hop 1's address, reachable from here
        net.address(2)            # hop 2's address: reachable from hop 1 only
        net.prefix(2)             # argv prefix that runs a command inside hop 2

Hop k is a namespace of its own (`ip netns add`), joined to hop k-1 by a veth pair on a /30
of its own. No hop forwards packets (a new namespace starts with ip_forward off) and this
process has a route to hop 1's link only, so a connection from here to hop 2 fails with
"network unreachable", exactly as a server behind a bastion does. Needs root and iproute2's
`ip`; names carry this process's pid, and everything is removed on exit (deleting a
namespace deletes its end of each veth pair, and with it the pair).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess

IP = shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin:" + os.environ.get("PATH", ""))
# Private space for the links; each run takes a free /24 (several runs may share the machine).
POOL = ipaddress.ip_network("10.200.0.0/16")


def require() -> None:
    """Fail (never skip) when namespaces cannot be made: the jump tests must run in CI."""
    assert IP, "iproute2's `ip` is needed for the jump host tests (apt-get install iproute2)"
    assert os.geteuid() == 0, "the jump host tests make network namespaces: run them as root"


def _ip(*args: str) -> str:
    assert IP is not None
    done = subprocess.run([IP, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of the pool that no address of this machine's namespace lies in."""
    used = []
    for line in _ip("-o", "-4", "addr", "show").splitlines():
        fields = line.split()
        used.append(ipaddress.ip_interface(fields[fields.index("inet") + 1]).network)
    start = os.getpid() % 256  # runs started side by side try different places first
    subnets = list(POOL.subnets(new_prefix=24))
    for subnet in subnets[start:] + subnets[:start]:
        if not any(subnet.overlaps(net) for net in used):
            return subnet
    raise RuntimeError(f"no free /24 left in {POOL}")


_serial = iter(range(100))


class Hops:
    """`count` namespaces in a row behind this process's own."""

    def __init__(self, count: int):
        require()
        self.count = count
        # Interface names have at most 15 characters: pid and serial kept short.
        self._tag = f"{os.getpid() % 10000}{next(_serial)}"
        self.names = [f"cs-jump-{self._tag}-{k}" for k in range(1, count + 1)]
        self._links: list[str] = []
        self._subnet = _free_subnet()

    def _link(self, k: int) -> tuple[str, str]:
        """Hop k's link to hop k-1: (address on the near side, address on hop k)."""
        net = list(self._subnet.subnets(new_prefix=30))[k]
        near, far = list(net.hosts())
        return f"{near}/30", f"{far}/30"

    def address(self, k: int) -> str:
        """Hop k's address on its link towards this process."""
        return self._link(k)[1].split("/")[0]

    def near(self, k: int) -> str:
        """The address of hop k-1 (this process for k = 1) on its link to hop k."""
        return self._link(k)[0].split("/")[0]

    def prefix(self, k: int) -> list[str]:
        assert IP is not None
        return [IP, "netns", "exec", self.names[k - 1]]

    def start(self) -> Hops:
        try:
            for k, name in enumerate(self.names, 1):
                _ip("netns", "add", name)
                _ip("-n", name, "link", "set", "lo", "up")
                self._join(k)
        except BaseException:
            self.stop()
            raise
        return self

    def _join(self, k: int) -> None:
        near_end, far_end = f"csj{self._tag}a{k}", f"csj{self._tag}b{k}"
        near_ns = ["-n", self.names[k - 2]] if k > 1 else []
        far_ns = ["-n", self.names[k - 1]]
        _ip("link", "add", near_end, "type", "veth", "peer", "name", far_end)
        self._links.append(near_end)
        _ip("link", "set", far_end, "netns", self.names[k - 1])
        if k > 1:
            _ip("link", "set", near_end, "netns", self.names[k - 2])
        near, far = self._link(k)
        _ip(*near_ns, "addr", "add", near, "dev", near_end)
        _ip(*far_ns, "addr", "add", far, "dev", far_end)
        _ip(*near_ns, "link", "set", near_end, "up")
        _ip(*far_ns, "link", "set", far_end, "up")

    def stop(self) -> None:
        existing = _ip("netns", "list")
        for name in self.names:
            if name in existing:
                _ip("netns", "delete", name)
        for link in self._links:  # hop 1's pair has its near end here: gone with the far end
            subprocess.run([IP or "ip", "link", "delete", link], capture_output=True)

    def __enter__(self) -> Hops:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
