"""Preflight of the images each host needs against where they come from (pure): what is missing
is said before anything is touched -- no lock, no upload; and status's view of a host's images
(`status_parts`, `status_block`, `image_commit`, `gone_images`).

An image a host lacks whose source is `present` is a host-side problem (MissingImageError, exit 7),
named for what it is ("verda has no image comfyume-worker:v0.11.0"), with the fixes the tool
offers: `copy-image` from a host that has it (every host's image list is read with its state), or
a source. It stops start-all only where something on that host is to be (re)created or started;
where nothing is (`settled`), its running container keeps running and a warning says so.

Reads the sections `state_parts` (below) adds to the host-state read: `images` (what the engine
has), and on a host that builds, `git` (`git --version`) and `git_remote` (`git ls-remote`).
"""
from __future__ import annotations

from typing import Mapping

from ..errors import ConfigError, FabError, MissingImageError, UnhealthyError
from ..invocation import command as prog_command
from ..host.facts import ParseError
from ..host.actions import git as gitact
from ..host.facts import git as gitfacts
from ..host.facts import images as imgfacts
from ..host.state import HostState
from ..host import commands as cmd
from ..inventory.model import Host, Inventory


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
    return image_findings(inv, states)[0]


def missing_image_fix(inv: Inventory, states: Mapping[str, HostState], host: str, ref: str) -> str:
    """How to get `ref` onto `host`: `copy-image` from a host that has it (when one does), else a source."""
    others = [h.name for h in inv.hosts if h.name != host and states.get(h.name) is not None
              and imgfacts.normalize(ref) in (host_images(states[h.name]) or {})]
    source = (f"give it a source in {inv.path} (images.source: build with images.repository, or pull), "
              f"or `docker load` it on {host}")
    if others:
        return (f"copy it from {others[0]}, which has it: `{prog_command('copy-image')} --source {others[0]} "
                f"--target {host} --image {ref}`; or {source}")
    return source


def image_findings(inv: Inventory, states: Mapping[str, HostState],
                   settled: Mapping[str, bool] | None = None) -> tuple[list[FabError], list[str]]:
    """(every problem, one FabError each; warnings). `settled`: host -> nothing is to be (re)created
    or started there; a missing `present` image on a settled host is a warning, not a problem."""
    found: list[FabError] = []
    warnings: list[str] = []
    src = inv.sources
    settled = settled or {}
    for host in inv.hosts:
        st = states.get(host.name)
        if st is None or not st.engine:
            continue  # the engine problem is reported by the general preflight
        have = host_images(st) or {}
        copy = src.copy_from and src.copy_from != host.name
        for key in inv.image_keys(host):
            ref = getattr(inv.images, key)
            if src.source_of(key) == "present" and imgfacts.normalize(ref) not in have and not copy:
                fix = missing_image_fix(inv, states, host.name, ref)
                if settled.get(host.name):
                    warnings.append(f"{host.name} has no image {ref} any more, but nothing there is to be "
                                    f"(re)created: its running container keeps running, going on (before the "
                                    f"next change there: {fix})")
                    continue
                found.append(MissingImageError(f"{host.name} has no image {ref}", host=host.name,
                                               step="preflight images", hint=fix))
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
    return found, warnings


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


# --- what start-all and status read about images (sections of the host-state read) -------------


def state_parts(inv: Inventory, host: Host) -> list[tuple[str, str]]:
    """(section, command) pairs to add to `host.state.read` for this host's images."""
    parts = [("images", imgfacts.LIST_COMMAND)]
    if inv.image_keys_from(host, "build"):
        parts += [("git", gitfacts.VERSION_COMMAND),
                  ("git_remote", gitfacts.ls_remote_command(inv.sources.repository or ""))]
    return parts


def gone_images(st: HostState, services) -> dict[str, str]:
    """service -> image, for each of `services` whose container runs while its image (as configured)
    is no longer on the host (removed by hand, pruned); {} when the image list was not read."""
    have = host_images(st)
    if have is None:
        return {}
    return {c.service: c.image for c in st.containers if c.service in services and c.state == "running"
            and c.image and imgfacts.normalize(c.image) not in have and not c.image.startswith("sha256:")}


# --- status: what runs, from which commit ---------------------------------------------------------


def status_parts(inv: Inventory, host: Host, fetch: bool = False) -> list[tuple[str, str]]:
    """The section status adds on a host that builds: its branch's commit as last fetched (or
    fetched now, `status --fetch`)."""
    if not inv.image_keys_from(host, "build"):
        return []
    src = inv.sources
    checkout, branch = cmd.workdir_path(src.checkout), src.branch_for(host)
    command = (gitact.fetch_command(checkout, src.repository or "", branch) if fetch
               else gitfacts.rev_parse_command(checkout, branch))
    return [("git_head", command)]


def status_block(inv: Inventory, host: Host, st: HostState) -> dict | None:
    """status's `images` of one host: branch, its head (last fetch), the deployed commit, and
    whether the branch has commits that are not deployed."""
    dep = (st.deployed or {}).get("images") or {}
    if not inv.image_keys_from(host, "build") and not dep.get("commit"):
        return None
    code, out = st.extra.get("git_head", (1, ""))
    head = None
    if code == 0:
        try:
            head = gitfacts.parse_sha(out)
        except ParseError:
            head = None
    deployed = dep.get("commit")
    return {"branch": dep.get("branch") or inv.sources.branch_for(host), "head": head, "deployed_commit": deployed,
            "undeployed": bool(head and deployed and head != deployed), "history": [
                (h.get("commit") or "")[:12] for h in dep.get("history", [])]}


def image_commit(image: str) -> str | None:
    """The commit of a `name:<12-hex>` reference, else None."""
    tag = image.rpartition(":")[2] if ":" in image.rsplit("/", 1)[-1] else ""
    return tag if len(tag) == imgfacts.SHORT and all(c in "0123456789abcdef" for c in tag) else None
