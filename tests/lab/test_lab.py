"""The lab itself (issue 2): real sshd per host with strict host keys, a real engine per host,
a real network between hosts, and a clean teardown."""
from __future__ import annotations

import time

import pytest

from comfyume_fab.errors import UnreachableError
from comfyume_fab.lab import faults, hostsvc, network
from comfyume_fab.host.ssh.connect import Target
from comfyume_fab.host.ssh.remote import Remote

pytestmark = pytest.mark.lab


def target(lab, name, **kw) -> Target:
    h = lab.hosts[name]
    return Target(name, h.address, user=h.user, identity_file=str(lab.key), known_hosts=str(lab.known_hosts),
                  connect_timeout=5, **kw)


@pytest.mark.parametrize("name", ["mello", "verda"])
def test_strict_host_key_login_works_with_the_labs_known_hosts(lab, name):
    with Remote(target(lab, name)) as r:
        res = r.run("id -un; echo $DOCKER_HOST")
    user, docker_host = res.stdout.split()
    assert user == lab.hosts[name].user
    assert docker_host == lab.hosts[name].docker_host


def test_login_is_refused_after_the_host_key_is_replaced(lab, healed):
    h = lab.hosts["verda"]
    priv, pub = h.host_key.read_bytes(), (h.host_key.parent / (h.host_key.name + ".pub")).read_bytes()
    faults.replace_host_key("verda")
    try:
        with pytest.raises(UnreachableError, match="host key of 100.64.0.2 has CHANGED"):
            Remote(target(lab, "verda")).open()
    finally:
        faults.restore_host_key("verda", priv, pub)
    with Remote(target(lab, "verda")) as r:
        assert r.run("true").ok


def test_unknown_host_is_refused_not_added(lab, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    t = target(lab, "mello")
    t = Target(**{**t.__dict__, "known_hosts": str(empty)})
    with pytest.raises(UnreachableError, match="not in .*refusing an unknown host key"):
        Remote(t).open()
    assert empty.read_text() == ""  # never silently auto-added


def test_each_host_sees_only_its_own_containers(lab):
    names = {}
    for name in ("mello", "verda"):
        h = lab.hosts[name]
        cid = hostsvc.docker(h, "create", "--label", "cfab-test=isolation", "--name", f"iso-{name}",
                             "redis:7-alpine").stdout.strip()
        names[name] = cid
    try:
        for name in ("mello", "verda"):
            with Remote(target(lab, name)) as r:
                seen = r.run("docker ps -a --filter label=cfab-test=isolation --format '{{.Names}}'").stdout.split()
            assert seen == [f"iso-{name}"]
    finally:
        for name, cid in names.items():
            hostsvc.docker(lab.hosts[name], "rm", "-f", cid, check=False)


def test_a_port_published_on_mello_is_reachable_from_verda_until_cut_off(lab, healed):
    mello = lab.hosts["mello"]
    cid = hostsvc.docker(mello, "run", "-d", "-p", f"{mello.address}:16379:6379", "redis:7-alpine").stdout.strip()
    try:
        assert _wait(lambda: network.reachable(lab.hosts["verda"].netns, mello.address, 16379))
        # and from a container on verda, across the tailnet, like the worker
        res = hostsvc.docker(lab.hosts["verda"], "run", "--rm", "redis:7-alpine", "redis-cli", "-h", mello.address,
                             "-p", "16379", "ping", check=False)
        assert res.stdout.strip() == "PONG"
        faults.cut("mello")
        assert not network.reachable(lab.hosts["verda"].netns, mello.address, 16379, timeout=1)
    finally:
        faults.reconnect("mello")
        hostsvc.docker(mello, "rm", "-f", cid, check=False)


def test_each_host_has_its_own_remote_folder(lab):
    homes = set()
    for name in ("mello", "verda"):
        with Remote(target(lab, name)) as r:
            homes.add(r.run("pwd").stdout.strip())
            assert r.run("ls -d ../../verda ../../mello 2>/dev/null; test -r ../../../hosts/mello/home/.ssh && echo leak").stdout.strip() != "leak"
    assert len(homes) == 2


def _wait(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return False
