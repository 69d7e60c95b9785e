"""git on a host, changing it: the host's bare checkout cloned (once) or fetched (`facts.git` reads
the remote and the checkout). The same no-prompt environment as every git command (`GIT_ENV`)."""
from __future__ import annotations

import shlex

from ..facts.git import GIT_ENV, rev_parse_command


def fetch_command(checkout: str, repository: str, branch: str) -> str:
    """Clone (bare, once) or fetch `branch` into the host's checkout and print its commit.

    The checkout is a bare repository owned by this tool: builds read trees from it with
    `git archive`, so no working tree is ever switched under anyone's feet."""
    c = shlex.quote(checkout)
    ref = f"+refs/heads/{branch}:refs/heads/{branch}"
    init = f"{{ [ -d {c}/objects ] || git init -q --bare {c}; }}"
    fetch = f"{GIT_ENV} git -C {c} fetch -q --no-tags -- {shlex.quote(repository)} {shlex.quote(ref)}"
    return f"{init} && {fetch} && {rev_parse_command(checkout, branch)}"
