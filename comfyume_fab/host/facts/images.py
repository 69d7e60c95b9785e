"""Images on a host's engine: which references are there, with which image id, and the commit a
built image came from (its `name:<12-hex sha>` tag, plus labels the build sets).

`actions.images` builds and logs in. `LIST_COMMAND` prints one `repository:tag<TAB>id` line per tagged image (one docker call, whatever
the number of images); `parse_image_list` reads it.
"""
from __future__ import annotations

import re
import shlex

from . import ParseError

LIST_COMMAND = "docker image ls --no-trunc --format '{{.Repository}}:{{.Tag}}\\t{{.ID}}'"
COMMIT_LABEL = "org.comfyume.commit"
BRANCH_LABEL = "org.comfyume.branch"
TREE_LABEL = "org.comfyume.tree"
SERVICE_LABEL = "org.comfyume.service"
SHORT = 12  # the commit tag's length: name:<first 12 hex digits>
_ID_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


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


def commit_ref(ref: str, commit: str) -> str:
    """'comfyume-worker:v0.11.0', '3f2a9c…' -> 'comfyume-worker:3f2a9c1d0b7e'."""
    return f"{normalize(ref).rpartition(':')[0]}:{commit[:SHORT]}"


def find_tree_command(service: str, tree: str) -> str:
    """An image this host built earlier from the same tree of the same service (ids, newest first)."""
    return shlex.join(["docker", "image", "ls", "-q", "--no-trunc", "--filter", f"label={SERVICE_LABEL}={service}",
                       "--filter", f"label={TREE_LABEL}={tree}"])
