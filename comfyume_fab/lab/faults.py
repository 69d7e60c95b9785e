"""Fault helpers for tests and rehearsals: every one reversible, `heal_all` undoes them all.

Network faults live in one iptables chain per host namespace (CFAB-FAULT), jumped to from
INPUT, OUTPUT and Docker's DOCKER-USER (so traffic to and from containers is caught too).
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from . import hostsvc, manager
from .hostsvc import COMPOSE_PLUGIN_DIRS
from .layout import LAB_ROOT, LabHost
from .system import LabError, in_netns, sh

CHAIN = "CFAB-FAULT"


def _h(host: str | LabHost) -> LabHost:
    return host if isinstance(host, LabHost) else manager.host(host)


def _ipt(host: LabHost, *args: str, check: bool = True):
    return sh(in_netns(host.netns, ["iptables", "-w", *args]), check=check)


def _ensure_chain(host: LabHost) -> None:
    if _ipt(host, "-L", CHAIN, "-n", check=False).returncode != 0:
        _ipt(host, "-N", CHAIN)
    for parent in ("INPUT", "OUTPUT", "DOCKER-USER"):
        if _ipt(host, "-L", parent, "-n", check=False).returncode != 0:
            continue  # no DOCKER-USER on an sshd-only host
        if _ipt(host, "-C", parent, "-j", CHAIN, check=False).returncode != 0:
            _ipt(host, "-I", parent, "1", "-j", CHAIN)


def cut(host) -> None:
    """Take the host off the tailnet entirely (unreachable from every peer and the operator)."""
    h = _h(host)
    sh(["ip", "-n", h.netns, "link", "set", "eth0", "down"])


def reconnect(host) -> None:
    h = _h(host)
    sh(["ip", "-n", h.netns, "link", "set", "eth0", "up"])
    sh(["ip", "-n", h.netns, "route", "replace", "default", "via", "100.64.0.254"], check=False)


def partition(a, b) -> None:
    """Drop all traffic between hosts a and b; both stay reachable from the operator."""
    ha, hb = _h(a), _h(b)
    _ensure_chain(ha)
    for args in (["-d", hb.address], ["-s", hb.address]):
        _ipt(ha, "-A", CHAIN, *args, "-j", "DROP")


def block_port(host, port: int, peer) -> None:
    """Drop TCP from `peer` (host and its containers) to `host`:port, applied on the peer's side."""
    h, p = _h(host), _h(peer)
    _ensure_chain(p)
    _ipt(p, "-A", CHAIN, "-d", h.address, "-p", "tcp", "--dport", str(port), "-j", "DROP")


def _container_ipt(host, container: str, *args: str, check: bool = True):
    """iptables inside one container's own network namespace (by its PID on the host's engine)."""
    pid = hostsvc.docker(_h(host), "inspect", "--format", "{{.State.Pid}}", container).stdout.strip()
    return sh(["nsenter", "-t", pid, "-n", "iptables", "-w", *args], check=check)


def cut_container_from_port(host, container: str, port: int) -> None:
    """Refuse every TCP connection `container` opens to `port` (e.g. the queue manager to Redis),
    while everything else reaches it; `mend_container` undoes it (a recreated container is clean)."""
    _container_ipt(host, container, "-A", "OUTPUT", "-p", "tcp", "--dport", str(port), "-j", "REJECT",
                   "--reject-with", "tcp-reset")


def mend_container(host, container: str) -> None:
    _container_ipt(host, container, "-F", "OUTPUT", check=False)


def heal_network(host) -> None:
    h = _h(host)
    if _ipt(h, "-L", CHAIN, "-n", check=False).returncode == 0:
        _ipt(h, "-F", CHAIN)
    reconnect(h)


def stop_sshd(host) -> None:
    hostsvc.stop_sshd(_h(host))


def start_sshd(host) -> None:
    hostsvc.start_sshd(_h(host))


def stop_engine(host) -> None:
    hostsvc.stop_dockerd(_h(host))


def start_engine(host) -> None:
    hostsvc.start_dockerd(_h(host))


def replace_host_key(host) -> None:
    """Give the host a new SSH host key (as a rebuilt or impostor host would have)."""
    h = _h(host)
    hostsvc.stop_sshd(h)
    hostsvc.new_host_key(h)
    hostsvc.start_sshd(h)


def restore_host_key(host, private_key: bytes, public_key: bytes) -> None:
    h = _h(host)
    hostsvc.stop_sshd(h)
    h.host_key.write_bytes(private_key)
    h.host_key.chmod(0o600)
    Path(str(h.host_key) + ".pub").write_bytes(public_key)
    hostsvc.start_sshd(h)


def kill_container(host, service: str, project: str = "comfyume") -> list[str]:
    h = _h(host)
    ids = hostsvc.docker(h, "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                         "--filter", f"label=com.docker.compose.service={service}").stdout.split()
    if ids:
        hostsvc.docker(h, "kill", *ids)
    return ids


def hide_compose(host) -> None:
    """Make Compose v2 missing for this host's SSH sessions only (bind-mount an empty folder over
    the CLI plugin folders inside its sshd's mount namespace)."""
    h = _h(host)
    empty = LAB_ROOT / "empty"
    empty.mkdir(parents=True, exist_ok=True)
    mnt = hostsvc.sshd_mount_ns(h)
    for d in COMPOSE_PLUGIN_DIRS:
        if Path(d).is_dir():
            sh(["nsenter", f"--mount={mnt}", "mount", "--bind", str(empty), d])


def restore_compose(host) -> None:
    h = _h(host)
    try:
        mnt = hostsvc.sshd_mount_ns(h)
    except LabError:
        return
    for d in COMPOSE_PLUGIN_DIRS:
        while sh(["nsenter", f"--mount={mnt}", "umount", d], check=False).returncode == 0:
            pass


def heal_all() -> None:
    """Undo every fault: network, sshd, engine, compose."""
    for h in manager.load_state():
        heal_network(h)
        if not hostsvc.read_pid(h.sshd_pid):
            hostsvc.start_sshd(h)
        restore_compose(h)
        if h.engine and not hostsvc.read_pid(h.dockerd_pid):
            hostsvc.start_dockerd(h)


def netns_run(host, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a command inside a lab host's network namespace (as root), e.g. curl from verda."""
    return sh(in_netns(_h(host).netns, argv), check=False, timeout=timeout)
