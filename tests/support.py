"""What several test modules share (no test module imports another): process and polling helpers."""
from __future__ import annotations

import ctypes
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

PR_SET_CHILD_SUBREAPER = 36


def _children_of(pid: int) -> dict[int, str]:
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            ppid = int(text.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                out[int(stat.parent.name)] = cmd
        except (OSError, ValueError, IndexError):
            continue
    return out


@contextmanager
def subreaper() -> Iterator[callable]:
    """Make this process the subreaper of what it starts, so that a process a command leaves behind
    (even a double-forked, setsid daemon) is re-parented here instead of to init. Yields a function
    that runs a command to its end and returns the processes it left running ({pid: cmdline})."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    try:
        def run(argv: list[str], **kwargs) -> tuple[subprocess.CompletedProcess, dict[int, str]]:
            before = set(_children_of(os.getpid()))
            res = subprocess.run(argv, capture_output=True, text=True, **kwargs)
            left = {pid: cmd for pid, cmd in _children_of(os.getpid()).items() if pid not in before}
            return res, left
        yield run
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


# --- plans as start-all makes them ----------------------------------------------------------------

TEST_SALT = "5a1f" * 8  # a host's fingerprint salt (host/facts/salt.py), fixed for reproducible tests


def salted(plan):
    """`plan` with every host's hashes made with TEST_SALT, as start-all makes them with each host's
    own salt (a plan without salts stands for no secret and is never uploaded)."""
    return plan.with_salts({hp.name: TEST_SALT for hp in plan.hosts})
