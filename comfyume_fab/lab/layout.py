"""Where the lab keeps things, and what each simulated host is called.

The lab simulates a tailnet of hosts on one Linux machine: one network namespace per host,
joined to a bridge in 100.64.0.0/10 (the range Tailscale uses). Every name and address is
derived here, in one place, from the host's name and index.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

LAB_ROOT = Path(os.environ.get("COMFYUME_LAB_ROOT", "/var/lib/comfyume-lab"))
RUN_ROOT = Path(os.environ.get("COMFYUME_LAB_RUN", "/run/comfyume-lab"))
CACHE_ROOT = Path(os.environ.get("COMFYUME_LAB_CACHE", "/var/cache/comfyume-lab"))

BRIDGE = "cfab0"
NETNS_PREFIX = "cfab-"
VETH_PREFIX = "cfabv"
USER_PREFIX = "cfab-"
SUBNET_PREFIX = "100.64.0."
PREFIXLEN = 16
GATEWAY = "100.64.0.254"  # the operator's (this machine's) address on the lab tailnet


@dataclasses.dataclass(frozen=True)
class LabHost:
    """One simulated host: its own netns, sshd, Docker engine, login user and home."""

    name: str
    index: int  # 1-based; gives the address 100.64.0.<index>
    role: str  # "app" or "worker"
    engine: bool = True  # False: an sshd-only host (for scale benchmarks)

    @property
    def address(self) -> str:
        return f"{SUBNET_PREFIX}{self.index}"

    @property
    def netns(self) -> str:
        return f"{NETNS_PREFIX}{self.name}"

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"

    @property
    def veth(self) -> str:
        return f"{VETH_PREFIX}{self.index}"

    @property
    def user(self) -> str:
        return f"{USER_PREFIX}{self.name}"

    @property
    def root(self) -> Path:
        return LAB_ROOT / "hosts" / self.name

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def run(self) -> Path:
        return RUN_ROOT / self.name

    @property
    def docker_sock(self) -> Path:
        return self.run / "docker.sock"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.docker_sock}"

    @property
    def host_key(self) -> Path:
        return self.root / "ssh_host_ed25519_key"

    @property
    def sshd_config(self) -> Path:
        return self.root / "sshd_config"

    @property
    def sshd_pid(self) -> Path:
        return self.run / "sshd.pid"

    @property
    def sshd_log(self) -> Path:
        return self.root / "sshd.log"

    @property
    def dockerd_pid(self) -> Path:
        return self.run / "dockerd.pid"

    @property
    def dockerd_log(self) -> Path:
        return self.root / "dockerd.log"

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def docker_pool(self) -> str:
        # Compose networks on this host get addresses from the lab's own range.
        return f"base=100.{64 + self.index}.0.0/16,size=24"

    @property
    def docker_bip(self) -> str:
        return f"100.96.{self.index}.1/24"


def lab_hosts(workers: int = 1, sshd_only: int = 0) -> list[LabHost]:
    """mello (app) + `workers` worker hosts verda, verda-2, ... + sshd-only hosts for scale tests."""
    hosts = [LabHost("mello", 1, "app")]
    for n in range(1, workers + 1):
        hosts.append(LabHost("verda" if n == 1 else f"verda-{n}", n + 1, "worker"))
    for n in range(1, sshd_only + 1):
        hosts.append(LabHost(f"edge-{n}", workers + 1 + n, "worker", engine=False))
    return hosts
