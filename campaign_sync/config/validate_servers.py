"""Checking `servers` entries and web URLs: hosts, ports, credentials and paths."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

from .checks import (
    Checks,
)
from .model import (
    ServerConfig,
)

SERVER_TYPES = ("ssh", "local")
SERVER_KEYS = (
    "type",
    "path",
    "host",
    "port",
    "user",
    "key_file",
    "key_passphrase",
    "password",
    "known_hosts",
    "host_key",
    "protocol",
    "timeout",
    "retries",
    "agent",
    "jump",
)
SSH_PROTOCOLS = ("scp", "sftp")


class ServerChecks(Checks):
    def server(self, name: str, raw: Any) -> ServerConfig:
        key = f"servers.{name}"
        spec = self.mapping(raw, key, SERVER_KEYS)
        kind = self.string(spec.get("type"), f"{key}.type", choices=SERVER_TYPES)
        if kind == "local":
            extra = sorted(set(spec) - {"type", "path"})
            if extra:
                raise self.fail(f"{key}.{extra[0]}", "not used by a server of type local")
            if "path" not in spec:
                raise self.fail(f"{key}.path", "required for a server of type local")
            return ServerConfig(name=name, type="local", path=self.local_path(spec["path"], key))
        if "path" in spec:
            raise self.fail(f"{key}.path", "only servers of type local have a path")
        if "host" not in spec:
            raise self.fail(f"{key}.host", "required for a server of type ssh")
        key_file = None
        if spec.get("key_file") is not None:
            key_file = self.local_path(spec["key_file"], f"{key}.key_file")
            if not os.access(key_file, os.R_OK):
                self.note(self.fail(f"{key}.key_file", f"cannot read key file {key_file}"))
        known_hosts = None
        if spec.get("known_hosts") is not None:
            known_hosts = self.local_path(spec["known_hosts"], f"{key}.known_hosts")
        host_key = None
        if spec.get("host_key") is not None:
            host_key = self.string(spec["host_key"], f"{key}.host_key")
            if not re.fullmatch(r"SHA256:[A-Za-z0-9+/]{43}=?", host_key):
                self.note(
                    self.fail(
                        f"{key}.host_key",
                        "expected a fingerprint like SHA256:<43 base64 characters>",
                    )
                )
        if known_hosts is None and host_key is None:
            known_hosts = Path("~/.ssh/known_hosts").expanduser()
        return ServerConfig(
            name=name,
            type="ssh",
            host=self.string(spec["host"], f"{key}.host"),
            port=self.attempt(
                lambda: self.integer(spec.get("port", 22), f"{key}.port", minimum=1, maximum=65535)
            ),
            user=self.string(spec["user"], f"{key}.user") if spec.get("user") else None,
            key_file=key_file,
            key_passphrase=self.secret(spec.get("key_passphrase"), f"{key}.key_passphrase"),
            password=self.secret(spec.get("password"), f"{key}.password"),
            known_hosts=known_hosts,
            host_key=host_key,
            protocol=self.attempt(
                lambda: self.string(
                    spec.get("protocol", "scp"), f"{key}.protocol", choices=SSH_PROTOCOLS
                )
            ),
            timeout=self.attempt(lambda: self.timeout(spec.get("timeout", 30), f"{key}.timeout")),
            retries=self.attempt(
                lambda: self.integer(spec.get("retries", 3), f"{key}.retries", maximum=20)
            ),
            agent=self.attempt(lambda: self.boolean(spec.get("agent", False), f"{key}.agent")),
        )

    def jump_hosts(
        self, raw: dict[str, Any], servers: dict[str, ServerConfig]
    ) -> dict[str, ServerConfig]:
        """`servers` with each `jump: NAME` replaced by that server's config, chains included.

        A jump host must be another ssh server, and a chain must end: a server that is its
        own jump host, directly or round a loop, is refused. A jump host that failed its own
        checks is skipped here: that problem is already reported.
        """
        names = {name: self._jump_name(name, spec) for name, spec in raw.items()}
        for name in servers:
            self.attempt(lambda n=name: self._check_jump(n, names, raw))
        resolved: dict[str, ServerConfig] = {}

        def resolve(name: str) -> ServerConfig | None:
            if name not in resolved and name in servers:
                via = names.get(name)
                jump = resolve(via) if via is not None and via in servers else None
                resolved[name] = dataclasses.replace(servers[name], jump=jump)
            return resolved.get(name)

        if self.collected:
            return servers  # something is wrong: no chain is built from a broken config
        return {name: resolve(name) or server for name, server in servers.items()}

    def _jump_name(self, name: str, spec: Any) -> str | None:
        value = spec.get("jump") if isinstance(spec, dict) else None
        if value is None:
            return None
        return self.attempt(lambda: self.string(value, f"servers.{name}.jump"))

    def _check_jump(self, name: str, names: dict[str, str | None], raw: dict[str, Any]) -> None:
        via, key = names.get(name), f"servers.{name}.jump"
        if via is None:
            return
        if via == name:
            raise self.fail(key, "a server cannot be its own jump host; name another ssh server")
        if via not in raw:
            known = ", ".join(sorted(n for n in raw if n != name)) or "none configured"
            raise self.fail(key, f"no server named '{via}' (servers: {known})")
        kind = raw[via].get("type") if isinstance(raw[via], dict) else None
        if kind != "ssh":
            raise self.fail(
                key, f"server '{via}' is not of type ssh; a jump host must be an ssh server"
            )
        chain = [name]
        while via is not None and via in names:
            if via in chain:
                if via == name:  # reported once per server on the loop, at its own key
                    loop = " -> ".join([*chain, via])
                    raise self.fail(
                        key,
                        f"jump hosts go round in a loop ({loop}); end the chain at a "
                        "server without `jump`",
                    )
                return  # the loop is further on: reported at the servers on it
            chain.append(via)
            via = names[via]

    def web_url(self, value: Any, key: str) -> str:
        """An http(s) URL a request can be sent to. Never quoted back: it may hold a password."""
        url = self.string(value, key)
        problem = _url_problem(url)
        if problem:
            raise self.fail(key, f"expected an http:// or https:// URL: {problem}")
        return url


def _url_problem(url: str) -> str | None:
    """What makes url unusable for an HTTP request, in words that quote none of it."""
    import unicodedata
    from urllib.parse import urlsplit

    if any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in url):
        return "it contains a space or a control character"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "it is malformed (check the [ ] around an IPv6 address)"
    if parts.scheme.lower() not in ("http", "https"):
        return "the scheme must be http or https"
    host, port = _split_host_port(parts.netloc.rpartition("@")[2])
    if not host:
        return "it has no host"
    if not _valid_host(host):
        return "the host is not a valid host name or IP address"
    if port and not (re.fullmatch(r"[0-9]{1,5}", port) and 1 <= int(port) <= 65535):
        return "the port must be a number from 1 to 65535"
    return None


def _split_host_port(hostport: str) -> tuple[str, str]:
    """`host:port`, `[v6]:port` → (host, port); port is "" when absent."""
    if hostport.startswith("["):
        end = hostport.find("]")
        host, rest = hostport[: end + 1], hostport[end + 1 :]
        return host, rest[1:] if rest.startswith(":") else rest
    host, _, port = hostport.partition(":")
    return host, port


def _valid_host(host: str) -> bool:
    if host.startswith("["):
        import ipaddress

        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return host.endswith("]")
    # A DNS name (international names too) or an IPv4 address: no other characters.
    return all(ch.isalnum() or ch in "-._" for ch in host) and not host.startswith((".", "-"))


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address (127.0.0.0/8, ::1, also IPv4-mapped)."""
    import ipaddress

    name = host.strip().rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback
