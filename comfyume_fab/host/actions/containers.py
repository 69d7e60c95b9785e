"""Containers removed by id (what compose no longer knows about, or a rollback replaces)."""
from __future__ import annotations

import shlex
from typing import Sequence


def remove_containers(ids: Sequence[str], grace: int = 10) -> str:
    """Stop (SIGTERM, then `grace` s) and remove these containers; never their volumes or bind mounts."""
    return (f"{shlex.join(['docker', 'stop', '-t', str(int(grace)), *ids])} >/dev/null && "
            f"{shlex.join(['docker', 'rm', *ids])} >/dev/null")
