"""The deploy lock as a host shows it: a folder in the workdir (`LOCK_DIR`) holding the holder's
token and info line. `lock_read` prints `absent`, or `present` and what `parse_lock` reads (its
age by the host's clock, its holder); `actions.lock` takes, releases and breaks it."""
from __future__ import annotations

from dataclasses import dataclass

from ..commands import q, workdir_path

LOCK_DIR = ".deploy-lock"


def describe(d: str) -> str:
    """Print `age=<seconds since the lock folder `d` (quoted) was made, by the host's clock>` and
    the holder's info (nothing when the run that took it died before writing it)."""
    return (f"echo \"age=$(( $(date +%s) - $(stat -c %Y {d} 2>/dev/null || date +%s) ))\"; "
            f"cat {d}/info 2>/dev/null || true")


def lock_read(workdir: str) -> str:
    """`absent`, or `present` + what `parse_lock` reads (a lock without its info file included)."""
    d = q(workdir_path(workdir, LOCK_DIR))
    return f"if [ -d {d} ]; then echo present; {describe(d)}; else echo absent; fi"


@dataclass(frozen=True)
class LockSeen:
    """A lock as read on the host: its age in seconds (None when unknown) and its holder line."""
    age: int | None
    holder: str


def parse_lock(text: str) -> LockSeen:
    """Read what `describe` printed (after any `present`/`other` marker line)."""
    age, holder = None, []
    for line in text.splitlines():
        if line.startswith("age="):
            try:
                age = max(0, int(line[4:]))
            except ValueError:
                age = None
        elif line.strip() and line.strip() not in ("present", "other", "absent", "gone"):
            holder.append(line.strip())
    return LockSeen(age, " ".join(holder))
