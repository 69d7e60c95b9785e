"""Hosts added to a lab that is up, and removed again: the instances the Verda stand-in rents out,
a second worker host for the Swarm tests. Each is a full lab host (namespace on the lab tailnet,
login user, sshd, Docker engine with the lab images), recorded in the lab's state so `lab.down`
removes it like the others.
"""
from __future__ import annotations

import fcntl
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from . import hostsvc, images, network
from .layout import LabHost
from .system import LabError, sh

MAX_INDEX = 250  # 100.64.0.254 is the operator's (this machine's) address


def _state_file() -> Path:
    from .manager import LAB_DIR
    return LAB_DIR / "state.json"


@contextmanager
def _state_lock() -> Iterator[dict]:
    """The lab's state, read and written under its own lock (a stand-in may add hosts from threads)."""
    path = _state_file()
    if not path.exists():
        raise LabError("the lab is not up (no state.json); run `invoke lab.up` first")
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = json.loads(path.read_text())
        yield state
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(path)


def _as_host(entry: dict) -> LabHost:
    return LabHost(entry["name"], entry["index"], entry["role"], entry.get("engine", True))


def find(name: str) -> LabHost | None:
    """The lab host of that name (made by lab.up or added here), or None."""
    try:
        state = json.loads(_state_file().read_text())
    except (OSError, ValueError):
        return None
    for entry in state.get("hosts", []):
        if entry["name"] == name:
            return _as_host(entry)
    return None


def add_host(name: str, role: str = "worker", *, authorized_key: str | None = None, start_ssh: bool = True,
             engine: bool = True, say: Callable[[str], None] = lambda _: None) -> LabHost:
    """Add a host to the lab that is up and return it. `authorized_key`: the login user's key
    (default: the lab operator's). `start_ssh=False` leaves sshd unstarted and without a host key,
    for a caller that installs one first (the Verda stand-in's startup script); then call
    `start_sshd(host)`. Not idempotent: a name already in the lab is refused."""
    from .manager import LAB_DIR
    with _state_lock() as state:
        if any(e["name"] == name for e in state["hosts"]):
            raise LabError(f"the lab already has a host named {name!r}")
        used = {e["index"] for e in state["hosts"]}
        index = next((i for i in range(2, MAX_INDEX + 1) if i not in used), None)
        if index is None:
            raise LabError("the lab tailnet has no free address left")
        host = LabHost(name, index, role, engine)
        state["hosts"].append({"name": name, "index": index, "role": role, "engine": engine})
    key = authorized_key or (LAB_DIR / "id_ed25519.pub").read_text()
    try:
        network.host_up(host)
        # An address freed by a host removed moments ago may still be in this machine's neighbour
        # cache with the old host's MAC: sshd's listen check would then time out on it.
        sh(["ip", "neigh", "flush", "to", host.address], check=False)
        hostsvc.ensure_user(host, key)
        if start_ssh:
            start_sshd(host)
        hostsvc.start_dockerd(host)
        images.ensure_images([host], say)
    except BaseException:
        remove_host(name)
        raise
    return host


def start_sshd(host: LabHost) -> None:
    """(Re)start the host's sshd with its host key (made now if it has none)."""
    hostsvc.ensure_host_key(host)
    hostsvc.write_sshd_config(host)
    hostsvc.stop_sshd(host)
    hostsvc.start_sshd(host)


def remove_host(name: str) -> bool:
    """Remove a host added with `add_host`: processes, engine, user, folders, namespace, address.
    Returns False when the lab has no such host."""
    host = find(name)
    if host is None:
        return False
    hostsvc.stop_sshd(host)
    hostsvc.stop_dockerd(host)
    hostsvc.remove_user(host.user)
    hostsvc.wipe_host_dirs(host)
    sh(["ip", "netns", "del", host.netns], check=False)
    sh(["ip", "link", "del", host.veth], check=False)
    with _state_lock() as state:
        state["hosts"] = [e for e in state["hosts"] if e["name"] != name]
    return True
