"""git on a host: is it installed, which branches does the team's repository have (as the host
itself can read it), and what the host's checkout holds (a branch's commit, a path's tree);
`actions.git` fetches into that checkout.

Every git command runs with GIT_TERMINAL_PROMPT=0 and ssh in BatchMode, so a missing credential
or an unknown host key fails at once with git's own message instead of waiting for a prompt;
`remote_problem` turns that message into one sentence and its likely fix.
"""
from __future__ import annotations

import re
import shlex

from . import ParseError, excerpt

VERSION_COMMAND = "git --version"  # its exit status says whether git is installed
# No prompt: a missing credential or an unknown host key is an error, never a question.
GIT_ENV = "GIT_TERMINAL_PROMPT=0 GIT_SSH_COMMAND='ssh -o BatchMode=yes'"
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")


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
