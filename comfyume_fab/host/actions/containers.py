"""Containers removed by id (what compose no longer knows about, or a rollback replaces)."""
from __future__ import annotations

import shlex
from typing import Sequence

from ..commands import q, workdir_path


def remove_containers(ids: Sequence[str], grace: int = 10) -> str:
    """Stop (SIGTERM, then `grace` s) and remove these containers; never their volumes or bind mounts."""
    return (f"{shlex.join(['docker', 'stop', '-t', str(int(grace)), *ids])} >/dev/null && "
            f"{shlex.join(['docker', 'rm', *ids])} >/dev/null")


def run_job(workdir: str, name: str, label: str, env_file: str, image: str, argv: Sequence[str]) -> str:
    """Replace the detached container `name` with a new one of `image` running `argv`, its
    environment from `env_file` (in the workdir, never in argv), on the host's network, restarted
    after a reboot (`invoke warm`'s job that lowers replicas later). Never pulled: a missing
    image fails here instead of reaching for a registry."""
    return (f"docker rm -f {q(name)} >/dev/null 2>&1; cd {q(workdir_path(workdir))} && "
            + shlex.join(["docker", "run", "-d", "--pull", "never", "--name", name, "--restart", "unless-stopped", "--network", "host",
                          "--label", label, "--env-file", env_file, image, *argv]))
