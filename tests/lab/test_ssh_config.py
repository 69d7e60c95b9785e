"""ssh_config is honoured as users expect from OpenSSH: aliases, User, IdentityFile, ProxyJump (each hop\nunder the same host-key policy, known_hosts, timeouts and keys as the target)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from comfyume_fab.errors import UnreachableError
from comfyume_fab.host.ssh.connect import Target
from comfyume_fab.host.ssh.remote import Remote
from tests.support import invoke

pytestmark = pytest.mark.lab


def alias_inventory(lab, tmp_path, proxy_jump: bool):
    cfg = tmp_path / "ssh_config"
    blocks = []
    for name in ("mello", "verda"):
        h = lab.hosts[name]
        blocks.append(f"Host {name}-alias\n  HostName {h.address}\n  User {h.user}\n  IdentityFile {lab.key}\n"
                      + ("  ProxyJump mello-alias\n" if proxy_jump and name == "verda" else ""))
    cfg.write_text("".join(blocks))
    path = lab.inventory(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["ssh"]["config_file"] = str(cfg)
    for name in ("mello", "verda"):
        host = data["hosts"][name]
        host["address"] = f"{name}-alias"
        del host["user"], host["identity_file"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def accepted(lab, host):
    return lab.hosts[host].sshd_log.read_text().count("Accepted publickey")


def test_aliases_user_and_identity_come_from_ssh_config(lab, deployed, tmp_path):
    inv = alias_inventory(lab, tmp_path, proxy_jump=False)
    res = invoke("status", "--json", "--no-probe", "--hosts", str(inv))
    data = json.loads(res.stdout)
    assert res.returncode == 0, res.stdout
    assert data["hosts"]["mello"]["reachable"] and data["hosts"]["verda"]["reachable"]


def test_proxy_jump_reaches_the_worker_through_the_app_host(lab, deployed, tmp_path):
    inv = alias_inventory(lab, tmp_path, proxy_jump=True)
    before = {h: accepted(lab, h) for h in ("mello", "verda")}
    res = invoke("status", "--json", "--no-probe", "--hosts", str(inv))
    assert res.returncode == 0, res.stdout + res.stderr
    after = {h: accepted(lab, h) for h in ("mello", "verda")}
    # mello: its own session + the jump for verda; verda: one session, arriving from mello
    assert after["verda"] - before["verda"] == 1 and after["mello"] - before["mello"] == 2
    recent = lab.hosts["verda"].sshd_log.read_text().splitlines()[-20:]
    assert any("Connection from 100.64.0.1 " in line for line in recent), recent


def jump_target(lab, tmp_path, known_names: tuple[str, ...]) -> Target:
    """verda reached through mello (ProxyJump), with a known_hosts that knows only `known_names`."""
    cfg = tmp_path / "jump_config"
    cfg.write_text(f"Host mello-alias\n  HostName {lab.hosts['mello'].address}\n  User {lab.hosts['mello'].user}\n"
                   f"  IdentityFile {lab.key}\n"
                   f"Host verda-alias\n  HostName {lab.hosts['verda'].address}\n  ProxyJump mello-alias\n")
    known = tmp_path / "known_jump"
    keep = {lab.hosts[n].address for n in known_names}
    known.write_text("".join(line + "\n" for line in lab.known_hosts.read_text().splitlines()
                             if line.split(" ", 1)[0] in keep))
    return Target("verda", "verda-alias", user=lab.hosts["verda"].user, identity_file=str(lab.key),
                  known_hosts=str(known), ssh_config=str(cfg), connect_timeout=5)


def test_an_unknown_jump_host_key_is_refused_and_the_jump_is_named(lab, tmp_path):
    before = accepted(lab, "mello")
    with pytest.raises(UnreachableError) as info:
        Remote(jump_target(lab, tmp_path, ("verda",))).open()
    text = str(info.value)
    assert info.value.code == 3
    assert text.startswith("host verda, step connect: jump host mello-alias ("
                           f"{lab.hosts['mello'].address}) is not in {tmp_path / 'known_jump'}; refusing an unknown "
                           "host key"), text
    assert "is not in" in text and "refusing an unknown host key" in text and "ssh-keyscan" in text, text
    assert "identity_file" not in text, text
    assert accepted(lab, "mello") == before  # refused before any login


def test_a_known_jump_with_an_unknown_target_names_the_target(lab, tmp_path):
    with pytest.raises(UnreachableError) as info:
        Remote(jump_target(lab, tmp_path, ("mello",))).open()
    text = str(info.value)
    assert f"step connect: {lab.hosts['verda'].address} is not in" in text, text
    assert "jump host" not in text, text


def test_the_jump_uses_the_targets_key_and_closes_with_it(lab, tmp_path):
    t = jump_target(lab, tmp_path, ("mello", "verda"))
    r = Remote(t).open()
    try:
        assert r.run("echo ${SSH_CONNECTION%% *}").stdout.strip() == lab.hosts["mello"].address
        assert len(r.jumps) == 1 and r.jumps[0].is_connected
        jump = r.jumps[0]
    finally:
        r.close()
    assert not jump.is_connected and r.jumps == []


def test_a_jump_that_cannot_reach_the_target_says_so(lab, tmp_path):
    t = jump_target(lab, tmp_path, ("mello", "verda"))
    cfg = Path(t.ssh_config)
    cfg.write_text(cfg.read_text().replace(f"HostName {lab.hosts['verda'].address}\n",
                                           f"HostName {lab.hosts['verda'].address}\n  Port 2\n"))
    with pytest.raises(UnreachableError) as info:
        Remote(t).open()
    text = str(info.value)
    assert f"jump host mello-alias could not connect to {lab.hosts['verda'].address}:2 (Connect failed)" \
        in text, text
