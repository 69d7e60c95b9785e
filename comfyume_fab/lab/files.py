"""The files a lab user points the tool at: inventory, known_hosts, secrets, ssh_config."""
from __future__ import annotations

import os
import secrets as _random
from pathlib import Path

import yaml

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


def inventory_dict(hosts: list[LabHost], key: Path, known_hosts: Path, num_users: int,
                   mode: str = "dual-server", roles: dict[str, list[str]] | None = None,
                   secrets_file: str = "secrets.env") -> dict:
    """The lab inventory as data (tests adjust it); roles default to each host's lab role."""
    roles = roles or {}
    out: dict = {
        "mode": mode,
        "num_users": num_users,
        "health": {"interval": "1s", "start_period": "5s"},
        "timeouts": {"connect": 5, "health": 90, "redis": 3, "probe": 30},
        # the lab's stand-in worker image falls back to CPU (the team's real one does not)
        "worker": {"poll_interval": 1, "heartbeat_timeout": 60, "cpu_fallback": True},
        "ssh": {"known_hosts": str(known_hosts)},
        "secrets": {"env_file": secrets_file},
        "hosts": {},
    }
    for h in hosts:
        r = roles.get(h.name, [h.role])
        out["hosts"][h.name] = {
            "address": h.address, "user": h.user, "identity_file": str(key), "tailscale_ip": h.address,
            "roles": r, "gpu": "auto" if "worker" in r else "none", "workdir": "comfyume"}
    return out


def inventory_text(hosts: list[LabHost], key: Path, known_hosts: Path, num_users: int,
                   mode: str = "dual-server") -> str:
    head = ("# Inventory of the built-in lab, written by `invoke lab.up` (regenerated on every lab.up).\n"
            "# The hosts are network namespaces on this machine, each with its own sshd and Docker engine.\n")
    return head + yaml.safe_dump(inventory_dict(hosts, key, known_hosts, num_users, mode), sort_keys=False)


def write_lab_files(lab_dir: Path, hosts: list[LabHost], key: Path, num_users: int) -> Path:
    known = write_known_hosts(lab_dir, hosts)
    write_secrets(lab_dir)
    write_ssh_config(lab_dir, hosts, key)
    inv = lab_dir / "hosts.yaml"
    inv.write_text(inventory_text(hosts, key, known, num_users))
    return inv
