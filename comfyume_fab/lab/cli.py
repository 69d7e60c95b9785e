"""Thin task bodies for `invoke lab.up` / `lab.down` with one-line errors."""
from __future__ import annotations

import sys

from invoke.exceptions import Exit

from .system import LabError


def up(workers: int, sshd_only: int, users: int, takeover: bool = False) -> None:
    from .manager import up as run
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
