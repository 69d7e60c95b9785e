"""The deploy lock taken, released and broken (`facts.lock` reads it). Taking it is atomic (mkdir);
releasing it needs the holder's token, so an old holder never removes a newer run's lock."""
from __future__ import annotations

from ..commands import q, workdir_path
from ..facts.lock import LOCK_DIR, describe


def lock_acquire(workdir: str, info: str, token: str) -> str:
    """Take the lock: exit 0 and print `acquired`, or exit 3 and print what `parse_lock` reads.
    The token (the holder's proof, compared on release) is written before the info."""
    d = q(workdir_path(workdir, LOCK_DIR))
    # mkdir is atomic: exactly one of two racing deploys creates the directory.
    return (f"mkdir -p -m 700 {q(workdir_path(workdir))} && if mkdir -m 700 {d} 2>/dev/null; then "
            f"printf '%s\\n' {q(token)} > {d}/token && printf '%s\\n' {q(info)} > {d}/info && echo acquired; "
            f"else {describe(d)}; exit 3; fi")


def lock_release(workdir: str, token: str) -> str:
    """Remove the lock only when its token is `token`. Prints `released` (exit 0, and the folder is
    gone), `gone` (exit 4: no lock any more) or `other` + what `parse_lock` reads (exit 5: someone
    else's lock, left in place)."""
    d = q(workdir_path(workdir, LOCK_DIR))
    return (f"if [ ! -d {d} ]; then echo gone; exit 4; fi; "
            f"if [ \"$(cat {d}/token 2>/dev/null)\" = {q(token)} ]; then rm -rf {d} && [ ! -e {d} ] && echo released; "
            f"else echo other; {describe(d)}; exit 5; fi")


def lock_break(workdir: str) -> str:
    """Remove the lock whoever holds it (`invoke lock-break`); prints `removed` once it is gone."""
    d = q(workdir_path(workdir, LOCK_DIR))
    return f"rm -rf {d} && [ ! -e {d} ] && echo removed"
