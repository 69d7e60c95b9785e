"""The files a lab user points the tool at: inventory, known_hosts, secrets, ssh_config."""
from __future__ import annotations

import os
import secrets as _random
from pathlib import Path

from .hostsvc import host_public_key
from .layout import LabHost


def write_known_hosts(lab_dir: Path, hosts: list[LabHost]) -> Path:
    path = lab_dir / "known_hosts"
    path.write_text("".join(f"{h.address} {host_public_key(h)}\n" for h in hosts))
    return path


def write_secrets(lab_dir: Path) -> Path:
    path = lab_dir / "secrets.env"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("# lab secrets, made by `invoke lab.up` (random, mode 0600)\n")
            f.write(f"REDIS_PASSWORD={_random.token_urlsafe(18)}\n")
            f.write(f"ADMIN_PASSWORD={_random.token_urlsafe(18)}\n")
    return path


def write_ssh_config(lab_dir: Path, hosts: list[LabHost], key: Path) -> Path:
    """ssh_config with one alias per lab host, for `ssh -F .lab/ssh_config verda` by hand."""
    path = lab_dir / "ssh_config"
    blocks = [f"Host {h.name}\n  HostName {h.address}\n  User {h.user}\n  IdentityFile {key}\n"
              f"  UserKnownHostsFile {lab_dir / 'known_hosts'}\n  StrictHostKeyChecking yes\n"
              for h in hosts]
    path.write_text("".join(blocks))
    return path


def inventory_text(hosts: list[LabHost], key: Path, known_hosts: Path, num_users: int,
                   mode: str = "dual-server") -> str:
    lines = [
        "# Inventory of the built-in lab, written by `invoke lab.up` (regenerated on every lab.up).",
        "# The hosts are network namespaces on this machine, each with its own sshd and Docker engine.",
        f"mode: {mode}",
        f"num_users: {num_users}",
        "health:",
        "  interval: 1s",
        "  start_period: 5s",
        "timeouts:",
        "  connect: 5",
        "  health: 90",
        "  redis: 3",
        "  probe: 30",
        "worker:",
        "  poll_interval: 1",
        "  heartbeat_timeout: 60",
        "ssh:",
        f"  known_hosts: {known_hosts}",
        "secrets:",
        "  env_file: secrets.env",
        "hosts:",
    ]
    for h in hosts:
        lines += [
            f"  {h.name}:",
            f"    address: {h.address}",
            f"    user: {h.user}",
            f"    identity_file: {key}",
            f"    tailscale_ip: {h.address}",
            f"    roles: [{h.role}]",
            f"    gpu: {'none' if h.role == 'app' else 'auto'}",
            "    workdir: comfyume",
        ]
    return "\n".join(lines) + "\n"


def write_lab_files(lab_dir: Path, hosts: list[LabHost], key: Path, num_users: int) -> Path:
    known = write_known_hosts(lab_dir, hosts)
    write_secrets(lab_dir)
    write_ssh_config(lab_dir, hosts, key)
    inv = lab_dir / "hosts.yaml"
    inv.write_text(inventory_text(hosts, key, known, num_users))
    return inv
