"""`lab.up` and `lab.down`: bring the simulated hosts up from nothing, and remove every trace."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from . import gitserver, hostsvc, images, network, procs
from .files import write_lab_files
from .layout import LAB_ROOT, RUN_ROOT, USER_PREFIX, LabHost, lab_hosts
from .system import LabError, read_pid, sh

REPO = Path(__file__).resolve().parents[2]
LAB_DIR = Path(os.environ.get("COMFYUME_LAB_DIR", REPO / ".lab"))


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, sshd and Docker engines); run it as root")
    for tool in ("dockerd", "sshd", "debootstrap", "nsenter", "ip"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            raise LabError(f"{tool} is not installed; run `bash scripts/install-system.sh` as root first")


LOCK = Path("/run/comfyume-lab.lock")
LOCK_HELD_ENV = "COMFYUME_LAB_LOCK_HELD"
# Which checkout made the lab that is up (its LAB_DIR): the lab is one per machine, and a lab.up or
# lab.down from another checkout must not tear it down unasked.
OWNER = Path(f"{RUN_ROOT}.owner")
TAKEOVER_ENV = "COMFYUME_LAB_TAKEOVER"


def owner() -> str | None:
    """The LAB_DIR of the checkout that made the lab that is up, or None when none is recorded."""
    try:
        return OWNER.read_text().strip() or None
    except OSError:
        return None


def _mine() -> str:
    return str(LAB_DIR.resolve())


def made_here() -> bool:
    """Was the lab that is up made by this checkout?"""
    return owner() == _mine()


def _running() -> bool:
    """Does any lab host's sshd still run? A lab whose processes are all gone (a reboot, a machine
    whose sessions were ended) is only leftovers: any checkout may clean it up and build its own."""
    return any(read_pid(pid) for pid in RUN_ROOT.glob("*/sshd.pid"))


def _check_owner(takeover: bool | None, doing: str) -> None:
    """Refuse to touch a lab another checkout made, unless told to take it over (the argument, else
    $COMFYUME_LAB_TAKEOVER=1)."""
    if takeover is None:
        takeover = os.environ.get(TAKEOVER_ENV) == "1"
    other = owner()
    if other and other != _mine() and not takeover and _running():
        raise LabError(f"refusing to {doing}: the lab that is up was made by the checkout at "
                       f"{Path(other).parent} (its lab folder {other}); run `invoke lab.down` there first, "
                       f"or rerun with --takeover (or {TAKEOVER_ENV}=1) to remove it and build this checkout's")


@contextmanager
def lab_lock() -> Iterator[None]:
    """The lab is one resource per machine: hold its exclusive lock while changing it (a caller
    that already holds it, e.g. the test session, says so with $COMFYUME_LAB_LOCK_HELD=1)."""
    if os.environ.get(LOCK_HELD_ENV) == "1" or _held_by_ancestor():
        yield
        return
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _held_by_ancestor() -> bool:
    """Is the lab lock held by this process or one of its ancestors (`flock LOCK cmd`, a pytest
    session running `invoke lab.up`)? /proc/locks names the holder's pid and the file's inode."""
    try:
        inode = LOCK.stat().st_ino
        holders = set()
        with open("/proc/locks") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 5 and parts[1] == "FLOCK" and parts[5].endswith(f":{inode}"):
                    holders.add(int(parts[4]))
    except (OSError, ValueError):
        return False
    pid = os.getpid()
    while pid > 1:
        if pid in holders:
            return True
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


def up(workers: int = 1, sshd_only: int = 0, num_users: int = 3,
       say: Callable[[str], None] = print, takeover: bool | None = None) -> Path:
    """Create the lab from scratch (first cleaning what an earlier run left) and return the
    path of the inventory it wrote. A lab made by another checkout is removed only with
    `takeover` (default: $COMFYUME_LAB_TAKEOVER=1); otherwise LabError names that checkout."""
    _require_root()
    with lab_lock():
        _check_owner(takeover, "rebuild the lab")
        return _up(workers, sshd_only, num_users, say)


def _up(workers: int, sshd_only: int, num_users: int, say: Callable[[str], None]) -> Path:
    t0 = time.monotonic()
    hosts = lab_hosts(workers, sshd_only)
    _down()
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    OWNER.parent.mkdir(parents=True, exist_ok=True)
    OWNER.write_text(_mine() + "\n")  # from the first namespace on: a half-built lab is ours too
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
    gitserver.ensure(hosts, say)  # images: the team's repository, served by mello's sshd
    _save_state(hosts)
    inventory = write_lab_files(LAB_DIR, hosts, key, num_users=num_users)
    say(f"lab: up in {time.monotonic() - t0:.1f} s; inventory written to {inventory}")
    return inventory


def down(say: Callable[[str], None] = print, takeover: bool | None = None) -> None:
    """Stop every lab process and remove namespaces, bridge, users and folders (cache kept). A lab
    made by another checkout only with `takeover` (default: $COMFYUME_LAB_TAKEOVER=1)."""
    with lab_lock():
        _check_owner(takeover, "remove the lab")
        _down()
    say("lab: down (no lab process, namespace, bridge or folder left; image cache kept)")


def _down() -> None:
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
    OWNER.unlink(missing_ok=True)


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
