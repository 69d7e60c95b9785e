"""Run commands on this machine for the lab (root's own namespace), with one-line errors."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Sequence


class LabError(RuntimeError):
    """A lab step failed; the message says which step and what the command printed."""


def sh(argv: Sequence[str], *, check: bool = True, timeout: float = 120, input: str | None = None,
       env: dict | None = None) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              input=input, env=env)
    except FileNotFoundError:
        raise LabError(f"{argv[0]} is not installed (run scripts/install-system.sh as root)") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"`{' '.join(argv)}` did not finish within {timeout:.0f} s") from None
    if check and proc.returncode != 0:
        out = (proc.stderr.strip() or proc.stdout.strip())[-400:]
        raise LabError(f"`{' '.join(argv)}` failed (exit {proc.returncode}): {out}")
    return proc


def in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    """argv run inside a lab host's network namespace (nsenter keeps /sys, unlike ip netns exec)."""
    return ["nsenter", f"--net=/run/netns/{netns}", *argv]


def read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


def kill_wait(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM, wait, then SIGKILL."""
    for sig, wait in ((15, timeout), (9, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.05)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
