"""git on a host: is it installed, which branches does the team's repository have (as the host
itself can read it), and the commands that fetch a branch and resolve it to a commit.

Every git command runs with GIT_TERMINAL_PROMPT=0 and ssh in BatchMode, so a missing credential
or an unknown host key fails at once with git's own message instead of waiting for a prompt;
`remote_problem` turns that message into one sentence and its likely fix.
"""
from __future__ import annotations

import re
import shlex

from . import ParseError, excerpt

VERSION_COMMAND = "git --version"
# No prompt: a missing credential or an unknown host key is an error, never a question.
GIT_ENV = "GIT_TERMINAL_PROMPT=0 GIT_SSH_COMMAND='ssh -o BatchMode=yes'"
_VERSION_RE = re.compile(r"^git version (\d+\.\d+(?:\.\d+)?)")
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")


def parse_git_version(text: str) -> str:
    """'git version 2.39.5' -> '2.39.5'."""
    m = _VERSION_RE.match(text.strip())
    if not m:
        raise ParseError("'git version X.Y.Z' from git --version", text)
    return m.group(1)


def ls_remote_command(repository: str) -> str:
    """The branches of `repository` as this host reads them (its own keys, agent and known_hosts)."""
    return f"{GIT_ENV} {shlex.join(['git', 'ls-remote', '--heads', '--', repository])}"


def parse_ls_remote(text: str) -> dict[str, str]:
    """`git ls-remote --heads` output -> {branch: commit sha}."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        sha, _, ref = line.partition("\t")
        if not _SHA_RE.match(sha) or not ref.startswith("refs/heads/"):
            raise ParseError("'<40-hex sha>\\trefs/heads/<branch>' lines from git ls-remote --heads", line)
        out[ref[len("refs/heads/"):]] = sha
    return out


def remote_problem(text: str, repository: str) -> tuple[str, str]:
    """(what happened, the likely fix) for a failed `git ls-remote` / `git fetch`."""
    low = text.lower()
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if "permission denied" in low:
        return (f"the host cannot read the repository {repository} (git said: {excerpt(first)})",
                "add this host's public key (~/.ssh/id_ed25519.pub there) to the repository as a "
                "deploy key, or give images.repository as an HTTPS URL the host can read")
    if "host key verification failed" in low:
        return (f"the host does not know the git server's SSH host key, so it cannot read {repository}",
                "log in to the host once and add the server's key to ~/.ssh/known_hosts there "
                "(ssh-keyscan, checked against the server's fingerprint)")
    if "does not appear to be a git repository" in low or "repository not found" in low or \
            "not found" in low:
        return (f"there is no repository at {repository} (git said: {excerpt(first)})",
                "check images.repository in hosts.yaml")
    if "could not resolve" in low or "connection refused" in low or "couldn't connect" in low \
            or "timed out" in low or "no route" in low:
        return (f"the host cannot reach the git server of {repository} (git said: {excerpt(first)})",
                "check the URL and that the server is reachable from the host")
    return (f"git could not read {repository} from the host (git said: {excerpt(first)})",
            "run the same `git ls-remote` on the host to see why")


def fetch_command(checkout: str, repository: str, branch: str) -> str:
    """Clone (bare, once) or fetch `branch` into the host's checkout and print its commit.

    The checkout is a bare repository owned by this tool: builds read trees from it with
    `git archive`, so no working tree is ever switched under anyone's feet."""
    c = shlex.quote(checkout)
    ref = f"+refs/heads/{branch}:refs/heads/{branch}"
    init = f"{{ [ -d {c}/objects ] || git init -q --bare {c}; }}"
    fetch = f"{GIT_ENV} git -C {c} fetch -q --no-tags -- {shlex.quote(repository)} {shlex.quote(ref)}"
    return f"{init} && {fetch} && {rev_parse_command(checkout, branch)}"


def rev_parse_command(checkout: str, branch: str) -> str:
    """The commit of `branch` as last fetched, then the tree of every path asked for."""
    return shlex.join(["git", "-C", checkout, "rev-parse", "--verify", "-q", f"refs/heads/{branch}^{{commit}}"])


def parse_sha(text: str) -> str:
    line = text.strip().splitlines()[-1] if text.strip() else ""
    if not _SHA_RE.match(line):
        raise ParseError("a 40-hex commit from git rev-parse", text)
    return line


def trees_command(checkout: str, commit: str, paths: list[str]) -> str:
    """The tree object of each build context at `commit`, one per line, in `paths` order."""
    return shlex.join(["git", "-C", checkout, "rev-parse", *[f"{commit}:{p}" for p in paths]])


def parse_trees(text: str, paths: list[str]) -> dict[str, str]:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) != len(paths) or not all(_SHA_RE.match(ln) for ln in lines):
        raise ParseError(f"{len(paths)} tree ids from git rev-parse COMMIT:PATH", text)
    return dict(zip(paths, lines))


def count_command(checkout: str, base: str, branch: str) -> str:
    """How many commits `branch` (as last fetched) has beyond `base`."""
    return shlex.join(["git", "-C", checkout, "rev-list", "--count", f"{base}..refs/heads/{branch}"])
