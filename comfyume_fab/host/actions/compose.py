"""A host's compose services started (`up`) and stopped or removed (`stop`), on its
`ComposeProject` (`host.commands`)."""
from __future__ import annotations

from typing import Iterable

from ..commands import ComposeProject


def up(project: ComposeProject, services: Iterable[str], no_deps: bool = False) -> str:
    # `up -d` (never `docker restart`): a changed .env or image recreates the container.
    # `no_deps`: touch exactly these services (a rolling batch), not what they depend on.
    return project.run("up", "-d", "--no-color", "--quiet-pull", "--remove-orphans",
                       *(("--no-deps",) if no_deps else ()), *services)


def stop(project: ComposeProject, services: Iterable[str] = (), remove: bool = False) -> str:
    if remove:
        # `rm -s -f` / `down` never ask a question and never delete volumes (Redis data stays).
        return project.run(*(("rm", "-s", "-f", *services) if services else ("down", "--remove-orphans")))
    return project.run("stop", *services)
