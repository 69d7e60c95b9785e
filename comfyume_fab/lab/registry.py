"""The lab's container registry: Debian's `docker-registry` (the registry:2 server), run in
mello's network namespace on 100.64.0.1:5000 with htpasswd (bcrypt) login, storage under the lab's
folder. The lab engines trust it over plain HTTP (`--insecure-registry`, set where hostsvc starts
dockerd); it is the only registry they can reach (lab/hostsvc.py: CLOSED_PROXY)."""
from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from .layout import LAB_ROOT, SUBNET_PREFIX, LabHost
from .system import in_netns, kill_wait, read_pid, wait_for

PORT = 5000
ADDRESS = f"{SUBNET_PREFIX}1:{PORT}"  # on mello (lab host index 1); hostsvc.LAB_REGISTRY
ROOT = LAB_ROOT / "registry"
PID = ROOT / "registry.pid"


def _listening() -> bool:
    try:
        with socket.create_connection((ADDRESS.split(":")[0], PORT), timeout=1):
            return True
    except OSError:
        return False


def start(mello: LabHost, user: str, password: str) -> str:
    """Serve the registry (restarted with this login); returns its host:port."""
    import bcrypt  # paramiko's own dependency
    stop()
    (ROOT / "data").mkdir(parents=True, exist_ok=True)
    htpasswd = ROOT / "htpasswd"
    htpasswd.write_text(f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n")
    htpasswd.chmod(0o600)
    config = ROOT / "config.yml"
    config.write_text(f"""version: 0.1
log: {{level: warn}}
storage: {{filesystem: {{rootdirectory: {ROOT / 'data'}}}, delete: {{enabled: true}}}}
http: {{addr: {ADDRESS}}}
auth: {{htpasswd: {{realm: comfyume-lab, path: {htpasswd}}}}}
""")
    log = open(ROOT / "registry.log", "ab")
    proc = subprocess.Popen(in_netns(mello.netns, ["/usr/bin/docker-registry", "serve", str(config)]),
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    PID.write_text(f"{proc.pid}\n")
    wait_for(_listening, 15, f"the lab registry on {ADDRESS}")
    return ADDRESS


def stop() -> None:
    pid = read_pid(PID) if PID.exists() else None
    if pid:
        kill_wait(pid, 5)
    PID.unlink(missing_ok=True)


def data_dir() -> Path:
    return ROOT / "data"
