"""Preflight of the images each host needs against where they come from (pure): what is missing
is said before anything is touched -- no lock, no upload.

Reads the sections `ops.images.state_parts` adds to the host-state read: `images` (what the engine
has), and on a host that builds, `git` (`git --version`) and `git_remote` (`git ls-remote`).
"""
from __future__ import annotations

from typing import Mapping

from ..errors import ConfigError, FabError, UnhealthyError
from ..host.facts import ParseError
from ..host.facts import git as gitfacts
from ..host.facts import images as imgfacts
from ..host.state import HostState
from ..inventory.model import Inventory


def host_images(state: HostState) -> dict[str, str] | None:
    code, out = state.extra.get("images", (1, ""))
    if code != 0:
        return None
    try:
        return imgfacts.parse_image_list(out)
    except ParseError:
        return None


def image_problems(inv: Inventory, states: Mapping[str, HostState]) -> list[FabError]:
    """Every problem, one FabError each: inventory-side ones are ConfigError lines with file:line."""
    found: list[FabError] = []
    src = inv.sources
    for host in inv.hosts:
        st = states.get(host.name)
        if st is None or not st.engine:
            continue  # the engine problem is reported by the general preflight
        have = host_images(st) or {}
        copy = src.copy_from and src.copy_from != host.name
        for key in inv.image_keys(host):
            ref = getattr(inv.images, key)
            if src.source_of(key) == "present" and imgfacts.normalize(ref) not in have and not copy:
                line = inv.line_of(("images", "source"))
                found.append(ConfigError(
                    f"{inv.path}:{line} images.{key}: host {host.name} has no image {ref} and its source is "
                    f"present (set images.source: build with images.repository, or pull, or load the image "
                    f"on the host with docker load)"))
        if not inv.image_keys_from(host, "build"):
            continue
        where = dict(host=host.name, step="preflight images")
        code, out = st.extra.get("git", (127, ""))
        if code != 0:
            found.append(UnhealthyError(
                f"git is not installed, and it builds {', '.join(inv.image_keys_from(host, 'build'))} from {src.repository}",
                **where, hint="install it on the host (apt-get install git)"))
            continue
        code, out = st.extra.get("git_remote", (1, ""))
        if code != 0:
            what, hint = gitfacts.remote_problem(out, src.repository or "")
            found.append(UnhealthyError(what, **where, hint=hint))
            continue
        try:
            branches = gitfacts.parse_ls_remote(out)
        except ParseError as exc:
            found.append(UnhealthyError(str(exc), **where, hint="run git ls-remote on the host"))
            continue
        branch = src.branch_for(host)
        if branch not in branches:
            key = host.name if host.name in src.branches else ("app" if host.is_app else "worker")
            line = inv.line_of(("images", "branch", key))
            have_txt = ", ".join(sorted(branches)) or "none"
            found.append(ConfigError(
                f"{inv.path}:{line} images.branch.{key}: host {host.name} builds from branch '{branch}', which "
                f"does not exist in {src.repository} (its branches: {have_txt}; fix the branch in hosts.yaml "
                f"or push it)"))
    return found


def raise_image_problems(problems: list[FabError]) -> None:
    """All inventory-side problems at once (exit 2); else the first host-side one, naming the rest."""
    if not problems:
        return
    if all(isinstance(p, ConfigError) for p in problems):
        raise ConfigError([line for p in problems for line in p.problems])
    first = next(p for p in problems if not isinstance(p, ConfigError))
    others = [p.sentence() for p in problems if p is not first]
    if others:
        first.hint = (first.hint + "; " if first.hint else "") + "also: " + "; ".join(others)
    raise first
