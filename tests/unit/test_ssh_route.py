"""How a host is reached, decided from ssh_config before any login: no lab, no root. A refused
loopback port stands for a jump host that is down (a real socket, refused by the kernel)."""
from __future__ import annotations

import socket

import pytest

from comfyume_fab.errors import ExitCode, UnreachableError
from comfyume_fab.host.ssh.connect import Target
from comfyume_fab.host.ssh.remote import Remote


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on return: connecting is refused


def open_error(tmp_path, config: str) -> str:
    cfg = tmp_path / "ssh_config"
    cfg.write_text(config)
    with pytest.raises(UnreachableError) as info:
        Remote(Target("verda", "verda-alias", ssh_config=str(cfg), known_hosts=str(tmp_path / "kh"),
                      connect_timeout=2)).open()
    assert info.value.code == ExitCode.UNREACHABLE
    return str(info.value)


def test_a_wildcard_proxyjump_does_not_recurse_and_names_the_jump_host(tmp_path):
    # Fabric's own gateway resolution recursed without end here (RecursionError, exit 1)
    port = closed_port()
    text = open_error(tmp_path, f"Host *\n  ProxyJump bastion\nHost bastion\n  HostName 127.0.0.1\n  Port {port}\n")
    assert text == (f"host verda, step connect: cannot reach jump host bastion 127.0.0.1:{port} (connection refused) "
                    "(is sshd running and the address right?)")


def test_a_chain_of_hops_starts_at_the_first(tmp_path):
    port = closed_port()
    text = open_error(tmp_path, f"Host verda-alias\n  ProxyJump first,second\nHost first\n  HostName 127.0.0.1\n"
                                f"  Port {port}\n")
    assert f"cannot reach jump host first 127.0.0.1:{port}" in text
