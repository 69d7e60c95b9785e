"""The lab's tailnet: a bridge in 100.64.0.0/10 and one network namespace per host."""
from __future__ import annotations

import os

from .layout import BRIDGE, GATEWAY, NETNS_PREFIX, PREFIXLEN, VETH_PREFIX, LabHost

# Tailscale's interface has MTU 1280; the lab's tailnet links get the same, so whatever crosses
# them (an overlay's VXLAN packets above all) meets the limit it would meet on a real tailnet.
TAILNET_MTU = 1280
from .system import in_netns, sh


def bridge_up() -> None:
    if sh(["ip", "link", "show", BRIDGE], check=False).returncode != 0:
        sh(["ip", "link", "add", BRIDGE, "mtu", str(TAILNET_MTU), "type", "bridge"])
    sh(["ip", "addr", "replace", f"{GATEWAY}/{PREFIXLEN}", "dev", BRIDGE])
    sh(["ip", "link", "set", BRIDGE, "up"])


def host_up(host: LabHost) -> None:
    """Create the host's namespace and plug it into the bridge as eth0 with its address."""
    if sh(["ip", "netns", "add", host.netns], check=False).returncode != 0:
        raise_if_missing(host)
    if sh(["ip", "link", "show", host.veth], check=False).returncode != 0:
        sh(["ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns])
    sh(["ip", "link", "set", host.veth, "mtu", str(TAILNET_MTU)])
    sh(["ip", "-n", host.netns, "link", "set", "eth0", "mtu", str(TAILNET_MTU)])
    sh(["ip", "link", "set", host.veth, "master", BRIDGE, "up"])
    sh(["ip", "-n", host.netns, "addr", "replace", f"{host.address}/{PREFIXLEN}", "dev", "eth0"])
    sh(["ip", "-n", host.netns, "link", "set", "lo", "up"])
    sh(["ip", "-n", host.netns, "link", "set", "eth0", "up"])
    # The operator (this machine) is the default route, as a host's uplink would be.
    sh(["ip", "-n", host.netns, "route", "replace", "default", "via", GATEWAY])


def raise_if_missing(host: LabHost) -> None:
    if not os.path.exists(host.netns_path):
        sh(["ip", "netns", "add", host.netns])


def existing_netns() -> list[str]:
    out = sh(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(NETNS_PREFIX)]


def existing_veths() -> list[str]:
    out = sh(["ip", "-o", "link", "show"], check=False).stdout
    names = []
    for line in out.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(VETH_PREFIX):
            names.append(name)
    return names


def teardown() -> None:
    """Remove every lab namespace, veth and the bridge (also what a killed earlier run left)."""
    for ns in existing_netns():
        sh(["ip", "netns", "del", ns], check=False)
    for veth in existing_veths():
        sh(["ip", "link", "del", veth], check=False)
    sh(["ip", "link", "del", BRIDGE], check=False)


def reachable(netns: str | None, address: str, port: int, timeout: float = 2.0) -> bool:
    """Can a TCP connection from `netns` (None: this machine) reach address:port?"""
    code = (f"import socket,sys\ns=socket.socket();s.settimeout({timeout})\n"
            f"sys.exit(0 if s.connect_ex(({address!r},{port}))==0 else 1)")
    argv = ["python3", "-c", code]
    if netns:
        argv = in_netns(netns, argv)
    return sh(argv, check=False, timeout=timeout + 5).returncode == 0
