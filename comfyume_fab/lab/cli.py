"""Thin task bodies for `invoke lab.up` / `lab.down` with one-line errors."""
from __future__ import annotations

import sys

from invoke.exceptions import Exit

from .system import LabError


def up(workers: int, sshd_only: int, users: int, takeover: bool = False) -> None:
    from .manager import up as run
    for option, value, low, high in (("--workers", workers, 1, 16), ("--sshd-only", sshd_only, 0, 64),
                                     ("--users", users, 1, 200)):
        if not low <= value <= high:  # checked before anything is torn down
            print(f"error: lab.up: {option} {value} is out of range (give {low} to {high})", file=sys.stderr)
            raise Exit(code=2)
    try:
        path = run(workers=workers, sshd_only=sshd_only, num_users=users, takeover=takeover or None)
    except LabError as exc:
        print(f"error: lab.up: {exc}", file=sys.stderr)
        raise Exit(code=1)
    print(path)


def down(takeover: bool = False) -> None:
    from .manager import down as run
    try:
        run(takeover=takeover or None)
    except LabError as exc:
        print(f"error: lab.down: {exc}", file=sys.stderr)
        raise Exit(code=1)


def real() -> None:
    """Build (once, cached) and load the real-service images into the lab's engines, write the inventory."""
    import time
    from . import manager, real as profile
    t0 = time.monotonic()
    try:
        hosts = manager.load_state()
        if not hosts:
            raise LabError("the lab is not up (run `invoke lab.up` first)")
        with manager.lab_lock():
            times = profile.ensure(hosts)
        path = profile.write_inventory(manager.LAB_DIR, hosts)
    except LabError as exc:
        print(f"error: lab.real: {exc}", file=sys.stderr)
        raise Exit(code=1)
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) or "all images already loaded"
    print(f"lab.real: ready in {time.monotonic() - t0:.0f} s ({phases}); inventory: {path}")
