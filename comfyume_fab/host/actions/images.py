"""Images on a host's engine, changed: built from a commit of the host's checkout, and the engine
logged in to a registry (`facts.images` reads what is there)."""
from __future__ import annotations

import shlex


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


def login_command(server: str, user: str) -> str:
    """`docker login` reading the password from stdin (never argv, never a file on the host)."""
    return shlex.join(["docker", "login", "--username", user, "--password-stdin", server])
