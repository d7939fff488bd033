"""`servers.NAME.jump`: what the validator makes of it, and each mistake named at its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaign_sync import config
from campaign_sync.errors import ConfigError

SERVERS = """\
store: store.db
servers:
  inbox: {type: local, path: inbox}
  bastion: {type: ssh, host: bastion.example.net, user: hop, known_hosts: kh}
  inner: {type: ssh, host: 10.0.0.5, port: 2222, jump: bastion, known_hosts: kh, timeout: 9}
  partner: {type: ssh, host: sftp.partner.lan, jump: inner, protocol: sftp, host_key: %s}
""" % ("SHA256:" + "A" * 43)


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "campaign-sync.yaml").write_text(text, encoding="utf-8")
    return tmp_path / "campaign-sync.yaml"


def test_a_chain_resolves_to_each_hops_own_settings(tmp_path: Path) -> None:
    loaded = config.load(str(write(tmp_path, SERVERS)))
    partner = loaded.servers["partner"]
    inner = partner.jump
    assert inner is not None and inner.name == "inner"
    bastion = inner.jump
    assert bastion is not None and bastion.name == "bastion"
    assert bastion.jump is None
    # Every hop keeps its own host, port, user, key and host-key checks.
    assert (partner.host, partner.port, partner.protocol) == ("sftp.partner.lan", 22, "sftp")
    assert partner.host_key == "SHA256:" + "A" * 43
    assert (inner.host, inner.port, inner.timeout) == ("10.0.0.5", 2222, 9.0)
    assert (bastion.host, bastion.user) == ("bastion.example.net", "hop")
    assert bastion.key_file is None and inner.timeout != bastion.timeout
    assert bastion.known_hosts == inner.known_hosts == tmp_path / "kh"
    assert loaded.servers["inner"] == inner  # the same settings as the server's own entry
    assert loaded.servers["bastion"].jump is None


BROKEN = [
    (
        "partner: {type: ssh, host: p.lan, jump: partner}",
        "servers.partner.jump",
        "a server cannot be its own jump host; name another ssh server",
    ),
    (
        "partner: {type: ssh, host: p.lan, jump: nowhere}",
        "servers.partner.jump",
        "no server named 'nowhere' (servers: bastion, inbox, inner)",
    ),
    (
        "partner: {type: ssh, host: p.lan, jump: inbox}",
        "servers.partner.jump",
        "server 'inbox' is not of type ssh; a jump host must be an ssh server",
    ),
    (
        "partner: {type: local, path: out, jump: bastion}",
        "servers.partner.jump",
        "not used by a server of type local",
    ),
    (
        "partner: {type: ssh, host: p.lan, jump: [bastion]}",
        "servers.partner.jump",
        "expected a string, got a list",
    ),
]


@pytest.mark.parametrize(("line", "key", "problem"), BROKEN)
def test_each_mistake_is_named_at_its_key(
    tmp_path: Path, line: str, key: str, problem: str
) -> None:
    text = SERVERS.rsplit("  partner:", 1)[0] + f"  {line}\n"
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        config.load(str(path))
    assert caught.value.key == key
    assert problem in str(caught.value), str(caught.value)


def test_a_loop_is_named_at_every_server_on_it_and_only_there(tmp_path: Path) -> None:
    text = SERVERS.replace("jump: bastion, known_hosts", "jump: partner, known_hosts").replace(
        "bastion: {type: ssh,", "bastion: {type: ssh, jump: inner,"
    )
    text += "  outside: {type: ssh, host: o.lan, jump: partner}\n"
    found = config.problems(str(write(tmp_path, text)))
    assert sorted(line.split(": ", 1)[1] for line in found) == [
        "At 'servers.inner.jump': jump hosts go round in a loop (inner -> partner -> inner); "
        "end the chain at a server without `jump`",
        "At 'servers.partner.jump': jump hosts go round in a loop (partner -> inner -> "
        "partner); end the chain at a server without `jump`",
    ]
    # `bastion` and `outside` lead into the loop without being on it: not named again.
