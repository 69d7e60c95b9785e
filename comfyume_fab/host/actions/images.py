"""Images on a host's engine, changed: built from a commit of the host's checkout, and the engine
logged in to a registry for one run's pulls only (a private DOCKER_CONFIG folder, removed
after them), pulled (`facts.images` reads what is there)."""
from __future__ import annotations

import shlex

from .. import commands as cmd
from .workdir import mkdir


def build_command(checkout: str, commit: str, context: str, dockerfile: str, tags: list[str],
                  labels: dict[str, str]) -> str:
    """Build from the tree `commit:context` of the host's checkout, streamed as a tar to
    `docker build -` (no working tree is switched), tagged with every name in `tags`."""
    archive = shlex.join(["git", "-C", checkout, "archive", "--format=tar", f"{commit}:{context}"])
    # --force-rm: a failed step's container is removed too (the classic builder keeps it otherwise)
    argv = ["docker", "build", "--force-rm", "-f", dockerfile]
    for tag in tags:
        argv += ["-t", tag]
    for key, value in sorted(labels.items()):
        argv += ["--label", f"{key}={value}"]
    return f"set -o pipefail; {archive} | {shlex.join(argv + ['-'])}"


# A registry login is kept only for one run's pulls: in a private folder (0700, in the workdir) that
# DOCKER_CONFIG names for the login and the pulls, removed after them, never in ~/.docker/config.json.
AUTH_DIR_PREFIX = ".registry-auth."
AUTH_DIR_SHOWN = "<private folder>"  # what plan/--dry-run print in its place


def auth_dir_command(workdir: str) -> str:
    """Make this run's private login folder in the workdir (created 0700 if missing) and print its
    absolute path; the folders a run that was cut off left there go first (deploys hold the lock)."""
    base = cmd.q(cmd.workdir_path(workdir))
    return (f"{mkdir(workdir)} && rm -rf -- {base}/{AUTH_DIR_PREFIX}* && "
            f"d=$(umask 077 && mktemp -d {base}/{AUTH_DIR_PREFIX}XXXXXXXX) && cd \"$d\" && pwd -P")


def parse_auth_dir(text: str, workdir: str) -> str | None:
    """The folder `auth_dir_command` printed, or None when it is not one it can have made."""
    path = text.strip()
    name = path.rpartition("/")[2]
    ok = (path.startswith("/") and name.startswith(AUTH_DIR_PREFIX) and len(name) == len(AUTH_DIR_PREFIX) + 8
          and all(ch.isalnum() or ch in "/._-" for ch in path) and "/../" not in path + "/")
    return path if ok else None


def remove_auth_dir_command(path: str) -> str:
    return shlex.join(["rm", "-rf", "--", path])


def login_command(server: str, user: str, auth_dir: str = AUTH_DIR_SHOWN) -> str:
    """`docker login` into `auth_dir` (DOCKER_CONFIG), reading the password from stdin (never argv)."""
    return f"DOCKER_CONFIG={cmd.q(auth_dir)} " + shlex.join(["docker", "login", "--username", user,
                                                             "--password-stdin", server])


def pull_command(ref: str, auth_dir: str | None = None) -> str:
    """`docker pull -q ref`; with the login in `auth_dir` when the ref is the registry's."""
    pull = shlex.join(["docker", "pull", "-q", ref])
    return f"DOCKER_CONFIG={cmd.q(auth_dir)} {pull}" if auth_dir else pull
