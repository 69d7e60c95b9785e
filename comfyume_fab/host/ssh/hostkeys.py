"""Host keys, checked strictly: known_hosts is loaded and Fabric's auto-accepting policy is
replaced (RejectPolicy, or accept-new when the inventory asks) before a connection opens, for the
target and every jump host alike; and the sentences for a changed or an unknown key."""
from __future__ import annotations

from pathlib import Path

import paramiko
from fabric import Connection

from ...errors import UnreachableError


class AcceptNewPolicy(paramiko.MissingHostKeyPolicy):
    """Accept a host never seen before and append it to known_hosts (a CHANGED key is still refused:
    paramiko raises BadHostKeyException before any policy is asked)."""

    def __init__(self, path: Path):
        self.path = path

    def missing_host_key(self, client, hostname, key):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)


def known_name(conn: Connection) -> str:
    """The name a host has in known_hosts: `host`, or `[host]:port` off port 22 (as OpenSSH writes it)."""
    return conn.host if int(conn.port) == 22 else f"[{conn.host}]:{conn.port}"


def enforce(conn: Connection, known: Path, accept_new: bool, generated: Path | None = None) -> None:
    """Before `conn` opens: the keys recorded in `known` (when it exists), and no key taken unseen
    unless `accept_new` (trust on first use, recorded in `known`). `generated`: the keys this tool
    generated for instances it rented (`.comfyume-fab/known_hosts`), loaded first so that, for a
    reused cloud address, the key the tool installed is the one checked, never an older one."""
    if generated is not None and generated.exists():
        conn.client.load_host_keys(str(generated))
    if known.exists():
        conn.client.load_host_keys(str(known))
    conn.client.set_missing_host_key_policy(AcceptNewPolicy(known) if accept_new else paramiko.RejectPolicy())


def changed(host: str, who: str, conn: Connection, known: Path) -> UnreachableError:
    return UnreachableError(
        f"the SSH host key of {who} has CHANGED since it was recorded in {known}; "
        "refusing to connect (this is what a man-in-the-middle looks like)",
        host=host, step="connect",
        hint=f"if the host was rebuilt, verify its new key, then `ssh-keygen -R {known_name(conn)} "
             f"-f {known}`")


def unknown(host: str, who: str, conn: Connection, known: Path) -> UnreachableError:
    return UnreachableError(
        f"{who} is not in {known}; refusing an unknown host key",
        host=host, step="connect",
        hint="add it with `ssh-keyscan` after checking the fingerprint, or set "
             f"ssh.accept_new_host_keys: true to trust it on first use (`ssh-keyscan -p {conn.port} "
             f"{conn.host} >> {known}`)")
