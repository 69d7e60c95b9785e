"""Images from their sources (images.source: present / build / pull): what start-all reads about
them before it touches anything, and (under the deploy lock) how it gets them onto each host.

A helper module of start-all (like ops/health.py), entered through a few calls:

- `state_parts(inv, host)`: the extra sections of the one-round-trip host-state read (the images
  the engine has; `git --version` and `git ls-remote` on a host that builds).
- `preflight(inv, states)`: every missing thing, raised before the lock (checks/images.py).
"""
from __future__ import annotations

from typing import Mapping

from ..checks.images import builds_on, image_problems, raise_image_problems
from ..host.facts import git as gitfacts
from ..host.facts import images as imgfacts
from ..host.state import HostState
from ..inventory.model import Host, Inventory


def state_parts(inv: Inventory, host: Host) -> list[tuple[str, str]]:
    """(section, command) pairs to add to `host.state.read` for this host's images."""
    parts = [("images", imgfacts.LIST_COMMAND)]
    if builds_on(inv, host):
        parts += [("git", gitfacts.VERSION_COMMAND),
                  ("git_remote", gitfacts.ls_remote_command(inv.sources.repository or ""))]
    return parts


def preflight(inv: Inventory, states: Mapping[str, HostState]) -> None:
    """Raise every image problem at once (inventory-side: ConfigError, exit 2; host-side: exit 4)."""
    raise_image_problems(image_problems(inv, states))
