"""Autostop's service on the app host: its folders made, started and removed (the files themselves
are rendered by `plan.autostop` and uploaded by `ops.autostop`; `facts.autostop` reads them back)."""
from __future__ import annotations

import shlex

from ..commands import AUDIT_LOG, q, workdir_path


def prepare(workdir: str, folder: str) -> str:
    """Make the folders (private), the audit log the program appends to (so Docker never makes a
    folder of it), and `.env` naming the login user's uid:gid, the container's user, so that it
    reads the 0600 env file and writes its state as the files' owner."""
    base = workdir_path(workdir, folder)
    audit = workdir_path(workdir, AUDIT_LOG)
    return (f"umask 077 && {shlex.join(['mkdir', '-p', f'{base}/conf', f'{base}/state'])} && "
            f"chmod 700 {q(base)} {q(base + '/conf')} {q(base + '/state')} && "
            f"touch {q(audit)} && chmod 600 {q(audit)} && "
            f"printf 'AUTOSTOP_USER=%s:%s\\n' \"$(id -u)\" \"$(id -g)\" > {q(base + '/.env')}")


def up(workdir: str, folder: str, project: str) -> str:
    """`docker compose up -d` in the folder: a no-op when nothing changed; never pulls."""
    return (f"cd {q(workdir_path(workdir, folder))} && "
            + shlex.join(["docker", "compose", "-p", project, "-f", "compose.yml", "up", "-d", "--no-color",
                          "--pull", "never"]))


def remove(workdir: str, folder: str, project: str) -> str:
    """Stop and remove the project's containers (found by label, so a folder already gone does not
    matter), then the folder with its env file and state."""
    label = f"label=com.docker.compose.project={project}"
    return (f"ids=$(docker ps -aq --filter {q(label)}); if [ -n \"$ids\" ]; then docker rm -f $ids >/dev/null; fi && "
            f"rm -rf -- {q(workdir_path(workdir, folder))} && "
            f"{{ rmdir -- {q(workdir_path(workdir, folder.rsplit('/', 1)[0]))} 2>/dev/null || true; }}")
