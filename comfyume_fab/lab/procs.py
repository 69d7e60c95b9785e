"""Find every process the lab started, also those a killed earlier run left behind."""
from __future__ import annotations

import os
import time

from .layout import LAB_ROOT, RUN_ROOT
from .system import pid_alive


def lab_pids() -> list[int]:
    """Processes whose command line names a lab folder (sshd, dockerd, containerd, shims,
    docker-proxy) or whose cgroup is one of the lab engines' (the containers' processes)."""
    me = os.getpid()
    markers = (f"{LAB_ROOT}/", f"{RUN_ROOT}/")  # folder boundaries: /run/comfyume-lab.lock is not ours
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/cgroup") as f:
                cgroup = f.read()
        except OSError:
            continue
        if any(m in cmdline for m in markers) or "/cfab-" in cgroup:
            found.append(int(entry))
    return found


def kill_all(timeout: float = 10.0) -> None:
    for sig, wait in ((15, timeout), (9, 5.0)):
        pids = lab_pids()
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
            time.sleep(0.1)
