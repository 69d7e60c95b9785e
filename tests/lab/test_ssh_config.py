"""ssh_config is honoured as users expect from Fabric: aliases, User, IdentityFile, ProxyJump."""
from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import invoke

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
