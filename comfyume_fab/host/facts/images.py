"""Images on a host's engine: which references are there, with which image id, and the commit a
built image came from (its `name:<12-hex sha>` tag, plus labels the build sets).

`LIST_COMMAND` prints one `repository:tag<TAB>id` line per tagged image (one docker call, whatever
the number of images); `parse_image_list` reads it.
"""
from __future__ import annotations

import re
import shlex

from .. import commands as cmd
from . import ParseError

LIST_COMMAND = "docker image ls --no-trunc --format '{{.Repository}}:{{.Tag}}\\t{{.ID}}'"
COMMIT_LABEL = "org.comfyume.commit"
BRANCH_LABEL = "org.comfyume.branch"
TREE_LABEL = "org.comfyume.tree"
SERVICE_LABEL = "org.comfyume.service"
SHORT = 12  # the commit tag's length: name:<first 12 hex digits>
_ID_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_COMMIT_TAG_RE = re.compile(r"^[0-9a-f]{12}$")


def normalize(ref: str) -> str:
    """'redis' -> 'redis:latest'; 'docker.io/library/redis:7' -> 'redis:7' (as `image ls` prints)."""
    name, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "latest")
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return f"{name}:{tag}"


def parse_image_list(text: str) -> dict[str, str]:
    """`LIST_COMMAND` output -> {repository:tag: image id}; untagged images are left out."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        ref, _, image_id = line.partition("\t")
        if not _ID_RE.match(image_id.strip()):
            raise ParseError("'repository:tag<TAB>sha256:<64 hex>' lines from docker image ls", line)
        if ref.endswith(":<none>") or ref.startswith("<none>"):
            continue
        out[ref] = image_id.strip()
    return out


def commit_tags(images: dict[str, str], ref: str) -> list[str]:
    """The commit tags (12 hex digits) of the image `ref` points at, e.g. ['3f2a9c1d0b7e']."""
    want = images.get(normalize(ref))
    name = normalize(ref).rpartition(":")[0]
    return sorted(tag for r, i in images.items() if i == want
                  for n, _, tag in [r.rpartition(":")] if n == name and _COMMIT_TAG_RE.match(tag))


def commit_ref(ref: str, commit: str) -> str:
    """'comfyume-worker:v0.11.0', '3f2a9c…' -> 'comfyume-worker:3f2a9c1d0b7e'."""
    return f"{normalize(ref).rpartition(':')[0]}:{commit[:SHORT]}"


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


def find_tree_command(service: str, tree: str) -> str:
    """An image this host built earlier from the same tree of the same service (ids, newest first)."""
    return shlex.join(["docker", "image", "ls", "-q", "--no-trunc", "--filter", f"label={SERVICE_LABEL}={service}",
                       "--filter", f"label={TREE_LABEL}={tree}"])


# A registry login is kept only for one run's pulls: in a private folder (0700, in the workdir) that
# DOCKER_CONFIG names for the login and the pulls, removed after them, never in ~/.docker/config.json.
AUTH_DIR_PREFIX = ".registry-auth."
AUTH_DIR_SHOWN = "<private folder>"  # what plan/--dry-run print in its place


def auth_dir_command(workdir: str) -> str:
    """Make this run's private login folder in the workdir (created 0700 if missing) and print its
    absolute path; the folders a run that was cut off left there go first (deploys hold the lock)."""
    base = cmd.q(cmd.workdir_path(workdir))
    return (f"{cmd.mkdir(workdir)} && rm -rf -- {base}/{AUTH_DIR_PREFIX}* && "
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
