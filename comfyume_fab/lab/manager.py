"""`lab.up` and `lab.down`: bring the simulated hosts up from nothing, and remove every trace."""
from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from . import hostsvc, images, network, procs
from .files import write_lab_files
from .layout import LAB_ROOT, RUN_ROOT, USER_PREFIX, LabHost, lab_hosts
from .system import LabError, sh

REPO = Path(__file__).resolve().parents[2]
LAB_DIR = Path(os.environ.get("COMFYUME_LAB_DIR", REPO / ".lab"))


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, sshd and Docker engines); run it as root")
    for tool in ("dockerd", "sshd", "debootstrap", "nsenter", "ip"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            raise LabError(f"{tool} is not installed; run `bash scripts/install-system.sh` as root first")


def up(workers: int = 1, sshd_only: int = 0, num_users: int = 3,
       say: Callable[[str], None] = print) -> Path:
    """Create the lab from scratch (first cleaning what an earlier run left) and return the
    path of the inventory it wrote."""
    _require_root()
    t0 = time.monotonic()
    hosts = lab_hosts(workers, sshd_only)
    down(say=lambda _m: None)
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    key = _operator_key()
    network.bridge_up()
    for host in hosts:
        network.host_up(host)
        hostsvc.ensure_user(host, key.with_suffix(".pub").read_text())
        hostsvc.ensure_host_key(host)
        hostsvc.write_sshd_config(host)
        hostsvc.start_sshd(host)
    say(f"lab: {len(hosts)} hosts on the lab tailnet ({', '.join(f'{h.name} {h.address}' for h in hosts)})")
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        list(pool.map(hostsvc.start_dockerd, hosts))
    say("lab: a Docker engine runs on each host")
    images.ensure_images(hosts, say)
    _save_state(hosts)
    inventory = write_lab_files(LAB_DIR, hosts, key, num_users=num_users)
    say(f"lab: up in {time.monotonic() - t0:.1f} s; inventory written to {inventory}")
    return inventory


def down(say: Callable[[str], None] = print) -> None:
    """Stop every lab process and remove namespaces, bridge, users and folders (cache kept)."""
    hosts = load_state()
    for host in hosts:
        hostsvc.stop_sshd(host)
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        list(pool.map(hostsvc.stop_dockerd, hosts))
    procs.kill_all()
    for root in (LAB_ROOT / "hosts", RUN_ROOT):
        if root.exists():
            for child in root.iterdir():
                hostsvc.wipe_host_dirs(LabHost(child.name, 0, "app"))
            shutil.rmtree(root, ignore_errors=True)
    network.teardown()
    for line in Path("/etc/passwd").read_text().splitlines():
        name = line.split(":")[0]
        if name.startswith(USER_PREFIX):
            hostsvc.remove_user(name)
    (LAB_DIR / "state.json").unlink(missing_ok=True)
    say("lab: down (no lab process, namespace, bridge or folder left; image cache kept)")


def _operator_key() -> Path:
    key = LAB_DIR / "id_ed25519"
    if not key.exists():
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "comfyume-fab-lab-operator", "-f", str(key)])
    return key


def _save_state(hosts: list[LabHost]) -> None:
    state = {"hosts": [{"name": h.name, "index": h.index, "role": h.role, "engine": h.engine} for h in hosts]}
    (LAB_DIR / "state.json").write_text(json.dumps(state, indent=1))


def load_state() -> list[LabHost]:
    try:
        data = json.loads((LAB_DIR / "state.json").read_text())
    except (OSError, ValueError):
        return []
    return [LabHost(h["name"], h["index"], h["role"], h.get("engine", True)) for h in data["hosts"]]


def host(name: str) -> LabHost:
    for h in load_state():
        if h.name == name:
            return h
    raise LabError(f"no lab host named {name!r} (is the lab up? `invoke lab.up`)")
